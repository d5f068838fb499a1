"""The SNMP poller against real snmpsim agents on loopback (pysnmp over UDP).

Recordings: ``tests/data/snmprec/`` (written for this project; counters that move at a
known rate through snmpsim's ``numeric`` variation), ``network/switch/cisco-c3560`` from
the snmpsim-data package, and the real dumps in ../shared/snmp-dumps where present.
Waits are conditions with deadlines; no assertion is about how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agent.snmp import SnmpDeviceSource, build_sources
from agent.snmp.fake import parse_snmprec
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.sim.servers import Snmpsim, free_port, read_recording, snmpsim_data_file
from schoolnet.wire import Batch, Point, decode_batch, encode_batch
from tests.conftest import loopback_address, shared_dump

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "snmprec"
#: Poll spacing of the rate test: long enough that request latency jitter on a busy
#: machine is small against it, short enough for a quick test.
RATE_POLL_S = 1.5
RATE_POLLS = 5


def recording(name: str) -> str:
    return (DATA / f"{name}.snmprec").read_text()


class Agent:
    """One snmpsim process on its own loopback address, serving some recordings."""

    def __init__(self, workdir: Path, recordings: dict[str, str | Path]) -> None:
        self.host = loopback_address()
        self.port = free_port(self.host, socket.SOCK_DGRAM)
        self.sim = Snmpsim(workdir, recordings, [(self.host, self.port)])

    def device(self, name: str, community: str, **kw: float | int) -> Device:
        creds = SnmpCredentials(version="2c", community=Secret(community),
                                timeout_s=float(kw.get("timeout_s", 2.0)),
                                retries=int(kw.get("retries", 1)))
        return Device(name=name, host=self.host, port=self.port, role="switch", snmp=creds)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """snmpsim with our rate recording and the c3560 from snmpsim-data.

    The c3560 goes in decompressed: snmpsim seeks in its data files, which on a
    ``.bz2`` costs a decompression per lookup (~1 s per request instead of ~10 ms).
    """
    a = Agent(tmp_path_factory.mktemp("snmpsim"), {
        "rate-switch": recording("rate-switch"),
        "c3560": read_recording(snmpsim_data_file("network/switch/cisco-c3560")),
    })
    with a.sim:
        yield a


def site(*devices: Device, concurrency: int = 16) -> Site:
    return Site(id="gy-itest", name="Itest", tenant="t", uplink=None,
                agent=AgentSettings(snmp_concurrency=concurrency), devices=devices)


def sources(*devices: Device) -> list[SnmpDeviceSource]:
    return [s for s in build_sources(site(*devices)) if isinstance(s, SnmpDeviceSource)]


def interfaces(points: Sequence[Point]) -> dict[str, Point]:
    return {p.tags["ifindex"]: p for p in points if p.measurement == "interface"}


def wire_valid(points: Sequence[Point]) -> bool:
    payload = encode_batch(Batch(site="gy-itest", seq=1, points=tuple(points)))
    return len(decode_batch(payload).points) == len(points)


def poll_once(device: Device) -> list[Point]:
    async def main() -> list[Point]:
        (src,) = sources(device)
        try:
            return await src.collect(time.time_ns())
        finally:
            await src.close()

    return asyncio.run(main())


def test_c3560_counters_and_names_equal_the_recording(agent: Agent) -> None:
    points = poll_once(agent.device("c3560", "c3560"))
    assert wire_valid(points)
    dev = points[0]
    assert dev.fields["reachable"] == 1 and dev.fields["sys_name"] == "DUMSYS-04"
    assert dev.fields["sys_object_id"] == "1.3.6.1.4.1.9.1.617"
    assert dev.fields["uptime_s"] == pytest.approx(4924464.81)
    assert not [p for p in points if p.measurement == "snmp_error"]
    served = parse_snmprec(read_recording(snmpsim_data_file("network/switch/cisco-c3560")))

    def column(oid: tuple[int, ...]) -> dict[int, object]:
        return {o[-1]: v for o, v in served.items() if o[:-1] == oid}

    hc_in = column((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6))
    in_32 = column((1, 3, 6, 1, 2, 1, 2, 2, 1, 10))
    names = column((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1))
    ifs = interfaces(points)
    assert len(ifs) == 57
    # HC counters where the device has them; the 32-bit column for the one without.
    assert len(hc_in) == 56
    assert {int(k): p.fields["in_octets"] for k, p in ifs.items()} == {
        i: hc_in.get(i, in_32.get(i)) for i in names}
    assert {int(k): p.tags["ifname"].encode() for k, p in ifs.items()} == names


def test_in_bps_follows_the_simulated_rate_across_a_32_bit_wrap(agent: Agent) -> None:
    """rate-switch: Gi0/1 grows 1,250,000 B/s (10 Mbit/s, 64-bit), Te0/2 1e9 B/s
    (8 Gbit/s) on a 32-bit counter that wraps every 4.3 s, inside the polling window."""

    async def main() -> list[list[Point]]:
        (src,) = sources(agent.device("rate-sw", "rate-switch"))
        polls = []
        start = time.monotonic()
        try:
            for n in range(RATE_POLLS):
                # Poll on a fixed schedule: the rate's time base is the poll spacing.
                await asyncio.sleep(max(0.0, start + n * RATE_POLL_S - time.monotonic()))
                polls.append(await src.collect(time.time_ns()))
        finally:
            await src.close()
        return polls

    polls = asyncio.run(main())
    gi = [interfaces(p)["1"].fields for p in polls]
    te = [interfaces(p)["2"].fields for p in polls]
    assert "in_bps" not in gi[0] and "in_bps" not in te[0]  # first poll: no rate
    assert all(type(f[k]) is float for f in gi[1:] + te[1:] for k in ("in_bps", "out_bps"))
    # The mean over the polls: one poll's rate carries the request latency jitter of
    # its two ends, the mean only that of the first and the last.
    assert statistics.fmean(float(f["in_bps"]) for f in gi[1:]) == pytest.approx(10e6, rel=0.02)
    assert statistics.fmean(float(f["out_bps"]) for f in gi[1:]) == pytest.approx(2e6, rel=0.02)
    assert statistics.fmean(float(f["in_bps"]) for f in te[1:]) == pytest.approx(8e9, rel=0.02)
    raw = [int(f["in_octets"]) for f in te]
    assert any(b < a for a, b in itertools.pairwise(raw)), "no wrap in the window"


def test_device_that_stops_answering_does_not_delay_the_others(
        agent: Agent, tmp_path: Path) -> None:
    victim = Agent(tmp_path / "victim", {"quiet-ap": recording("quiet-ap")})
    healthy_dev = agent.device("rate-sw", "rate-switch")
    victim_dev = victim.device("ap-flur", "quiet-ap", timeout_s=1.0, retries=1)

    async def main() -> None:
        healthy, dying = sources(healthy_dev, victim_dev)
        try:
            with victim.sim:
                before = await asyncio.gather(healthy.collect(time.time_ns()),
                                              dying.collect(time.time_ns()))
                assert [p[0].fields["reachable"] for p in before] == [1, 1]
                victim.sim.kill()  # our snmpsim process, by its PID
            t_healthy = asyncio.create_task(healthy.collect(time.time_ns()))
            t_dying = asyncio.create_task(dying.collect(time.time_ns()))
            done, _ = await asyncio.wait({t_healthy, t_dying},
                                         return_when=asyncio.FIRST_COMPLETED, timeout=30)
            # The healthy device's poll is over while the dead one still waits.
            assert done == {t_healthy}
            points = t_healthy.result()
            assert points[0].fields["reachable"] == 1 and len(interfaces(points)) == 3
            dead = await t_dying
            assert wire_valid(dead)
            assert set(dead[0].fields) == {"reachable", "poll_ms"}
            assert dead[0].fields["reachable"] == 0
            (err,) = [p for p in dead if p.measurement == "snmp_error"]
            assert err.tags["error"] == "timeout" and err.tags["device"] == "ap-flur"
        finally:
            await healthy.close()
            await dying.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("dump", "count", "first_names"),
    [
        pytest.param("routeros.snmprec", 12, ["wlan1", "wlan2", "WAN", "ether2"], id="routeros"),
        pytest.param("fortigate.snmprec", 35, ["ha", "mgmt", "port1", "port2"], id="fortigate"),
    ],
)
def test_real_device_dumps(tmp_path: Path, dump: str, count: int,
                           first_names: list[str]) -> None:
    path = shared_dump(dump)
    community = path.stem
    dumped = Agent(tmp_path, {community: path})
    with dumped.sim:
        points = poll_once(dumped.device(community, community))
    assert wire_valid(points)
    assert points[0].fields["reachable"] == 1
    ifs = sorted(interfaces(points).values(), key=lambda p: int(p.tags["ifindex"]))
    assert len(ifs) == count
    assert [p.tags["ifname"] for p in ifs[: len(first_names)]] == first_names
    assert all(isinstance(p.fields["in_octets"], int) for p in ifs)
