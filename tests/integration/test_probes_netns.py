"""Acceptance of the uplink probes on a shaped link between two network namespaces.

A "site" namespace and a "NOC" namespace joined by veth (tests/uplink_lab.py); the
probes run inside the site namespace, their targets (iperf3, DNS, HTTP(S), an address
that never answers) live in the NOC namespace. Nothing is routed out of the lab. Shaping
without netem: tbf for rate, iptables statistic for loss, NFQUEUE for delay (applied at
the receiving side). The ranges asserted are the issue's acceptance; nothing here
asserts how fast our own code is.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.probes.icmp import IcmpSource
from agent.probes.schedule import ThroughputSchedule
from agent.probes.services import DnsSource, ServiceSource
from agent.probes.throughput import ThroughputSource
from schoolnet.calendars import SchoolCalendar
from schoolnet.inventory import Uplink
from schoolnet.probeconfig import (
    DnsSettings,
    IcmpSettings,
    ProbeTarget,
    Service,
    ThroughputSettings,
)
from schoolnet.wire import Point, check_point
from tests.uplink_lab import NocServers, UplinkLab, lab_unavailable

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NAMES = {"schulserver.lab": "10.211.0.2"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UplinkLab]:
    why = lab_unavailable()
    if why:
        pytest.skip(f"uplink lab unavailable: {why}")
    with UplinkLab() as lab:
        servers = NocServers(lab, NAMES, tmp_path_factory.mktemp("noc")).start()
        lab.iperf3_server(5201)
        lab.servers = servers  # type: ignore[attr-defined]
        try:
            yield lab
        finally:
            servers.stop()


def checked(points: list[Point]) -> list[Point]:
    """Every point must pass the wire contract, as the agent's RunningSource checks."""
    for p in points:
        check_point(p, now_ns=p.time_ns)
    return points


def icmp(lab: UplinkLab, settings: IcmpSettings, *targets: ProbeTarget) -> list[Point]:
    async def run() -> list[Point]:
        src = IcmpSource(targets or (ProbeTarget(name="noc", host=lab.noc_ip, kind="noc"),),
                         settings)
        try:
            return await src.collect(time.time_ns())
        finally:
            await src.close()

    return checked(lab.at_site(run))


def test_20ms_added_delay_measures_19_to_25ms_average_rtt(lab: UplinkLab) -> None:
    lab.delay(20)
    try:
        (p,) = icmp(lab, IcmpSettings(count=100, spacing_ms=10, timeout_s=1))
    finally:
        lab.clear_delay()
    assert p.fields["received"] == 100
    assert 19.0 <= float(p.fields["rtt_avg_ms"]) <= 25.0, p.fields
    assert float(p.fields["rtt_min_ms"]) >= 19.0
    assert float(p.fields["rtt_p95_ms"]) <= float(p.fields["rtt_max_ms"])


def test_5_percent_loss_measures_3_to_7_percent_over_200_probes(lab: UplinkLab) -> None:
    # Exactly every 20th echo request dropped: 5 % loss with no sampling luck in it.
    lab.drop_echo_requests("-m", "statistic", "--mode", "nth", "--every", "20",
                           "--packet", "0")
    try:
        (p,) = icmp(lab, IcmpSettings(count=200, spacing_ms=5, timeout_s=1))
    finally:
        lab.clear_loss()
    assert p.fields["sent"] == 200
    assert 3.0 <= float(p.fields["loss_pct"]) <= 7.0, p.fields


def test_random_loss_is_measured_exactly_as_the_shaper_dropped(lab: UplinkLab) -> None:
    # The shaper: -m statistic --mode random --probability 0.05. How many it
    # drops of 200 is binomial (outside 3-7 % about one run in seven), so the claim
    # tested is the agent's: it counts exactly the echoes the link lost.
    before = lab.dropped_by_statistic()
    lab.loss(0.05)
    try:
        (p,) = icmp(lab, IcmpSettings(count=200, spacing_ms=5, timeout_s=1))
        dropped = lab.dropped_by_statistic() - before
    finally:
        lab.clear_loss()
    assert p.fields["sent"] - p.fields["received"] == dropped  # type: ignore[operator]
    assert float(p.fields["loss_pct"]) == pytest.approx(100.0 * dropped / 200)


