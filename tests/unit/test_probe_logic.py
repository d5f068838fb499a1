"""Pure parts of the probes: train statistics, iperf3 JSON, caps, utilization, wiring."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from agent.probes import build_sources
from agent.probes.icmp import (
    CAP_NET_RAW_HINT,
    EchoSocket,
    RawSocketPermissionError,
    TrainResult,
    percentile,
    train_fields,
)
from agent.probes.throughput import iperf3_command, parse_iperf3, plan_test
from agent.probes.utilization import UplinkUtilization, uplink_point
from schoolnet.inventory import Uplink, load_site
from schoolnet.probeconfig import ThroughputSettings
from schoolnet.wire import Point, check_point

NOW = 1_800_000_000 * 10**9
UPLINK = Uplink(kind="dsl", down_mbit=50.0, up_mbit=10.0, device="router", interface="WAN")


@pytest.mark.parametrize(("rtts", "expect"), [
    ([10.0, 12.0, 11.0, 15.0], {"sent": 4, "received": 4, "loss_pct": 0.0, "rtt_min_ms": 10.0,
                                "rtt_avg_ms": 12.0, "rtt_max_ms": 15.0, "rtt_p95_ms": 15.0,
                                "jitter_ms": (2 + 1 + 4) / 3}),
    # Lost echoes count for loss; jitter runs over the answered ones in order.
    ([10.0, None, 14.0, None], {"sent": 4, "received": 2, "loss_pct": 50.0, "rtt_avg_ms": 12.0,
                                "jitter_ms": 4.0}),
    ([5.0], {"sent": 1, "received": 1, "loss_pct": 0.0, "jitter_ms": 0.0}),
    # Nothing answered: loss 100 and no RTT fields at all (not zeros).
    ([None, None, None], {"sent": 3, "received": 0, "loss_pct": 100.0}),
])
def test_train_fields(rtts: list[float | None], expect: dict[str, float]) -> None:
    fields = train_fields(TrainResult(rtts_ms=rtts))
    for k, v in expect.items():
        assert fields[k] == pytest.approx(v), k
    if not any(r is not None for r in rtts):
        assert not any(k.startswith(("rtt_", "jitter")) for k in fields)
    check_point(Point("probe_icmp", {"target": "noc", "target_kind": "noc"}, fields, NOW),
                now_ns=NOW)


def test_p95_is_the_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values[:20], 95) == 19.0
    assert percentile([7.0], 95) == 7.0


def test_unreachable_and_send_errors_are_fields() -> None:
    fields = train_fields(TrainResult(rtts_ms=[None, None], unreachable=2,
                                      error="ENETUNREACH: Network is unreachable"))
    assert fields["unreachable"] == 2 and fields["loss_pct"] == 100.0
    assert fields["error"] == "ENETUNREACH: Network is unreachable"


IPERF_OK = {"start": {}, "intervals": [], "end": {
    "sum_sent": {"bytes": 18_000_000, "bits_per_second": 48e6, "retransmits": 3},
    "sum_received": {"bytes": 17_937_824, "seconds": 3.0, "bits_per_second": 47.83e6}}}


@pytest.mark.parametrize(("text", "ok", "bps", "error", "retryable"), [
    (json.dumps(IPERF_OK), True, 47.83e6, "", False),
    (json.dumps({"start": {}, "intervals": [], "end": {},
                 "error": "the server is busy running a test. try again later"}),
     False, None, "the server is busy", True),
    (json.dumps({"end": {}, "error": "unable to connect to server: Connection refused"}),
     False, None, "unable to connect", True),
    ("iperf3: error - unable to resolve host", False, None, "printed no JSON", True),
    (json.dumps({"end": {"sum_received": {"bytes": 0}}}), False, None, "no received data", True),
])
def test_parse_iperf3(text: str, ok: bool, bps: float | None, error: str,
                      retryable: bool) -> None:
    r = parse_iperf3(text)
    assert r.ok is ok and r.bits_per_second == bps and error in r.error
    assert r.retryable is retryable
    if ok:
        assert r.retransmits == 3 and r.bytes == 17_937_824


def test_plan_keeps_duration_and_bytes_under_their_caps() -> None:
    fibre = plan_test(ThroughputSettings(server="x", duration_s=10), "down", 400.0)
    assert (fibre.duration_s, fibre.rate_cap_bps, fibre.capped) == (10, 600_000_000, False)
    assert fibre.max_bytes == 825_000_000  # 600 Mbit/s x 11 s fits in 1000 MB (default)...
    capped = plan_test(ThroughputSettings(server="x", duration_s=10, max_mbyte=250), "down",
                       400.0)
    # ... but not in 250 MB: the test gets shorter (paced at 1.5 x contract).
    assert capped.capped and capped.duration_s == 2 and capped.max_bytes <= 250e6
    lte = plan_test(ThroughputSettings(server="x", duration_s=10, max_mbyte=5), "up", 50.0)
    assert lte.capped and lte.duration_s == 1 and lte.max_bytes <= 5e6
    cmd = iperf3_command("198.51.100.20", 5201, capped, 5.0)
    assert cmd[:8] == ["iperf3", "-c", "198.51.100.20", "-p", "5201", "-J", "-t", "2"]
    assert "-R" in cmd and "600000000" in cmd and "--connect-timeout" in cmd
    assert "-R" not in iperf3_command("h", 5201, lte, 5.0)


def _wan(fields: dict[str, float | int | str], ifname: str = "WAN") -> Point:
    return Point("interface", {"device": "router", "role": "router", "ifindex": "2",
                               "ifname": ifname}, fields, NOW)


def test_uplink_point_compares_the_wan_rates_with_the_contract() -> None:
    p = uplink_point([_wan({"in_octets": 1, "in_bps": 45e6, "out_bps": 2.5e6})], UPLINK)
    assert p is not None and p.measurement == "uplink" and p.time_ns == NOW
    assert dict(p.tags) == {"device": "router", "ifname": "WAN", "kind": "dsl"}
    assert p.fields["util_in_pct"] == pytest.approx(90.0)
    assert p.fields["util_out_pct"] == pytest.approx(25.0)
    assert p.fields["contract_down_mbps"] == 50.0 and p.fields["in_mbps"] == 45.0
    check_point(p, now_ns=NOW)


@pytest.mark.parametrize("points", [
    [_wan({"in_octets": 1, "out_octets": 2})],           # first poll: no rates yet
    [_wan({"in_bps": 1e6, "out_bps": 1e6}, "LAN")],      # another port
    [Point("device", {"device": "router", "role": "router"}, {"reachable": 0}, NOW)],
])
def test_no_uplink_point_without_rates_of_the_wan_port(points: list[Point]) -> None:
    assert uplink_point(points, UPLINK) is None


class FakeSnmp:
    """Stands in for the SNMP source of one device."""

    def __init__(self, name: str, points: list[Point]) -> None:
        self.name = name
        self.points = points
        self.closed = False
        self.stats = "poll stats"

    async def collect(self, now_ns: int) -> list[Point]:
        return list(self.points)

    async def close(self) -> None:
        self.closed = True


def test_the_uplink_device_source_is_wrapped_and_others_are_not(tmp_path: Path) -> None:
    site_file = _site(tmp_path, probes="")
    site = load_site(site_file)
    router = FakeSnmp("snmp:router", [_wan({"in_bps": 5e6, "out_bps": 1e6})])
    switch = FakeSnmp("snmp:sw1", [_wan({"in_bps": 5e6}, "Gi0/1")])
    built = build_sources(site, [router, switch])
    assert built[1] is switch and isinstance(built[0], UplinkUtilization)
    assert built[0].name == "snmp:router" and built[0].stats == "poll stats"
    points = asyncio.run(built[0].collect(NOW))
    assert [p.measurement for p in points] == ["interface", "uplink"]
    asyncio.run(built[0].close())  # type: ignore[attr-defined]
    assert router.closed
    assert site.probes is None and len(built) == 2  # no probes: only the SNMP sources


def _site(tmp_path: Path, probes: str) -> Path:
    d = tmp_path / "sc" / "t"
    d.mkdir(parents=True)
    (d / "tenant.yaml").write_text("tenant: t\nname: T\n")
    (d / "s.yaml").write_text(
        "site: s\nname: S\n"
        "uplink: {kind: dsl, down_mbit: 50, up_mbit: 10, device: router, interface: WAN}\n"
        "agent: {spool_dir: SPOOL, broker: {host: 127.0.0.1, port: 1}}\n"
        "devices:\n  - {name: router, host: 127.0.0.1, role: router, "
        "snmp: {version: 2c, community: c}}\n" + probes)
    text = (d / "s.yaml").read_text().replace("SPOOL", str(tmp_path / "spool"))
    (d / "s.yaml").write_text(text)
    return d / "s.yaml"


PROBES = """\
probes:
  interval_s: 30
  targets: [{name: noc, host: 127.0.0.1, kind: noc}]
  dns: {resolvers: [127.0.0.1], names: [example.org]}
  throughput: {server: 127.0.0.1, duration_s: 3}
