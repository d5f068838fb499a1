"""An in-repo fake SNMP agent behind the :class:`~agent.snmp.client.SnmpClient` interface.

snmp_exporter's ``scraper/mock.go`` idea: unit tests feed OID→value maps (or the text
of a ``.snmprec`` recording) and get GET/GETBULK semantics — lexicographic successors,
``endOfMibView``, responses truncated at ``max_varbinds`` like snmpsim's 64 — without
sockets. snmpsim's ``delay`` variation is honoured as snmpsim does it: the value is
served, and a ``wait`` of 99,999 ms or more drops the whole response, so a request whose
answer would contain that OID (a GETBULK overshooting into it included) times out.
Failures are injected per host (``fail``: every request raises), per OID
subtree (``fail_subtree``: a request touching it raises), and requests can be held at a
gate (``hold``) to test that one stuck device does not stall the others.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.snmp.client import END_OF_MIB, Oid, SnmpError, Target, Value, VarBind, parse_oid

#: snmprec type tags that carry integers (Integer32, Counter32, Gauge32, TimeTicks,
#: Counter64, Unsigned32).
_INT_TAGS = {"2", "65", "66", "67", "70", "71"}


def parse_snmprec(text: str) -> dict[Oid, Value]:
    """Parse ``.snmprec`` text (``OID|TYPE|VALUE``) into an OID→value map.

    Variation modules are reduced to their static start: ``70:numeric|rate=…,initial=N``
    serves N, ``2:delay|value=N,wait=…`` serves N (see :func:`dropped_oids` for the
    wait). Lines that do not parse are skipped, as snmpsim does.
    """
    out: dict[Oid, Value] = {}
    for line in text.splitlines():
        parts = line.rstrip("\r").split("|", 2)
        if len(parts) != 3:
            continue
        try:
            oid = parse_oid(parts[0])
        except ValueError:
            continue
        tag, _, variation = parts[1].partition(":")
        raw = parts[2]
        hexed = tag.endswith("x")
        if variation == "numeric":
            opts = _options(raw)
            raw = str(int(float(opts.get("initial", opts.get("min", "0")))))
        elif variation == "delay":
            opts = _options(raw)
            if "hexvalue" in opts:
                raw, hexed = opts["hexvalue"], True
            elif "value" in opts:
                raw = opts["value"]
            else:
                continue
        elif variation:
            continue
        tag = tag.rstrip("x")
        value: Value
        try:
            if tag in _INT_TAGS:
                value = int(raw)
            elif tag == "4" or tag == "68":
                value = bytes.fromhex(raw) if hexed else raw.encode("latin-1")
            elif tag == "64":
                value = bytes.fromhex(raw) if hexed else ipaddress.IPv4Address(raw).packed
            elif tag == "6":
                value = parse_oid(raw)
            elif tag == "5":
                value = None
            else:
                continue
        except ValueError:
            continue
        out[oid] = value
    return out


def _options(raw: str) -> dict[str, str]:
    """A variation's ``key=value,key=value`` settings."""
    return dict(kv.split("=", 1) for kv in raw.split(",") if "=" in kv)


#: snmpsim's delay module drops the response instead of waiting this long (ms) or more.
DROP_WAIT_MS = 99_999


def dropped_oids(text: str) -> set[Oid]:
    """The OIDs of ``.snmprec`` text whose answers snmpsim drops: the ``delay``
    variation with ``wait`` above 99,999 ms (a subtree that never answers)."""
    out: set[Oid] = set()
    for line in text.splitlines():
        parts = line.rstrip("\r").split("|", 2)
        if len(parts) != 3 or parts[1].partition(":")[2] != "delay":
            continue
        try:
            wait = float(_options(parts[2]).get("wait", "500"))
            oid = parse_oid(parts[0])
        except ValueError:
            continue
        if wait > DROP_WAIT_MS:
            out.add(oid)
    return out


