"""The SNMP poller against hostile agents: malformed, oversized and looping responses.

A tiny UDP "agent" written here (a thread on its own loopback address) answers every
request in one hostile way. Each must give a ``device`` point and a counted
``snmp_error`` with a clear reason, end within the device's timeout budget, never raise,
and leave a healthy device polled in the same site (an snmpsim agent) untouched.
Waits are deadlines, not timing assertions.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.snmp import SnmpDeviceSource, build_sources
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.sim.servers import Snmpsim, free_port
from schoolnet.wire import Batch, Point, decode_batch, encode_batch
from tests.conftest import loopback_address

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "snmprec"
COMMUNITY = "public"
TIMEOUT_S = 0.5
RETRIES = 1


def _v2c() -> Any:
    from pysnmp.proto import api
    return api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


def _decode_request(data: bytes) -> tuple[Any, Any, Any]:
    from pyasn1.codec.ber import decoder
    p = _v2c()
    msg, _ = decoder.decode(data, asn1Spec=p.Message())
    pdu = p.apiMessage.get_pdu(msg)
    return p, msg, pdu


def _response(data: bytes, varbinds: Callable[[Any, list[tuple[Any, Any]]], list[tuple[Any, Any]]],
              request_id_delta: int = 0) -> bytes:
    """Encode a GetResponse to request ``data`` with ``varbinds(pdu, requested)``."""
    from pyasn1.codec.ber import encoder
    p, msg, pdu = _decode_request(data)
    rsp_msg = p.apiMessage.get_response(msg)
    rsp = p.apiMessage.get_pdu(rsp_msg)
    p.apiPDU.set_request_id(rsp, p.apiPDU.get_request_id(pdu) + request_id_delta)
    p.apiPDU.set_varbinds(rsp, varbinds(pdu, list(p.apiPDU.get_varbinds(pdu))))
    return bytes(encoder.encode(rsp_msg))


def _ints(pdu: Any, requested: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    p = _v2c()
    return [(oid, p.Integer(1)) for oid, _ in requested]


def _oversized(count: int) -> Callable[[Any, list[tuple[Any, Any]]], list[tuple[Any, Any]]]:
    """``count`` varbinds below the first requested OID."""
    def varbinds(pdu: Any, requested: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        p = _v2c()
        base = tuple(requested[0][0])
        return [(p.ObjectIdentifier((*base, i + 1)), p.OctetString(b"x" * 8))
                for i in range(count)]
    return varbinds


def _backwards(pdu: Any, requested: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """GET: plain answers; GETBULK: each column's "successor" is a smaller OID."""
    p = _v2c()
    if not isinstance(pdu, p.GetBulkRequestPDU):
        return _ints(pdu, requested)
    out = []
    for oid, _ in requested:
        t = tuple(oid)
        # The first hop enters the column, later ones step back (and so on: a loop).
        nxt = (*t, 5) if len(t) <= 10 else (*t[:-1], max(0, t[-1] - 1))
        out.append((p.ObjectIdentifier(nxt), p.Integer(7)))
    return out


_OVERSIZED_COUNT: dict[str, int] = {}


def _reply(mode: str, data: bytes) -> bytes | None:
    if mode == "garbage":
        return os.urandom(200)
    if mode == "truncated":
        return _response(data, _ints)[:-7]
    if mode == "wrong_request_id":
        return _response(data, _ints, request_id_delta=1)
    if mode == "oversized":
        # Thousands of varbinds, as many as fit in ~60 KB; the fitting count is found
        # once, so later answers cost one encoding (this thread shares the GIL with the
        # poller under test).
        count = _OVERSIZED_COUNT.get("n", 2600)
        while len(reply := _response(data, _oversized(count))) > 61_000:
            count -= 100
        _OVERSIZED_COUNT["n"] = count
        return reply
    if mode == "backwards":
        return _response(data, _backwards)
    raise AssertionError(mode)