def test_a_dead_target_is_100_percent_loss_and_stalls_nothing_else(lab: UplinkLab) -> None:
    settings = IcmpSettings(count=20, spacing_ms=50, timeout_s=1.5)
    targets = (ProbeTarget(name="noc", host=lab.noc_ip, kind="noc"),
               ProbeTarget(name="dead", host=lab.dead_ip, kind="anchor"))
    finished: dict[str, float] = {}

    async def timed(name: str, coro: asyncio.Future[list[Point]] | object) -> list[Point]:
        points = await coro  # type: ignore[misc]
        finished[name] = time.monotonic()
        return points  # type: ignore[no-any-return]

    async def run() -> list[Point]:
        icmp_src = IcmpSource(targets, settings)
        dns_src = DnsSource(DnsSettings(resolvers=(lab.noc_ip,), names=("schulserver.lab",)))
        svc_src = ServiceSource([Service(name="web", host=lab.noc_ip, port=8080,
                                         url=f"http://{lab.noc_ip}:8080/")])
        now = time.time_ns()
        try:
            results = await asyncio.gather(timed("icmp", icmp_src.collect(now)),
                                           timed("dns", dns_src.collect(now)),
                                           timed("services", svc_src.collect(now)))
        finally:
            await icmp_src.close()
        return [p for r in results for p in r]

    t0 = time.monotonic()
    points = checked(lab.at_site(run))
    by_target = {p.tags["target"]: p.fields for p in points if p.measurement == "probe_icmp"}
    assert by_target["dead"]["loss_pct"] == 100.0 and by_target["dead"]["received"] == 0
    assert "rtt_avg_ms" not in by_target["dead"]
    assert by_target["noc"]["loss_pct"] == 0.0
    # The live target's train is not held up by the dead one's timeout (one train
    # length, not two), and the other probes are done before the echo trains end.
    assert finished["icmp"] - t0 < 2 * settings.train_s
    assert finished["dns"] < finished["icmp"] and finished["services"] < finished["icmp"]
    assert {p.measurement for p in points} == {"probe_icmp", "probe_dns", "probe_tcp",
                                               "probe_http"}


def test_dns_and_service_failures_are_points_not_crashes(lab: UplinkLab) -> None:
    servers: NocServers = lab.servers  # type: ignore[attr-defined]

    async def run() -> list[Point]:
        dns_src = DnsSource(DnsSettings(resolvers=(lab.noc_ip, lab.dead_ip), timeout_s=1,
                                        names=("schulserver.lab", "nosuchname.lab")))
        svc = ServiceSource([
            Service(name="named", host="schulserver.lab", port=8080,
                    url="http://schulserver.lab:8080/"),
            Service(name="unresolvable", host="nosuchname.lab", port=443,
                    url="https://nosuchname.lab/"),
            Service(name="missing-page", host=lab.noc_ip, port=8080,
                    url=f"http://{lab.noc_ip}:8080/nothing"),
            Service(name="tls", host=lab.noc_ip, port=8443, url=f"https://{lab.noc_ip}:8443/",
                    ca_file=str(servers.cert_file)),
            Service(name="tls-untrusted", host=lab.noc_ip, port=8443,
                    url=f"https://{lab.noc_ip}:8443/"),
            Service(name="closed", host=lab.noc_ip, port=9),
        ], resolvers=(lab.noc_ip,), timeout_s=3)
        now = time.time_ns()
        return [*await dns_src.collect(now), *await svc.collect(now)]

    points = checked(lab.at_site(run))
    dns = {(p.tags["target"], p.tags["resolver"]): p.fields
           for p in points if p.measurement == "probe_dns"}
    assert dns[("schulserver.lab", lab.noc_ip)]["ok"] == 1
    assert dns[("nosuchname.lab", lab.noc_ip)]["rcode"] == "NXDOMAIN"
    assert dns[("nosuchname.lab", lab.noc_ip)]["ok"] == 0
    assert dns[("schulserver.lab", lab.dead_ip)]["rcode"] == "TIMEOUT"
    http = {p.tags["service"]: p.fields for p in points if p.measurement == "probe_http"}
    tcp = {p.tags["service"]: p.fields for p in points if p.measurement == "probe_tcp"}
    assert http["named"]["status"] == 200 and "dns_ms" in http["named"]
    assert http["unresolvable"]["ok"] == 0 and http["unresolvable"]["stage"] == "dns"
    assert "NXDOMAIN" in str(http["unresolvable"]["error"])
    assert http["missing-page"]["status"] == 404 and http["missing-page"]["ok"] == 1
    assert http["tls"]["status"] == 200 and 29 < float(http["tls"]["cert_days_left"]) <= 30
    assert http["tls-untrusted"]["ok"] == 0 and http["tls-untrusted"]["stage"] == "tls"
    assert tcp["tls-untrusted"]["ok"] == 1  # the port answers; the certificate does not
    assert tcp["closed"]["ok"] == 0 and "closed" not in http


