"""The outage engine, rule by rule, with an injected clock (no sleeping).

Every test drives the pure state machine with points, status events and ticks, and
checks the events it emits: which outages open, which are only *affected*, which
resolve, and that a notifiable resolve always follows a notifiable open.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from collector.outages.engine import OutageEngine
from collector.outages.model import AFFECTED, OPEN, RESOLVE, UPDATE, OutageEvent
from schoolnet.inventory import load_inventory
from schoolnet.wire import Point
from tests.outage_support import (
    device_point,
    port_point,
    probe_round,
    school_devices,
    write_site,
    write_tenant,
)

T0 = dt.datetime(2025, 11, 24, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
FAST = {"hold_down_s": 60, "min_open_s": 60, "flap_transitions": 6, "flap_window_s": 300,
        "flap_quiet_s": 600}


class Harness:
    """One tenant ``t`` with sites; the clock starts at a Monday 08:00."""

    def __init__(self, tmp: Path, *, devices: list[dict[str, Any]] | None = None,
                 thresholds: dict[str, Any] | None = None, sites: tuple[str, ...] = ("gy",),
                 lesson: bool = True) -> None:
        write_tenant(tmp, "t", thresholds={**FAST, **(thresholds or {})})
        for s in sites:
            write_site(tmp, "t", s, school_devices() if devices is None else devices)
        self.inventory = load_inventory(tmp)
        ids = itertools.count(1)
        self.now = T0
        self.engine = OutageEngine(self.inventory, now=T0, next_id=lambda: next(ids),
                                   lesson_time=lambda tenant, ts: lesson)
        self.events: list[OutageEvent] = []
        self.sites = sites
        #: The agents keep sending (their self-health points), unless a test says not.
        self.alive = True

    def feed(self, *points: Point, site: str = "gy") -> list[OutageEvent]:
        ev = self.engine.on_points("t", site, points, self.now)
        self.events += ev
        return ev

    def status(self, state: str, site: str = "gy", reason: str = "lost") -> list[OutageEvent]:
        ev = self.engine.on_status("t", site, state, reason, self.now)
        self.events += ev
        return ev

    def advance(self, seconds: float, step: float = 1.0,
                every: tuple[float, list[Point] | None] | None = None) -> None:
        """Let time pass, ticking every ``step``; ``every=(period, points)`` keeps feeding."""
        end = self.now + seconds
        next_feed = self.now + every[0] if every else None
        while self.now < end:
            self.now = min(end, self.now + step)
            if every and next_feed is not None and self.now >= next_feed:
                pts = [Point(p.measurement, p.tags, p.fields, int(self.now * 1e9))
                       for p in (every[1] or [])]
                self.feed(*pts)
                next_feed += every[0]
            if self.alive:
                for s in self.sites:
                    self.events += self.engine.on_points("t", s, (), self.now)
            self.events += self.engine.tick(self.now)

    def kinds(self, *kinds: str) -> list[OutageEvent]:
        return [e for e in self.events if e.kind in kinds]

    def notifiable(self) -> list[OutageEvent]:
        """Events the dispatcher mails: opens, notified resolves, updates."""
        return [e for e in self.events if e.kind in (OPEN, UPDATE)
                or (e.kind == RESOLVE and e.outage.notified)]


def down(dev: str, h: Harness, ok: bool = False) -> Point:
    return device_point(dev, ok, h.now)


# -- hold-down and minimum open time --------------------------------------------------

@pytest.mark.parametrize(("down_for", "opens"), [
    (30, False),   # a blip shorter than the hold-down is no outage
    (59, False),
    (61, True),    # 2 failed polls needed, then 60 s hold-down
])
def test_hold_down(tmp_path: Path, down_for: float, opens: bool) -> None:
    h = Harness(tmp_path)
    h.feed(down("sw1", h), down("sw1", h))  # two consecutive failed polls
    h.advance(down_for)
    h.feed(device_point("sw1", True, h.now))
    assert bool(h.kinds(OPEN)) == opens
    if opens:
        assert h.kinds(OPEN)[0].outage.key == "t/gy/device/sw1"


def test_one_failed_poll_is_not_enough(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(down("sw1", h))
    h.advance(120)
    assert not h.kinds(OPEN)
    h.feed(down("sw1", h))  # the second failure starts the hold-down
    h.advance(61)
    assert len(h.kinds(OPEN)) == 1


def test_minimum_open_time_and_matching_resolve(tmp_path: Path) -> None:
    h = Harness(tmp_path, thresholds={"min_open_s": 300})
    h.feed(down("sw1", h), down("sw1", h))
    h.advance(61)
    opened = h.kinds(OPEN)[0].outage
    h.feed(device_point("sw1", True, h.now))   # recovers 1 s after opening
    h.advance(200)
    assert not h.kinds(RESOLVE)                # held open: min_open_s
    h.advance(100)
    (res,) = h.kinds(RESOLVE)
    assert res.outage.id == opened.id and res.outage.notified
    assert res.outage.closed is not None and res.outage.closed - opened.opened >= 300


# -- dependencies ---------------------------------------------------------------------

def test_uplink_down_with_40_devices_is_one_outage_with_affected_count(tmp_path: Path) -> None:
    h = Harness(tmp_path, devices=school_devices(aps=40, switches=4))
    everything = [down(d["name"], h) for d in school_devices(aps=40, switches=4)]
    h.feed(*probe_round(h.now, 100), *everything)
    h.advance(120, every=(30, [*probe_round(h.now, 100), *everything]))
    opens = h.kinds(OPEN)
    assert [e.outage.key for e in opens] == ["t/gy/uplink"]
    root = h.engine.open[opens[0].outage.id]
    assert len(h.kinds(AFFECTED)) >= 46  # 46 devices (+ aps group, ports) recorded
    assert all(e.outage.root == root.id for e in h.kinds(AFFECTED))
    assert h.engine.affected(root) == (46, 46)


def test_descendant_waits_for_a_pending_ancestor(tmp_path: Path) -> None:
    """sw1 fails a poll before the core switch; its hold-down ends first, yet no mail."""
    h = Harness(tmp_path)
    h.feed(down("sw1", h), down("sw1", h))
    h.advance(20)
    h.feed(down("core-sw", h), down("core-sw", h), down("sw1", h))
    h.advance(45)  # sw1's hold-down (60 s) is over, core-sw's is not
    assert not h.kinds(OPEN, AFFECTED)
    h.advance(20)
    assert [e.outage.key for e in h.kinds(OPEN)] == ["t/gy/device/core-sw"]
    assert [e.outage.key for e in h.kinds(AFFECTED)] == ["t/gy/device/sw1"]


def test_descendant_opens_on_its_own_when_the_pending_ancestor_clears(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(down("sw1", h), down("sw1", h), down("core-sw", h), down("core-sw", h))
    h.advance(30)
    h.feed(device_point("core-sw", True, h.now))
    h.advance(31)
    assert [e.outage.key for e in h.kinds(OPEN)] == ["t/gy/device/sw1"]


@pytest.mark.parametrize(("sw1_after", "expect"), [
    ("up", "silent"),        # recovered with its root: resolved without mail
    ("down", "released"),    # still down after the root recovered: its own outage
])
def test_root_recovery_releases_or_resolves_descendants(tmp_path: Path, sw1_after: str,
                                                        expect: str) -> None:
    h = Harness(tmp_path, thresholds={"min_open_s": 0})
    feed = [down("core-sw", h), down("sw1", h)]
    h.feed(*feed, *feed)
    h.advance(61)
    (root,) = h.kinds(OPEN)
    assert [e.outage.key for e in h.kinds(AFFECTED)] == ["t/gy/device/sw1"]
    h.feed(device_point("core-sw", True, h.now),
           device_point("sw1", sw1_after == "up", h.now))
    h.advance(5)
    assert any(e.kind == RESOLVE and e.outage.id == root.outage.id for e in h.events)
    h.advance(30, every=(10, [device_point("sw1", sw1_after == "up", h.now)]))
    assert len(h.kinds(OPEN)) == 1  # a released outage waits a hold-down
    h.advance(40, every=(10, [device_point("sw1", sw1_after == "up", h.now)]))
    opens = h.kinds(OPEN)
    if expect == "silent":
        assert len(opens) == 1
        res = [e for e in h.kinds(RESOLVE) if e.outage.key == "t/gy/device/sw1"]
        assert res and not res[0].outage.notified
    else:
        assert [e.outage.key for e in opens] == ["t/gy/device/core-sw", "t/gy/device/sw1"]
        assert opens[1].note == "released" and opens[1].outage.released_from == root.outage.id


def test_release_needs_a_sample_from_after_the_recovery(tmp_path: Path) -> None:
    """Site connection back: device states from before the gap are stale, not news."""
    h = Harness(tmp_path)
    h.feed(down("sw1", h), down("sw1", h))
    h.status("offline")
    h.advance(61)
    assert [e.outage.key for e in h.kinds(OPEN)] == ["t/gy/agent"]
    h.advance(60)
    h.status("online")
    h.advance(300)  # no fresh sample of sw1 arrives
    assert [e.outage.key for e in h.kinds(OPEN)] == ["t/gy/agent"]
    h.feed(device_point("sw1", True, h.now))
    h.advance(5)
    res = [e for e in h.kinds(RESOLVE) if e.outage.key == "t/gy/device/sw1"]
    assert res and not res[0].outage.notified


# -- flapping -------------------------------------------------------------------------

def test_port_flapping_ten_times_in_five_minutes_is_at_most_two_mails(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    for _ in range(10):
        h.feed(port_point("core-sw", "Gi0/1", False, h.now))
        h.advance(15)
        h.feed(port_point("core-sw", "Gi0/1", True, h.now))
        h.advance(15)
    h.advance(700, step=10)
    mails = h.notifiable()
    assert len(mails) <= 2
    assert mails[0].kind == OPEN and mails[0].note == "flapping"
    assert mails[-1].kind == RESOLVE and mails[-1].outage.id == mails[0].outage.id
    assert mails[-1].outage.flaps > 5


def test_open_outage_that_starts_flapping_stays_open_until_stable(tmp_path: Path) -> None:
    h = Harness(tmp_path, thresholds={"min_open_s": 300})
    h.feed(port_point("core-sw", "Gi0/1", False, h.now))
    h.advance(61)
    assert len(h.kinds(OPEN)) == 1
    for _ in range(4):
        h.feed(port_point("core-sw", "Gi0/1", True, h.now))
        h.advance(20)
        h.feed(port_point("core-sw", "Gi0/1", False, h.now))
        h.advance(20)
    assert [e.note for e in h.kinds(UPDATE)] == ["flapping"]
    assert not h.kinds(RESOLVE)
    h.advance(700, step=10)  # stable, but down: carries on as a plain outage
    assert [e.note for e in h.kinds(UPDATE)] == ["flapping", "still_down"]
    h.feed(port_point("core-sw", "Gi0/1", True, h.now))
    h.advance(5)
    assert len(h.kinds(RESOLVE)) == 1 and len(h.kinds(OPEN)) == 1


# -- site connection ------------------------------------------------------------------

def test_last_will_offline_then_online(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.status("offline", reason="lost")
    h.advance(59)
    assert not h.kinds(OPEN)
    h.advance(2)
    (o,) = h.kinds(OPEN)
    assert o.outage.kind == "agent" and o.outage.detail == {"code": "offline", "reason": "lost"}
    h.advance(120)
    h.status("online")
    (r,) = h.kinds(RESOLVE)
    assert r.outage.id == o.outage.id and r.outage.notified


@pytest.mark.parametrize(("connected", "opens"), [(True, True), (False, False)])
def test_silent_site_is_an_outage_unless_the_collector_itself_is_cut_off(
        tmp_path: Path, connected: bool, opens: bool) -> None:
    h = Harness(tmp_path)  # poll interval 60 s, silent after 3 intervals
    h.alive = False
    h.engine.set_connected(connected, h.now)
    h.advance(180 + 70, step=5)
    assert [e.outage.kind for e in h.kinds(OPEN)] == (["agent"] if opens else [])
    if opens:
        assert h.kinds(OPEN)[0].outage.detail["code"] == "silent"


def test_reconnecting_collector_gives_every_site_a_grace_period(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.alive = False
    h.engine.set_connected(False, h.now)
    h.advance(1000, step=10)
    h.engine.set_connected(True, h.now)
    h.advance(170, step=5)
    assert not h.kinds(OPEN)


def test_replayed_old_points_do_not_open_outages(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    old = h.now - 600
    h.feed(device_point("sw1", False, old), device_point("sw1", False, old + 60))
    h.advance(120)
    assert not h.kinds(OPEN)