class HostileAgent:
    """A UDP socket on a free loopback port that answers every request with ``mode``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.host = loopback_address()
        self.port = free_port(self.host, socket.SOCK_DGRAM)
        self.requests = 0
        self.sent_bytes = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._sock.bind((self.host, self.port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.requests += 1
            try:
                reply = _reply(self.mode, data)
            except Exception:  # a request we cannot parse: stay silent
                continue
            if reply is not None:
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    continue
                self.sent_bytes = max(self.sent_bytes, len(reply))

    def __enter__(self) -> HostileAgent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def device(self) -> Device:
        # The oversized answer does arrive, but it takes a Python thread a while to
        # encode on a loaded machine: give it a realistic timeout, so the test sees the
        # answer's error (bad_response) rather than a harness-made timeout.
        timeout = 3.0 if self.mode == "oversized" else TIMEOUT_S
        creds = SnmpCredentials(version="2c", community=Secret(COMMUNITY),
                                timeout_s=timeout, retries=RETRIES)
        return Device(name=f"hostile-{self.mode.replace('_', '-')}", host=self.host,
                      port=self.port, role="switch", snmp=creds)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    host = loopback_address()
    port = free_port(host, socket.SOCK_DGRAM)
    rec = (DATA / "rate-switch.snmprec").read_text()
    with Snmpsim(tmp_path_factory.mktemp("snmpsim"), {"rate-switch": rec}, [(host, port)]):
        creds = SnmpCredentials(version="2c", community=Secret("rate-switch"),
                                timeout_s=2.0, retries=1)
        yield Device(name="healthy-sw", host=host, port=port, role="switch", snmp=creds)


#: The error code each hostile agent must give, and whether the device counts as reachable.
EXPECTED = {"garbage": "bad_response", "truncated": "bad_response",
            "wrong_request_id": "bad_response", "oversized": "bad_response",
            "backwards": "oid_not_increasing"}
REACHABLE = {"garbage": 0, "truncated": 0, "wrong_request_id": 0, "oversized": 1,
             "backwards": 1}
MODES = list(EXPECTED)


@pytest.mark.parametrize("mode", MODES)
def test_hostile_agent_gives_a_counted_error_and_the_healthy_device_keeps_working(
        mode: str, healthy: Device) -> None:
    with HostileAgent(mode) as bad:
        site = Site(id="gy-hostile", name="Hostile", tenant="t", uplink=None,
                    agent=AgentSettings(snmp_concurrency=4), devices=(bad.device(), healthy))
        srcs = [s for s in build_sources(site) if isinstance(s, SnmpDeviceSource)]
        # The budget a poll may take: every request of both profiles timing out with
        # all retries, generously; a poll that takes longer is a hang.
        deadline = 60.0

        async def main() -> list[list[Point]]:
            try:
                results = []
                for _ in range(2):
                    results.append(await asyncio.wait_for(
                        asyncio.gather(*(s.collect(time.time_ns())
                                         for s in srcs)), deadline))
                return [[p for points in r for p in points] for r in zip(*results, strict=True)]
            finally:
                for s in srcs:
                    await s.close()

        hostile_points, healthy_points = asyncio.run(main())
        assert bad.requests > 0

    device = [p for p in hostile_points if p.measurement == "device"]
    errors = [p for p in hostile_points if p.measurement == "snmp_error"]
    assert len(device) == 2, hostile_points
    assert errors, f"{mode}: no snmp_error in {hostile_points}"
    assert {p.tags["error"] for p in errors} == {EXPECTED[mode]}
    assert all(p.fields["message"] for p in errors)
    # Garbage, a cut message or a forged request-id gets no usable answer: the poll
    # stops at the first request (reachable=0); a device whose answers decode keeps
    # what it got (reachable=1) and loses only the table that broke.
    assert [p.fields["reachable"] for p in device] == [REACHABLE[mode]] * 2
    # Counted: the second poll reports the second consecutive failure.
    assert {p.fields["consecutive_failures"] for p in errors} == {1, 2}
    # Everything the poller produced is valid on the wire.
    assert decode_batch(encode_batch(Batch("gy-hostile", 1, hostile_points + healthy_points)))

    # The healthy device of the same site: answered, interfaces, no errors.
    assert [p.fields["reachable"] for p in healthy_points if p.measurement == "device"] == [1, 1]
    assert [p for p in healthy_points if p.measurement == "interface"]
    assert not [p for p in healthy_points if p.measurement == "snmp_error"]
