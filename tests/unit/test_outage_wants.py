"""The collector hands the outage engine only the groups it wants; nothing it acts on is lost.

A message's points reach the engine through ``Verdict.points_where(engine.wants)``
(collector/app.py), so the points of groups no condition reads (interfaces of a switch
without monitored ports, LLDP, PoE, sensors) are never even built. This test drives two
engines through the same random week of polls — one fed every decoded point, one fed
through the filter, both via the real validator — and requires the same events and the
same entity states from both.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from collector.metrics import CollectorMetrics
from collector.outages.engine import OutageEngine
from collector.outages.model import OutageEvent
from collector.validate import Validator
from schoolnet.inventory import load_inventory
from schoolnet.wire import Batch, Point, encode_batch
from tests.outage_support import (
    controller_devices,
    controller_poll,
    device_point,
    port_point,
    probe_round,
    school_devices,
    write_site,
    write_tenant,
)

T0 = 1_764_000_000.0
NS = 1_000_000_000
TOPIC = "schoolnet/v1/t/gy/metrics"
FAST = {"hold_down_s": 60, "min_open_s": 60, "flap_transitions": 6, "flap_window_s": 300,
        "flap_quiet_s": 600}


def noise(device: str, t: float) -> list[Point]:
    """Points of measurements no outage condition reads."""
    ns = int(t * NS)
    tags = {"device": device, "role": "switch"}
    return [
        Point("lldp", {**tags, "ifname": "Gi0/9", "remote_name": "sw1", "remote_port": "1"},
              {"remote_port_descr": "uplink"}, ns),
        Point("poe", {**tags, "ifname": "Gi0/3", "ifindex": "3"}, {"power_mw": 4200}, ns),
        Point("sensor", {**tags, "sensor": "cpu", "sensor_type": "celsius"}, {"value": 41.5}, ns),
    ]


def poll(rng: random.Random, device: str, t: float) -> list[Point]:
    """One poll of an inventory device: device point, ports (some monitored), noise."""
    up = rng.random() > 0.3
    pts = [device_point(device, up, t)]
    if up and device in ("core-sw", "sw1", "sw2"):
        pts += [port_point(device, f"Gi0/{i}", rng.random() > 0.3, t) for i in range(1, 5)]
        pts += noise(device, t)
    return pts


@pytest.mark.parametrize("seed", range(6))
def test_filtered_engine_sees_everything_that_matters(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    write_tenant(tmp_path, "t", thresholds=FAST)
    devices = school_devices(aps=2) + controller_devices()[2:]  # + wlc below core-sw
    write_site(tmp_path, "t", "gy", devices)
    inventory = load_inventory(tmp_path)
    now = T0
    validator = Validator(inventory, CollectorMetrics(), wall_clock_ns=lambda: int(now * NS))
    engines = []
    for _ in range(2):
        ids = itertools.count(1)
        engines.append(OutageEngine(inventory, now=T0, next_id=lambda ids=ids: next(ids)))
    full, filtered = engines
    events: tuple[list[OutageEvent], list[OutageEvent]] = ([], [])
    wlan = {"ap-a": "up", "ap-b": "up", "ap-c": "up"}
    seq = itertools.count(1)
    kept = total = 0
    for _ in range(200):
        now += 30
        messages = [poll(rng, d["name"], now) for d in devices if d["name"] != "wlc"]
        for name in wlan:
            wlan[name] = rng.choice(["up", "up", "up", "down", "gone"])
        messages.append(controller_poll(wlan, now, reachable=rng.random() > 0.2)
                        + ([Point("snmp_error", {"device": "wlc", "role": "controller",
                                                 "table": "ap", "error": "timeout"},
                                  {"message": "x", "consecutive_failures": 1}, int(now * NS))]
                           if rng.random() < 0.1 else []))
        messages.append(probe_round(now, rng.choice([0, 0, 0, 100])))
        for points in messages:
            verdict = validator.handle(TOPIC, encode_batch(Batch("gy", next(seq),
                                                                 tuple(points))))
            assert not verdict.dropped, verdict.reason
            chosen = list(verdict.points_where(
                lambda m, d: filtered.wants("t", "gy", m, d)))
            kept += len(chosen)
            total += len(verdict.decoded)
            events[0].extend(full.on_points("t", "gy", verdict.decoded, now))
            events[1].extend(filtered.on_points("t", "gy", chosen, now))
        events[0].extend(full.tick(now))
        events[1].extend(filtered.tick(now))
    assert events[0] == events[1]
    assert len(events[0]) > 10  # the scenario really opened and resolved outages
    assert {k: (s.bad, s.outage) for k, s in full.states.items()} == {
        k: (s.bad, s.outage) for k, s in filtered.states.items()}
    assert kept < total * 0.8  # and the filter really left points out


def test_wants_per_measurement(tmp_path: Path) -> None:
    write_tenant(tmp_path, "t", thresholds=FAST)
    write_site(tmp_path, "t", "gy", school_devices(aps=1) + controller_devices()[2:])
    engine = OutageEngine(load_inventory(tmp_path), now=T0, next_id=lambda: 1)
    wants = lambda m, d: engine.wants("t", "gy", m, d)  # noqa: E731
    assert wants("device", "sw1") and wants("probe_icmp", None) and wants("ap", "wlc")
    assert wants("interface", "core-sw") and wants("interface", None)  # Gi0/1 monitored
    assert not wants("interface", "sw1")  # no monitored port
    assert not wants("lldp", "core-sw") and not wants("poe", "sw1") and not wants("sensor", None)
    assert not wants("snmp_error", "wlc")  # no controller window yet
