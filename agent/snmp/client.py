"""The narrow SNMP client interface, its error type, and the pysnmp implementation.

Everything above this module (walks, profiles, points, rates) talks to a device through
:class:`SnmpClient`: two calls, ``get`` and ``get_bulk``, with OIDs as tuples of ints and
values as plain Python (``int``, ``bytes``, OID tuples), so the poller never touches a
pysnmp type and an in-repo fake (agent/snmp/fake.py) can stand in for a device in unit
tests — snmp_exporter's ``scraper`` / ``mock.go`` split.

:class:`PysnmpClient` is the real one: pysnmp 7's v3arch asyncio hlapi with
``lookupMib=False`` (no MIB resolution on the hot path) and one shared ``SnmpEngine``.
The only exception to "one engine" is SNMPv3: pysnmp keys USM users by user name, so two
devices with the *same* user name but *different* keys in one engine would overwrite
each other's keys while requests are in flight. Each further distinct credential set of
a user name therefore gets its own engine ("slot"); a site where all devices share
their v3 credentials (the usual case) still runs on exactly one engine.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from schoolnet.inventory import SnmpCredentials

Oid = tuple[int, ...]


class EndOfMib:
    """The ``endOfMibView`` exception value: nothing follows in the agent's MIB view."""

    _instance: EndOfMib | None = None

    def __new__(cls) -> EndOfMib:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END_OF_MIB"


END_OF_MIB: Final = EndOfMib()

#: A varbind value: integers (all integer/counter/gauge/timeticks types), octet strings
#: (``bytes``: strings, IpAddress, Opaque, Bits), OIDs (tuples), ``None`` for
#: noSuchObject/noSuchInstance/Null, and :data:`END_OF_MIB`.
Value = int | bytes | Oid | EndOfMib | None
VarBind = tuple[Oid, Value]


def parse_oid(text: str) -> Oid:
    """``"1.3.6.1"`` → ``(1, 3, 6, 1)``; raises ValueError on anything else."""
    parts = text.strip().lstrip(".").split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a numeric OID: {text!r}")
    return tuple(int(p) for p in parts)


def format_oid(oid: Oid) -> str:
    """``(1, 3, 6, 1)`` → ``"1.3.6.1"``."""
    return ".".join(map(str, oid))


