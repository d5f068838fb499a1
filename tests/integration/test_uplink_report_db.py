"""``schoolnet uplink report`` against real databases: VictoriaMetrics (/api/v1/query) and,
where its test server is available, InfluxDB 1.x (InfluxQL).

Thirty days of probe points for two sites of a tenant only this test uses are written as
line protocol (what the collector writes); the report's medians and 10th percentiles
are checked against the values computed here, each with the database's own quantile
rule (VictoriaMetrics: linear interpolation; InfluxDB: nearest rank).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from schoolnet.cli import main
from schoolnet.sim import servers
from schoolnet.sim.servers import VictoriaMetrics
from schoolnet.uplink.query import InfluxQLBackend

pytestmark = pytest.mark.integration

TENANT = f"rpt{os.getpid()}"
DOWN = [40.0 + i for i in range(10)]  # 10 tests at gs-park, 40..49 Mbit/s
UP = [9.0 + i / 10 for i in range(10)]
LOSS = [0.0, 0.0, 1.0, 0.5]
RTT = [15.0, 18.0, 20.0, 40.0]


def lines(now_s: int) -> list[str]:
    out = []
    day = 86400
    for i, (d, u) in enumerate(zip(DOWN, UP, strict=True)):
        ts = (now_s - (i + 1) * 2 * day) * 10**9  # one test every other day
        tags = f"tenant={TENANT},site=gs-park,target=198.51.100.20"
        out.append(f"probe_throughput,{tags},direction=down rate_mbps={d},ok=1i {ts}")
        out.append(f"probe_throughput,{tags},direction=up rate_mbps={u},ok=1i {ts}")
    # A failed test has no rate_mbps: it must not count as a test with a result.
    out.append(f"probe_throughput,tenant={TENANT},site=gs-park,target=x,direction=down "
               f"ok=0i,error=\"busy\" {(now_s - 3600) * 10**9}")
    for i, (loss, rtt) in enumerate(zip(LOSS, RTT, strict=True)):
        ts = (now_s - (i + 1) * 3600) * 10**9
        for kind, factor in (("noc", 1.0), ("gateway", 100.0)):  # gateway: left out
            out.append(f"probe_icmp,tenant={TENANT},site=gs-park,target={kind},"
                       f"target_kind={kind} loss_pct={loss * factor},rtt_avg_ms={rtt} {ts}")
    # Older than the window: ignored.
    out.append(f"probe_throughput,tenant={TENANT},site=gs-park,target=x,direction=down "
               f"rate_mbps=1.0 {(now_s - 40 * day) * 10**9}")
    return out


def write_inventory(tmp_path: Path) -> Path:
    root = tmp_path / "sc"
    d = root / TENANT
    d.mkdir(parents=True)
    (d / "tenant.yaml").write_text(f"tenant: {TENANT}\nname: Test-Stadt\n")
    for sid, down, up in (("gs-park", 50, 10), ("gy-ost", 400, 400)):
        (d / f"{sid}.yaml").write_text(
            f"site: {sid}\nname: {sid}\nuplink: {{kind: dsl, down_mbit: {down}, "
            f"up_mbit: {up}, device: r, interface: wan}}\n"
            "devices: [{name: r, host: 127.0.0.1, role: router, snmp: {version: 2c, "
            "community: c}}]\n")
    return root


def linear_quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def nearest_rank(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def test_report_from_victoriametrics(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    body = "\n".join(lines(int(time.time()))).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{victoria.url}/write", data=body),
                                timeout=10):
        pass
    victoria.flush()
    root = write_inventory(tmp_path)
    args = ["uplink", "report", "--tenant", TENANT, "--inventory", str(root),
            "--url", victoria.url]
    result = CliRunner().invoke(main, [*args, "--csv"])
    assert result.exit_code == 0, result.output
    rows = {r["site"]: r for r in csv.DictReader(io.StringIO(result.output))}
    park = rows["gs-park"]
    assert float(park["down_p50"]) == pytest.approx(linear_quantile(DOWN, 0.5), abs=0.01)
    assert float(park["down_p10"]) == pytest.approx(linear_quantile(DOWN, 0.1), abs=0.01)
    assert float(park["up_p50"]) == pytest.approx(linear_quantile(UP, 0.5), abs=0.01)
    assert int(park["down_tests"]) == 10 and int(park["up_tests"]) == 10
    assert float(park["down_ratio"]) == pytest.approx(linear_quantile(DOWN, 0.5) / 50,
                                                      abs=0.01)
    assert float(park["loss_pct"]) == pytest.approx(sum(LOSS) / len(LOSS), abs=0.01)
    assert float(park["rtt_ms"]) == pytest.approx(linear_quantile(RTT, 0.5), abs=0.01)
    assert rows["gy-ost"]["down_p50"] == "" and rows["gy-ost"]["down_contract"] == "400.00"
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0 and "Test-Stadt" in text.output and "gy-ost" in text.output
    dead = CliRunner().invoke(main, [*args[:-1], "http://127.0.0.1:9"])
    assert dead.exit_code == 3 and "cannot query the database" in dead.output


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[object]:
    cls = getattr(servers, "InfluxDB1", None)
    if cls is None:
        pytest.skip("schoolnet.sim.servers has no InfluxDB1 test server")
    db = cls(tmp_path / "influx", database="schoolnet")
    try:
        with db:
            yield db
    except FileNotFoundError as exc:
        pytest.skip(f"influxd is not installed: {exc}")


def test_report_from_influxdb_1x(influxdb: object, tmp_path: Path) -> None:
    influxdb.write(lines(int(time.time())))  # type: ignore[attr-defined]
    stats = InfluxQLBackend(influxdb.url, database="schoolnet").fetch(TENANT, 30)  # type: ignore[attr-defined]
    park = stats["gs-park"]
    assert park.down_p50 == pytest.approx(nearest_rank(DOWN, 0.5))
    assert park.down_p10 == pytest.approx(nearest_rank(DOWN, 0.1))
    assert park.up_p50 == pytest.approx(nearest_rank(UP, 0.5))
    assert park.down_tests == 10 and park.up_tests == 10
    assert park.loss_pct == pytest.approx(sum(LOSS) / len(LOSS))
    assert park.rtt_ms == pytest.approx(sorted(RTT)[1] / 2 + sorted(RTT)[2] / 2)