"""


def test_build_sources_makes_one_source_per_probe_kind(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path, PROBES))
    built = build_sources(site)
    try:
        assert [s.name for s in built] == ["probe:icmp", "probe:dns", "probe:throughput"]
        assert [getattr(s, "interval_s", None) for s in built] == [30.0, 30.0, 60.0]
        # A throughput gather may take both directions' hard limits.
        assert getattr(built[2], "timeout_s", 0) >= 2 * (3 + 1 + 5)
    finally:
        for s in built:
            close = getattr(s, "close", None)
            if close is not None:
                asyncio.run(close())


def test_without_cap_net_raw_the_error_names_the_capability(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    real = socket.socket

    def no_raw(family: int = -1, kind: int = -1, proto: int = -1, *a: object) -> socket.socket:
        if kind == socket.SOCK_RAW:
            raise PermissionError(1, "Operation not permitted")
        return real(family, kind, proto, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", no_raw)
    with pytest.raises(RawSocketPermissionError, match="CAP_NET_RAW"):
        EchoSocket()
    assert "AmbientCapabilities=CAP_NET_RAW" in CAP_NET_RAW_HINT

    from agent.app import EXIT_STARTUP, run
    from agent.probes.manual import run as probe_run

    site_file = _site(tmp_path, PROBES)
    monkeypatch.setattr("agent.snmp.build_sources", lambda site: [])
    assert run(site_file, once=True) == EXIT_STARTUP
    assert probe_run(str(site_file)) == EXIT_STARTUP
    err = capsys.readouterr().err
    assert "agent: cannot start" in err and "agent probe: cannot start" in err
    assert err.count("AmbientCapabilities=CAP_NET_RAW") == 2


def test_a_manual_throughput_test_in_lessons_needs_force(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from agent.probes import schedule
    from agent.probes.manual import EXIT_LESSONS, EXIT_OK
    from agent.probes.manual import run as probe_run
    from schoolnet.sim.servers import free_port

    # Nothing listens on this loopback port: the forced test fails fast, as a point.
    probes = PROBES.replace("throughput: {server: 127.0.0.1,",
                            f"throughput: {{server: 127.0.0.1, port: {free_port()},")
    site_file = str(_site(tmp_path, probes))
    monkeypatch.setattr(schedule.ThroughputSchedule, "in_lessons", lambda self, now: True)
    assert probe_run(site_file, throughput=True) == EXIT_LESSONS
    assert "lesson time" in capsys.readouterr().err
    assert probe_run(site_file, throughput=True, force=True, as_json=True) == EXIT_OK
    (line,) = capsys.readouterr().out.splitlines()
    point = json.loads(line)
    assert point["measurement"] == "probe_throughput" and point["fields"]["ok"] == 0
    assert point["fields"]["scheduled"] == 0 and "ratio_to_contract" not in point["fields"]
