"""The probes' points are what the outage engine's uplink conditions read (docs/outages.md).

Points built by the probe code itself (not written by hand) go through the engine's
pure condition functions: a dead uplink, a degraded one, slow throughput and a
saturated WAN port must each be recognised.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agent.probes.icmp import TrainResult, train_fields
from agent.probes.schedule import ThroughputSchedule
from agent.probes.throughput import ThroughputSource
from agent.probes.utilization import uplink_point
from collector.outages import conditions as cond
from schoolnet.alerting import Thresholds
from schoolnet.calendars import SchoolCalendar
from schoolnet.inventory import Uplink
from schoolnet.probeconfig import ThroughputSettings
from schoolnet.wire import Point

NOW = 1_800_000_000 * 10**9
UPLINK = Uplink(kind="dsl", down_mbit=50.0, up_mbit=10.0, device="router", interface="WAN")


def icmp_point(target: str, kind: str, rtts: list[float | None]) -> Point:
    return Point("probe_icmp", {"target": target, "target_kind": kind},
                 train_fields(TrainResult(rtts_ms=rtts)), NOW)


def test_all_external_targets_lost_is_uplink_down_and_the_gateway_does_not_count() -> None:
    mem: dict[str, Any] = {}
    for p in (icmp_point("gw", "gateway", [1.0] * 10),  # the router inside still answers
              icmp_point("noc", "noc", [None] * 10),
              icmp_point("anchor", "anchor", [None] * 10)):
        cond.record_icmp(p, mem, NOW / 1e9)
    down = cond.uplink_down(mem)
    assert down is not None and down.bad


def test_loss_and_latency_over_threshold_is_degraded() -> None:
    mem: dict[str, Any] = {}
    lossy = [None if i % 5 == 0 else 30.0 for i in range(20)]  # 20 % loss
    cond.record_icmp(icmp_point("noc", "noc", lossy), mem, NOW / 1e9)
    obs = cond.uplink_quality(mem, Thresholds())
    assert obs is not None and obs.bad and obs.detail["loss_pct"] == 20.0
    fine: dict[str, Any] = {}
    cond.record_icmp(icmp_point("noc", "noc", [12.0] * 20), fine, NOW / 1e9)
    ok = cond.uplink_quality(fine, Thresholds())
    assert ok is not None and not ok.bad


def _slow_iperf(bps: float) -> Any:
    async def runner(cmd: list[str], hard: float) -> tuple[int, str]:
        return 0, json.dumps({"end": {"sum_received": {"bytes": 10**6, "seconds": 3.0,
                                                       "bits_per_second": bps}}})
    return runner


def test_throughput_below_the_share_on_consecutive_tests_is_slow() -> None:
    s = ThroughputSettings(server="198.51.100.20", directions=("down",))
    src = ThroughputSource(s, UPLINK, ThroughputSchedule(s, SchoolCalendar(), site_key="t/s",
                                                         test_s=20), runner=_slow_iperf(15e6))
    mem: dict[str, Any] = {}
    th = Thresholds()
    observations = []
    for _ in range(th.throughput_failed_tests):
        (p,) = asyncio.run(src.run_now(NOW))
        observations.append(cond.throughput_observation(p, mem, th))
    assert observations[0] is not None and not observations[0].bad  # one test is not enough
    assert observations[-1] is not None and observations[-1].bad
    assert observations[-1].detail["ratio"] == 0.3 and observations[-1].detail["direction"] == "down"


def test_a_full_wan_port_in_lessons_is_saturated() -> None:
    wan = Point("interface", {"device": "router", "role": "router", "ifindex": "2",
                              "ifname": "WAN"}, {"in_bps": 48e6, "out_bps": 1e6}, NOW)
    p = uplink_point([wan], UPLINK)
    assert p is not None
    obs = cond.saturation_observation(p, Thresholds(), lesson_time=True)
    assert obs is not None and obs.bad and obs.detail["direction"] == "down"
    quiet = cond.saturation_observation(p, Thresholds(), lesson_time=False)
    assert quiet is not None and not quiet.bad
