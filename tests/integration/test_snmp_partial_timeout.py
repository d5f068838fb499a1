"""A device that answers some tables and not another, against a real snmpsim (issue 5).

``slow-sensor-switch.snmprec`` (tests/data/snmprec/README.md) is a 2-port PoE switch
whose ENTITY-SENSOR table never answers: its first entPhySensorType row uses snmpsim's
``delay`` variation with a wait above 99,999 ms, which makes snmpsim drop the response
to every request that would carry it. The device is polled with four tables
(interfaces, sensors, poe_ports, poe_budget); the second one times out for real, over
UDP, and the poll must still yield the other three, with their recorded values, plus
one counted ``timeout`` error.

Why not a finite delay (say 3 s against a 0.5 s timeout): snmpsim answers requests one
at a time and the delay module sleeps in the responder, so every later request to the
same snmpsim (the next tables of this poll, and the retry of the late one) would wait
behind the sleep and time out as well — the test would measure snmpsim, not the poller.
A dropped answer is what a slow table looks like to a poller whose timeout is shorter
than the table's answer time.

The requests go through the real pysnmp client, wrapped only to record which
``retries`` each request was sent with. No assertion is about how long anything took.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agent.snmp import SnmpDeviceSource, build_sources
from agent.snmp.client import Oid, PysnmpClient, Target, VarBind
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.sim.servers import Snmpsim, free_port
from schoolnet.wire import Batch, Point, decode_batch, encode_batch
from tests.conftest import loopback_address

pytestmark = pytest.mark.integration

RECORDING = Path(__file__).resolve().parents[1] / "data" / "snmprec" / "slow-sensor-switch.snmprec"
COMMUNITY = "slow-sensor-switch"
#: Where each group's requests start (the first OID of each request is kept).
SUBTREES: dict[str, Oid] = {
    "system": (1, 3, 6, 1, 2, 1, 1),
    "interfaces": (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1),  # ifName, the first column
    "sensors": (1, 3, 6, 1, 2, 1, 99, 1, 1, 1),  # entPhySensorTable
    "poe": (1, 3, 6, 1, 2, 1, 105),  # pethPsePortTable, pethMainPseTable
}


class RecordingClient:
    """The real pysnmp client; every request's ``retries`` and first OID are kept."""

    def __init__(self) -> None:
        self.inner = PysnmpClient()
        self.requests: list[tuple[int, Oid]] = []

    async def get(self, target: Target, oids: Sequence[Oid]) -> list[VarBind]:
        """GET through pysnmp (see :class:`~agent.snmp.client.SnmpClient`)."""
        self.requests.append((target.retries, tuple(oids[0])))
        return await self.inner.get(target, oids)

    async def get_bulk(self, target: Target, oids: Sequence[Oid],
                       max_repetitions: int) -> list[VarBind]:
        """GETBULK through pysnmp (see :class:`~agent.snmp.client.SnmpClient`)."""
        self.requests.append((target.retries, tuple(oids[0])))
        return await self.inner.get_bulk(target, oids, max_repetitions)

    async def close(self) -> None:
        """Close the pysnmp engines."""
        await self.inner.close()

    def retries_for(self, subtree: Oid) -> set[int]:
        """The ``retries`` of the requests that asked below ``subtree``."""
        return {r for r, oid in self.requests if oid[: len(subtree)] == subtree}


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    host = loopback_address()
    port = free_port(host, socket.SOCK_DGRAM)
    with Snmpsim(tmp_path_factory.mktemp("snmpsim"), {COMMUNITY: RECORDING}, [(host, port)]):
        creds = SnmpCredentials(version="2c", community=Secret(COMMUNITY),
                                timeout_s=0.5, retries=1)
        yield Device(name="sensor-sw", host=host, port=port, role="switch", snmp=creds,
                     profiles=("system", "if_mib", "entity_sensor", "poe"))


def measurement(points: Sequence[Point], name: str) -> list[Point]:
    return [p for p in points if p.measurement == name]


def test_a_table_that_times_out_costs_that_table_only(switch: Device) -> None:
    client = RecordingClient()
    site = Site(id="gy-slow", name="Slow", tenant="t", uplink=None,
                agent=AgentSettings(snmp_concurrency=1), devices=(switch,))
    (src,) = [s for s in build_sources(site, client=client) if isinstance(s, SnmpDeviceSource)]
    assert [t.name for t in src.tables] == ["interfaces", "sensors", "poe_ports", "poe_budget"]

    async def main() -> list[list[Point]]:
        try:
            polls = []
            for _ in range(2):
                client.requests.clear()
                polls.append(await src.collect(time.time_ns()))
                retries.append({name: client.retries_for(oid) for name, oid in SUBTREES.items()})
            return polls
        finally:
            await src.close()

    retries: list[dict[str, set[int]]] = []
    polls = asyncio.run(main())
    for n, points in enumerate(polls, start=1):
        assert decode_batch(encode_batch(Batch("gy-slow", n, tuple(points))))
        dev = points[0]
        assert dev.measurement == "device" and dev.fields["reachable"] == 1
        assert dev.fields["sys_name"] == "sensor-sw-1"
        assert dev.fields["sys_location"] == "Keller, Technikraum"
        assert dev.fields["uptime_s"] == pytest.approx(42424.0)
        # Table 1 (before the slow one): the recorded values.
        ifs = {p.tags["ifname"]: p.fields for p in measurement(points, "interface")}
        assert set(ifs) == {"1/1", "1/2"}
        assert (ifs["1/1"]["in_octets"], ifs["1/1"]["out_octets"]) == (9876543210, 1234567890)
        assert (ifs["1/1"]["in_discards"], ifs["1/1"]["in_errors"]) == (3, 2)
        assert ifs["1/1"]["alias"] == "Uplink Verwaltung" and ifs["1/2"]["oper_status"] == 2
        # Tables 3 and 4 (after it): asked and answered.
        poe = measurement(points, "poe")
        ports = {p.tags["ifname"]: p.fields for p in poe if "ifindex" in p.tags}
        (budget,) = [p.fields for p in poe if "ifindex" not in p.tags]
        assert ports["1/1"]["detection"] == "delivering_power"
        assert (ports["1/2"]["power_class"], ports["1/2"]["mps_absent"],
                ports["1/2"]["overloads"]) == ("class4", 2, 1)
        assert budget == {"power_w": 370.0, "status": "on", "consumption_w": 21.0,
                          "threshold_pct": 80}
        # Table 2: no rows, one counted timeout.
        assert not measurement(points, "sensor")
        (err,) = measurement(points, "snmp_error")
        assert (err.tags["table"], err.tags["error"]) == ("sensors", "timeout")
        assert err.fields["consecutive_failures"] == n
    # Poll 1 asked the sensor table with its retries; poll 2, knowing it silent, with
    # none (one timeout instead of two); the tables that answer kept theirs.
    assert retries == [{"system": {1}, "interfaces": {1}, "sensors": {1}, "poe": {1}},
                       {"system": {1}, "interfaces": {1}, "sensors": {0}, "poe": {1}}]
