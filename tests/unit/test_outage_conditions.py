"""Conditions per entity kind (ports, APs, uplink quality) and the engine's restart state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.outages import conditions as cond
from collector.outages.engine import OutageEngine
from collector.outages.entities import EntityTree
from collector.outages.model import AFFECTED, OPEN, RESOLVE
from schoolnet.alerting import Thresholds
from schoolnet.wire import Point
from tests.outage_support import (
    device_point,
    icmp_point,
    port_point,
    probe_round,
    school_devices,
    write_site,
    write_tenant,
)
from tests.unit.test_outage_engine import Harness

NS = 10**9


# -- the tree -------------------------------------------------------------------------

def test_tree_from_inventory(tmp_path: Path) -> None:
    h = Harness(tmp_path, devices=school_devices(aps=2, switches=1))
    tree = h.engine.tree
    assert tree.ancestors("t/gy/device/ap1") == [
        "t/gy/device/sw1", "t/gy/aps", "t/gy/device/core-sw", "t/gy/uplink",
        "t/gy/device/router", "t/gy/agent"]
    assert tree.ancestors("t/gy/interface/core-sw/Gi0/1")[0] == "t/gy/device/core-sw"
    assert tree.ancestors("t/gy/uplink_quality") == ["t/gy/uplink", "t/gy/agent"]
    assert set(tree.descendants("t/gy/device/sw1")) == {"t/gy/device/ap1", "t/gy/device/ap2"}
    assert tree.monitored[("t", "gy", "core-sw")] == {"Gi0/1", "Gi0/2"}


def test_parent_cycle_in_the_inventory_does_not_hang(tmp_path: Path) -> None:
    devs = [{"name": "a", "host": "10.0.0.1", "role": "switch", "parent": "b"},
            {"name": "b", "host": "10.0.0.2", "role": "switch", "parent": "a"}]
    h = Harness(tmp_path, devices=devs)
    tree: EntityTree = h.engine.tree
    for k in ("t/gy/device/a", "t/gy/device/b"):
        assert "t/gy/uplink" in tree.ancestors(k)
        assert k not in tree.ancestors(k)


# -- ports ----------------------------------------------------------------------------

@pytest.mark.parametrize(("ifname", "admin_up", "oper_up", "opens"), [
    ("Gi0/1", True, False, True),    # monitored, admin up, oper down: outage
    ("Gi0/1", False, False, False),  # shut down by an admin: no outage
    ("Gi0/1", True, True, False),
    ("Gi0/9", True, False, False),   # not monitored
])
def test_monitored_port(tmp_path: Path, ifname: str, admin_up: bool, oper_up: bool,
                        opens: bool) -> None:
    h = Harness(tmp_path)
    h.feed(port_point("core-sw", ifname, oper_up, h.now, admin_up))
    h.advance(61, every=(20, [port_point("core-sw", ifname, oper_up, h.now, admin_up)]))
    assert bool(h.kinds(OPEN)) == opens


@pytest.mark.parametrize(("oper", "down"), [(1, False), (2, True), (3, False), (5, False),
                                            (6, True), (7, True)])
def test_oper_status_values(oper: int, down: bool) -> None:
    p = Point("interface", {"device": "sw", "ifname": "x"},
              {"admin_status": 1, "oper_status": oper}, 0)
    obs = cond.interface_observation(p, {}, Thresholds())
    assert obs is not None and obs.bad == down


# -- access points as a group ---------------------------------------------------------

@pytest.mark.parametrize(("aps_down", "group_opens", "own_outages"), [
    (1, False, 1),    # one AP: its own outage
    (2, False, 2),    # 2 of 20 = 10 % < 30 %
    (8, True, 0),     # 40 %: one group outage, the APs are affected
])
def test_access_points_share_down(tmp_path: Path, aps_down: int, group_opens: bool,
                                  own_outages: int) -> None:
    h = Harness(tmp_path, devices=school_devices(aps=20, switches=4))
    pts = [device_point(f"ap{i}", False, h.now, "ap") for i in range(1, aps_down + 1)]
    h.feed(*pts, *pts)
    h.advance(61)
    opened = [e.outage.kind for e in h.kinds(OPEN)]
    assert opened.count("aps") == (1 if group_opens else 0)
    assert opened.count("device") == own_outages
    if group_opens:
        assert len(h.kinds(AFFECTED)) == aps_down


def test_aps_behind_a_dead_switch_are_not_a_group_outage(tmp_path: Path) -> None:
    h = Harness(tmp_path, devices=school_devices(aps=8, switches=2))
    pts = [device_point("sw1", False, h.now)] + [
        device_point(f"ap{i}", False, h.now, "ap") for i in (1, 3, 5, 7)]  # sw1's APs
    h.feed(*pts, *pts)
    h.advance(61)
    assert [e.outage.key for e in h.kinds(OPEN)] == ["t/gy/device/sw1"]
    assert len(h.kinds(AFFECTED)) == 4


# -- uplink conditions ----------------------------------------------------------------

def test_gateway_answering_does_not_hide_a_dead_uplink() -> None:
    mem: dict[str, object] = {}
    for p in probe_round(0, 100):
        cond.record_icmp(p, mem, 0)  # type: ignore[arg-type]
    obs = cond.uplink_down(mem)  # type: ignore[arg-type]
    assert obs is not None and obs.bad and obs.detail == {"code": "all_lost", "targets": 2}


@pytest.mark.parametrize(("loss", "rtt", "bad"), [(0, 20, False), (10, 20, True),
                                                  (0, 400, True), (100, None, None)])
def test_uplink_quality(loss: float, rtt: float | None, bad: bool | None) -> None:
    mem: dict[str, object] = {}
    cond.record_icmp(icmp_point("noc", loss, 0, rtt or 0, "noc"), mem, 0)  # type: ignore[arg-type]
    obs = cond.uplink_quality(mem, Thresholds())  # type: ignore[arg-type]
    assert (obs.bad if obs else None) == bad


def test_degraded_uplink_needs_its_own_longer_hold(tmp_path: Path) -> None:
    h = Harness(tmp_path, thresholds={"degraded_for_s": 300})
    h.feed(*probe_round(h.now, 20))
    h.advance(240, every=(30, probe_round(h.now, 20)))
    assert not h.kinds(OPEN)
    h.advance(90, every=(30, probe_round(h.now, 20)))
    assert [e.outage.kind for e in h.kinds(OPEN)] == ["uplink_quality"]


@pytest.mark.parametrize(("ratios", "slow"), [
    ([0.9, 0.3], False), ([0.3, 0.3], True), ([0.3, 0.9, 0.3], False)])
def test_throughput_below_contract_on_consecutive_tests(ratios: list[float], slow: bool) -> None:
    mem: dict[str, object] = {}
    obs = None
    for r in ratios:
        p = Point("probe_throughput", {"target": "noc", "direction": "down"},
                  {"ratio_to_contract": r, "mbps": 400 * r}, 0)
        obs = cond.throughput_observation(p, mem, Thresholds())  # type: ignore[arg-type]
    assert obs is not None and obs.bad == slow


@pytest.mark.parametrize(("lesson", "util", "bad"), [(True, 95.0, True), (False, 95.0, False),
                                                     (True, 50.0, False)])
def test_saturation_only_counts_in_lesson_hours(lesson: bool, util: float, bad: bool) -> None:
    p = Point("uplink", {"device": "router", "ifname": "Gi0/0"},
              {"util_in_pct": util, "util_out_pct": 3.0}, 0)
    obs = cond.saturation_observation(p, Thresholds(), lesson)
    assert obs is not None and obs.bad == bad


# -- state across a restart -----------------------------------------------------------

def test_restart_keeps_open_outages_and_damping_state(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.status("offline")
    h.feed(device_point("sw2", False, h.now))  # one failed poll of two: remembered
    h.advance(61)
    (o,) = h.kinds(OPEN)
    states, outages = h.engine.take_changes()
    saved_states = {k: json.loads(json.dumps(v.to_json())) for k, v in states.items() if v}
    saved = [json.loads(json.dumps(x.to_json())) for x in outages]
    again = OutageEngine(h.inventory, now=h.now, next_id=lambda: 99)
    assert again.restore(saved_states, saved, h.now) == []
    assert list(again.open) == [o.outage.id]
    assert again.states["t/gy/device/sw2"].mem == {"fails": 1}
    ev = again.on_status("t", "gy", "online", "", h.now + 100)
    assert [(e.kind, e.outage.id, e.outage.notified) for e in ev] == [
        (RESOLVE, o.outage.id, True)]


def test_restart_resolves_outages_of_entities_removed_from_the_inventory(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(device_point("sw2", False, h.now), device_point("sw2", False, h.now))
    h.advance(61)
    states, outages = h.engine.take_changes()
    write_tenant(tmp_path / "new", "t")
    write_site(tmp_path / "new", "t", "gy", school_devices(switches=1))  # no sw2 any more
    from schoolnet.inventory import load_inventory
    again = OutageEngine(load_inventory(tmp_path / "new"), now=h.now, next_id=lambda: 99)
    ev = again.restore({k: v.to_json() for k, v in states.items() if v},
                       [x.to_json() for x in outages], h.now)
    assert [(e.kind, e.note, e.outage.notified) for e in ev] == [(RESOLVE, "removed", True)]