@dataclass
class FakeDevice:
    """One simulated agent: a sorted OID→value map; a request whose answer would hold
    an OID of ``dropped`` gets no answer (a timeout)."""

    data: dict[Oid, Value]
    dropped: set[Oid] = field(default_factory=set)
    _order: list[Oid] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._order = sorted(self.data)

    def successor(self, oid: Oid) -> VarBind:
        """The first OID after ``oid`` and its value, or ``(oid, END_OF_MIB)``."""
        i = bisect.bisect_right(self._order, oid)
        if i >= len(self._order):
            return oid, END_OF_MIB
        nxt = self._order[i]
        return nxt, self.data[nxt]


class FakeSnmpClient:
    """:class:`~agent.snmp.client.SnmpClient` over in-memory devices, keyed by host."""

    def __init__(
        self,
        devices: Mapping[str, Mapping[Oid, Value] | str] | None = None,
        *,
        max_varbinds: int = 64,
    ) -> None:
        self.devices: dict[str, FakeDevice] = {}
        self.max_varbinds = max_varbinds
        #: host → error every request to it raises (a dead or misconfigured device).
        self.fail: dict[str, SnmpError] = {}
        #: (host, subtree) → error a request touching that subtree raises.
        self.fail_subtree: dict[tuple[str, Oid], SnmpError] = {}
        #: host → event its requests wait for (a device that answers only when told).
        self.hold: dict[str, asyncio.Event] = {}
        #: Every request: (target, "get" | "bulk", requested OIDs).
        self.requests: list[tuple[Target, str, tuple[Oid, ...]]] = []
        self.closed = False
        for host, data in (devices or {}).items():
            self.set_device(host, data)

    def set_device(self, host: str, data: Mapping[Oid, Value] | str) -> None:
        """Serve ``data`` (an OID→value map or ``.snmprec`` text) at ``host``."""
        if isinstance(data, str):
            self.devices[host] = FakeDevice(parse_snmprec(data), dropped_oids(data))
        else:
            self.devices[host] = FakeDevice(dict(data))

    async def _enter(self, target: Target, kind: str, oids: Sequence[Oid]) -> FakeDevice:
        self.requests.append((target, kind, tuple(oids)))
        gate = self.hold.get(target.host)
        if gate is not None:
            await gate.wait()
        if target.host in self.fail:
            raise self.fail[target.host]
        for (host, subtree), err in self.fail_subtree.items():
            if host == target.host and any(o[: len(subtree)] == subtree for o in oids):
                raise err
        device = self.devices.get(target.host)
        if device is None:
            raise _timeout()
        return device

    async def get(self, target: Target, oids: Sequence[Oid]) -> list[VarBind]:
        """GET: the exact values (``None`` where absent)."""
        device = await self._enter(target, "get", oids)
        if device.dropped.intersection(oids):
            raise _timeout()
        return [(oid, device.data.get(oid)) for oid in oids]

    async def get_bulk(
        self, target: Target, oids: Sequence[Oid], max_repetitions: int
    ) -> list[VarBind]:
        """GETBULK: successors repetition by repetition, cut at ``max_varbinds``."""
        device = await self._enter(target, "bulk", oids)
        out: list[VarBind] = []
        cursors = list(oids)
        for _ in range(max(1, max_repetitions)):
            for i, cur in enumerate(cursors):
                if len(out) >= self.max_varbinds:
                    return self._unless_dropped(device, out)
                oid, value = device.successor(cur)
                out.append((oid, value))
                cursors[i] = oid
        return self._unless_dropped(device, out)

    @staticmethod
    def _unless_dropped(device: FakeDevice, out: list[VarBind]) -> list[VarBind]:
        """snmpsim computes the whole answer first; one dropped OID in it drops it all."""
        if device.dropped and any(oid in device.dropped for oid, _ in out):
            raise _timeout()
        return out

    async def close(self) -> None:
        """Mark closed (tests check that sources release their client)."""
        self.closed = True


def _timeout() -> SnmpError:
    return SnmpError("timeout", "No SNMP response received before timeout", answered=False)