def test_50_10_shaped_link_measures_within_10_percent_each_way(lab: UplinkLab) -> None:
    settings = ThroughputSettings(server=lab.noc_ip, duration_s=3)
    uplink = Uplink(kind="dsl", down_mbit=50.0, up_mbit=10.0, device="r", interface="wan")
    src = ThroughputSource(settings, uplink, ThroughputSchedule(
        settings, SchoolCalendar(), site_key="lab/site", test_s=20))
    lab.shape(50, 10)
    try:
        points = checked(lab.at_site(lambda: src.run_now(time.time_ns())))
    finally:
        lab.unshape()
    got = {p.tags["direction"]: p.fields for p in points}
    for direction, contract in (("down", 50.0), ("up", 10.0)):
        f = got[direction]
        assert f["ok"] == 1 and f["contract_mbps"] == contract
        assert 0.9 * contract <= float(f["rate_mbps"]) <= 1.1 * contract, f
        assert f["ratio_to_contract"] == pytest.approx(float(f["rate_mbps"]) / contract)
        assert 0.9 <= float(f["ratio_to_contract"]) <= 1.1


def _site_config(tmp_path: Path, lab: UplinkLab) -> Path:
    d = tmp_path / "sc" / "lab"
    d.mkdir(parents=True)
    # No school days: the CLI's lesson-hours refusal never depends on when CI runs.
    (d / "tenant.yaml").write_text("tenant: lab\nname: Lab\nalerting: {school_days: []}\n")
    (d / "site.yaml").write_text(f"""\
site: site
name: Lab site
uplink: {{kind: dsl, down_mbit: 50, up_mbit: 10, device: router, interface: WAN}}
devices:  # never polled here: the probe command runs the probes only
  - {{name: router, host: 127.0.0.1, role: router, snmp: {{version: 2c, community: lab}}}}
probes:
  icmp: {{count: 5, spacing_ms: 20, timeout_s: 1}}
  targets: [{{name: noc, host: {lab.noc_ip}, kind: noc}}]
  services: [{{name: web, url: "http://schulserver.lab:8080/"}}]
  dns: {{resolvers: [{lab.noc_ip}]}}
  throughput: {{server: {lab.noc_ip}, duration_s: 1}}
""")
    return d / "site.yaml"


def test_the_probe_command_runs_everything_once_inside_the_site(lab: UplinkLab,
                                                                tmp_path: Path) -> None:
    cfg = _site_config(tmp_path, lab)
    cli = [sys.executable, "-m", "agent.cli", "probe", "--site-config", str(cfg), "--json"]
    env_cd = ["env", "--chdir", str(REPO), f"PYTHONPATH={REPO}"]
    r = lab.exec_at_site(*env_cd, *cli, timeout=60)
    assert r.returncode == 0, r.stderr
    points = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = {p["measurement"] for p in points}
    assert kinds == {"probe_icmp", "probe_tcp", "probe_http", "probe_dns"}
    r = lab.exec_at_site(*env_cd, *cli, "--throughput", timeout=60)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["tags"]["direction"] for line in r.stdout.splitlines()] == \
        ["down", "up"]


def test_without_cap_net_raw_the_command_says_so(lab: UplinkLab, tmp_path: Path) -> None:
    if os.path.exists("/usr/bin/setpriv") is False:
        pytest.skip("setpriv (util-linux) is not installed")
    cfg = _site_config(tmp_path, lab)
    r = lab.exec_at_site("setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw",
                         "env", f"PYTHONPATH={REPO}", sys.executable, "-m", "agent.cli",
                         "probe", "--site-config", str(cfg), timeout=60)
    assert r.returncode == 3
    assert "CAP_NET_RAW" in r.stderr and "cannot start" in r.stderr