class SnmpError(Exception):
    """An SNMP request that failed.

    ``code`` is a short stable identifier (``timeout``, ``auth_failed``, ``too_big`` …)
    that becomes the ``error`` tag of an ``snmp_error`` point; ``message`` is for humans.
    ``answered`` tells whether the device responded to the failed request at all: False
    for timeouts and security failures, True for PDU errors such as ``tooBig`` or
    ``genErr``; the poller decides from it how the rest of the poll goes (module doc of
    agent/snmp/poller.py). ``index`` is the 1-based position of the offending varbind
    for PDU errors (0 when unknown). ``answered_before`` counts the requests of the same
    operation (a table walk, a GET asked again) that the device did answer before this
    one failed: a walk cut off by a timeout still proves the device was there.
    """

    def __init__(self, code: str, message: str, *, answered: bool, index: int = 0,
                 answered_before: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.answered = answered
        self.index = index
        self.answered_before = answered_before


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to send one device's requests."""

    host: str
    port: int
    credentials: SnmpCredentials
    timeout_s: float
    retries: int


class SnmpClient(Protocol):
    """The two SNMP operations the poller needs. Both raise :class:`SnmpError`."""

    async def get(self, target: Target, oids: Sequence[Oid]) -> list[VarBind]:
        """GET ``oids``; one varbind per OID, in order (``None`` where there is no value)."""
        ...

    async def get_bulk(
        self, target: Target, oids: Sequence[Oid], max_repetitions: int
    ) -> list[VarBind]:
        """One GETBULK (non-repeaters 0): the successors of every OID, repetition by
        repetition in request order, possibly truncated by the agent."""
        ...

    async def close(self) -> None:
        """Release sockets and timers; the client is not used afterwards."""
        ...


# ---------------------------------------------------------------------------------------
# Error codes: short, stable, low-cardinality (they become a tag).

_INDICATION_CODES: Final = {
    "RequestTimedOut": "timeout",
    "WrongDigest": "auth_failed",
    "AuthenticationFailure": "auth_failed",
    "AuthenticationError": "auth_failed",
    "UnknownUserName": "unknown_user",
    "DecryptionError": "decryption_failed",
    "EncryptionError": "encryption_unavailable",
    "UnknownEngineID": "unknown_engine_id",
    "NotInTimeWindow": "not_in_time_window",
    "UnsupportedSecurityLevel": "unsupported_security_level",
    "UnknownSecurityName": "unknown_security_name",
    "UnknownCommunityName": "unknown_community",
    "OidNotIncreasing": "oid_not_increasing",
}

_CAMEL_RE: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    """``tooBig`` / ``RequestTimedOut`` → ``too_big`` / ``request_timed_out``."""
    return _CAMEL_RE.sub("_", name).lower()


def indication_code(indication: object) -> str:
    """The error code for a pysnmp ``errorIndication`` (its class, not its text)."""
    name = type(indication).__name__
    return _INDICATION_CODES.get(name) or snake_case(name)


# ---------------------------------------------------------------------------------------
# pysnmp implementation

_AUTH: Final = {
    "none": "USM_AUTH_NONE",
    "md5": "USM_AUTH_HMAC96_MD5",
    "sha": "USM_AUTH_HMAC96_SHA",
    "sha224": "USM_AUTH_HMAC128_SHA224",
    "sha256": "USM_AUTH_HMAC192_SHA256",
    "sha384": "USM_AUTH_HMAC256_SHA384",
    "sha512": "USM_AUTH_HMAC384_SHA512",
}
# AES-192/256 use the Blumenthal key extension, as net-snmp and snmp_exporter do
# ("AES192"/"AES256"); Cisco's Reeder variant would need its own inventory name.
_PRIV: Final = {
    "none": "USM_PRIV_NONE",
    "des": "USM_PRIV_CBC56_DES",
    "3des": "USM_PRIV_CBC168_3DES",
    "aes": "USM_PRIV_CFB128_AES",
    "aes128": "USM_PRIV_CFB128_AES",
    "aes192": "USM_PRIV_CFB192_AES_BLUMENTHAL",
    "aes256": "USM_PRIV_CFB256_AES_BLUMENTHAL",
}


def _v3_key(creds: SnmpCredentials) -> tuple[str, ...]:
    """Everything that makes a USM user's keys; two devices with equal keys share a slot."""
    auth = creds.auth_key.reveal() if creds.auth_key else ""
    priv = creds.priv_key.reveal() if creds.priv_key else ""
    return (creds.user, creds.auth_protocol, auth, creds.priv_protocol, priv)


class PysnmpClient:
    """:class:`SnmpClient` over pysnmp 7 (v3arch asyncio hlapi, ``lookupMib=False``).

    Engines are created lazily inside the running event loop. Per device it caches the
    auth object and the resolved transport target; a timeout drops the cached target so
    a changed DNS name is resolved again on the next poll.
    """

    def __init__(self) -> None:
        from pyasn1.type import univ
        from pysnmp.hlapi.v3arch import asyncio as hlapi
        from pysnmp.proto import rfc1902, rfc1905

        self._hl = hlapi
        self._engines: dict[int, Any] = {}
        self._slots: dict[str, list[tuple[str, ...]]] = {}
        self._auth: dict[tuple[Any, ...], tuple[int, Any, Any]] = {}
        self._transports: dict[tuple[Any, ...], Any] = {}
        #: Unusable datagrams per sender address (see :meth:`_count_datagrams`).
        self._unusable: dict[tuple[Any, ...], int] = {}
        # Type dispatch for response values: exact classes first (fast), then isinstance.
        ints = (rfc1902.Integer32, rfc1902.Integer, rfc1902.Counter32, rfc1902.Gauge32,
                rfc1902.Unsigned32, rfc1902.TimeTicks, rfc1902.Counter64)
        octets = (rfc1902.OctetString, rfc1902.IpAddress, rfc1902.Opaque, rfc1902.Bits)
        self._int_types = frozenset(ints)
        self._octet_types = frozenset(octets)
        # OID values arrive as pyasn1's own class, not pysnmp's subclass.
        self._oid_types = frozenset((univ.ObjectIdentifier, rfc1902.ObjectIdentifier,
                                     rfc1902.ObjectName))
        self._oid_base = univ.ObjectIdentifier
        self._end_type = rfc1905.EndOfMibView
        self._int_base = univ.Integer
        self._octet_base = univ.OctetString

    def _engine(self, slot: int) -> Any:
        engine = self._engines.get(slot)
        if engine is None:
            engine = self._engines[slot] = self._hl.SnmpEngine()
            self._count_datagrams(engine)
        return engine

    def _count_datagrams(self, engine: Any) -> None:
        """Count the unusable datagrams per sender, and never let a malformed one raise.

        pysnmp drops what it cannot decode or match (garbage, truncated BER, a wrong
        request-id or community) without a word, and some garbage even escapes its
        decoder as an exception in the event loop. A datagram is usable when its message
        processing model accepted it (a matched response) or asked for a retry with it
        (an SNMPv3 discovery report); the count of the others lets a timeout tell "the
        device sent nothing" from "the device answered with something unusable".
        """
        from pysnmp.proto import error as snmp_error

        unusable = self._unusable
        usable = [False]
        for handler in engine.message_processing_subsystems.values():
            prepare = handler.prepare_data_elements

            def checked(*args: Any, _prepare: Any = prepare) -> Any:
                try:
                    result = _prepare(*args)
                except snmp_error.StatusInformation as info:
                    usable[0] = "sendPduHandle" in info
                    raise
                usable[0] = True
                return result

            handler.prepare_data_elements = checked
        dispatcher = engine.message_dispatcher
        receive = dispatcher.receive_message

        def counted(snmp_engine: Any, domain: Any, address: Any, whole_msg: bytes) -> Any:
            usable[0] = False
            try:
                return receive(snmp_engine, domain, address, whole_msg)
            except Exception:  # a decoder bug on hostile bytes; the request times out
                return b""
            finally:
                if not usable[0]:
                    peer = tuple(address)[:2]
                    if len(unusable) >= 4096 and peer not in unusable:  # one per device
                        unusable.clear()
                    unusable[peer] = unusable.get(peer, 0) + 1

        dispatcher.receive_message = counted

    def _slot_of(self, creds: SnmpCredentials) -> int:
        if creds.version != "3":
            return 0
        sets = self._slots.setdefault(creds.user, [])
        key = _v3_key(creds)
        if key not in sets:
            sets.append(key)
        return sets.index(key)

    def _auth_for(self, target: Target) -> tuple[int, Any, Any]:
        creds = target.credentials
        key = (creds.version, creds.community, _v3_key(creds), creds.context)
        cached = self._auth.get(key)
        if cached is not None:
            return cached
        hl = self._hl
        if creds.version == "3":
            auth = hl.UsmUserData(
                creds.user,
                authKey=creds.auth_key.reveal() if creds.auth_key else None,
                privKey=creds.priv_key.reveal() if creds.priv_key else None,
                authProtocol=getattr(hl, _AUTH[creds.auth_protocol]),
                privProtocol=getattr(hl, _PRIV[creds.priv_protocol]),
            )
            context = hl.ContextData(contextName=creds.context.encode())
        else:
            community = creds.community.reveal() if creds.community else ""
            auth = hl.CommunityData(community, mpModel=1)
            context = hl.ContextData()
        cached = (self._slot_of(creds), auth, context)
        self._auth[key] = cached
        return cached

    async def _transport(self, target: Target) -> Any:
        key = (target.host, target.port, target.timeout_s, target.retries)
        transport = self._transports.get(key)
        if transport is None:
            try:
                is_v6 = ipaddress.ip_address(target.host).version == 6
            except ValueError:
                is_v6 = False
            cls = self._hl.Udp6TransportTarget if is_v6 else self._hl.UdpTransportTarget
            try:
                transport = await cls.create((target.host, target.port),
                                             timeout=target.timeout_s, retries=target.retries)
            except Exception as exc:  # pysnmp wraps resolver errors in PySnmpError
                raise SnmpError("bad_address", str(exc)[:200], answered=False) from None
            self._transports[key] = transport
        return transport

    def _value(self, val: Any) -> Value:
        cls = type(val)
        if cls in self._int_types:
            return int(val)
        if cls in self._octet_types:
            return bytes(val.asOctets())
        if cls in self._oid_types:
            return tuple(val.asTuple())
        if cls is self._end_type:
            return END_OF_MIB
        # Subclasses (rare: vendor-specific wrappers) and the Null family.
        if isinstance(val, self._int_base):
            return int(val)
        if isinstance(val, self._octet_base):
            return bytes(val.asOctets())
        if isinstance(val, self._oid_base):
            return tuple(val.asTuple())
        return None

    async def _call(
        self, target: Target, oids: Sequence[Oid], max_repetitions: int
    ) -> list[VarBind]:
        hl = self._hl
        slot, auth, context = self._auth_for(target)
        engine = self._engine(slot)
        transport = await self._transport(target)
        req = [hl.ObjectType(hl.ObjectIdentity(oid)) for oid in oids]
        peer = tuple(getattr(transport, "transport_address", ()))[:2]
        unusable_before = self._unusable.get(peer, 0)
        try:
            if max_repetitions:
                result = await hl.bulk_cmd(engine, auth, transport, context, 0,
                                           max_repetitions, *req, lookupMib=False)
            else:
                result = await hl.get_cmd(engine, auth, transport, context, *req,
                                          lookupMib=False)
        except SnmpError:
            raise
        except Exception as exc:  # PySnmpError and friends: a local problem, not the device
            raise SnmpError("client_error", str(exc)[:200], answered=False) from None
        indication, status, index, varbinds = result
        if indication:
            code = indication_code(indication)
            if code == "timeout":
                self._transports.pop((target.host, target.port, target.timeout_s,
                                      target.retries), None)
                unusable = self._unusable.get(peer, 0) - unusable_before
                if unusable > 0:
                    # Still answered=False: asking the next table would only wait again.
                    raise SnmpError("bad_response", f"no usable answer: {unusable} "
                                    "datagram(s) from the device were malformed or did not "
                                    "match the request (request-id, community, version)",
                                    answered=False)
            raise SnmpError(code, str(indication), answered=False)
        if status:
            name = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
            raise SnmpError(snake_case(str(name)), f"{name} (varbind {int(index)})",
                            answered=True, index=int(index))
        if len(varbinds) > len(oids) * max(1, max_repetitions) or (
                not max_repetitions and [tuple(o.asTuple()) for o, _ in varbinds] != list(oids)):
            # RFC 3416: a GET answer has exactly the requested varbinds, a GETBULK at
            # most N x max-repetitions. Anything else (an oversized, padded or forged
            # answer) is not trusted at all.
            raise SnmpError("bad_response", f"{len(varbinds)} varbind(s) in the answer to "
                            f"{len(oids)} OID(s) (max-repetitions {max_repetitions}) do not "
                            "match the request", answered=True)
        value = self._value
        return [(tuple(oid.asTuple()), value(val)) for oid, val in varbinds]

    async def get(self, target: Target, oids: Sequence[Oid]) -> list[VarBind]:
        """GET ``oids`` (see :class:`SnmpClient`)."""
        return await self._call(target, oids, 0)

    async def get_bulk(
        self, target: Target, oids: Sequence[Oid], max_repetitions: int
    ) -> list[VarBind]:
        """One GETBULK (see :class:`SnmpClient`)."""
        return await self._call(target, oids, max(1, max_repetitions))

    async def close(self) -> None:
        """Close every engine's dispatcher (sockets and timer)."""
        engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.close_dispatcher()
        self._transports.clear()
        self._auth.clear()
