"""Mail policy (situations, digests, reminders), mail format, threading, no header injection."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from collector.outages.dispatch import DIGEST, DOWN, REMINDER, RESOLVED, Dispatcher, MailOrder
from collector.outages.mailfmt import MailFormatter, clean, duration
from collector.outages.model import AFFECTED, OPEN, RESOLVE, Outage, OutageEvent
from schoolnet.alerting import MaintenanceWindow
from schoolnet.inventory import load_inventory
from tests.outage_support import school_devices, write_site, write_tenant

BERLIN = ZoneInfo("Europe/Berlin")


def at(day: int, hour: int, minute: int = 0) -> float:
    """A time in November 2025 (Mon 24 is a school day; Sat 22 is not)."""
    return dt.datetime(2025, 11, day, hour, minute, tzinfo=BERLIN).timestamp()


def outage(oid: int = 7, kind: str = "device", name: str = "core-sw", started: float = 0,
           **kw: Any) -> Outage:
    return Outage(id=oid, key=f"t/gy/{kind}/{name}", tenant="t", site="gy", kind=kind,
                  name=name, started=started, opened=started + 60, notified=True,
                  detail={"code": "no_answer", "polls": 2}, **kw)


def dispatcher(tmp: Path, windows: list[MaintenanceWindow] | None = None,
               **alerting: Any) -> Dispatcher:
    write_tenant(tmp, "t", alerting={"recipients": ["it@t.example"], **alerting})
    write_site(tmp, "t", "gy", school_devices())
    inv = load_inventory(tmp)
    cals = {k: t.alerting.calendar() for k, t in inv.tenants.items()}

    def maint(tenant: str, site: str, ts: float) -> MaintenanceWindow | None:
        return next((w for w in windows or [] if w.covers(site, ts)), None)

    return Dispatcher(inv.tenants, cals, maint)


# -- the policy table ---------------------------------------------------------------

@pytest.mark.parametrize(("when", "policy", "window", "mailed"), [
    (at(24, 9), {}, False, True),                                   # Monday lesson time
    (at(24, 20), {}, False, False),                                 # evening: digest
    (at(24, 20), {"outside_lesson_hours": "immediately"}, False, True),
    (at(22, 9), {}, False, False),                                  # Saturday
    (at(24, 9), {}, True, False),                                   # maintenance: never
    (at(24, 9), {"maintenance": "immediately"}, True, True),
    (dt.datetime(2025, 12, 29, 9, tzinfo=BERLIN).timestamp(), {}, False, False),  # holidays
])
def test_policy_by_situation(tmp_path: Path, when: float, policy: dict[str, str],
                             window: bool, mailed: bool) -> None:
    w = [MaintenanceWindow(start=when - 60, end=when + 3600, sites=("gy",))] if window else []
    d = dispatcher(tmp_path, w, policy=policy)
    orders = d.on_event(OutageEvent(OPEN, outage(started=when - 60), at=when), when)
    assert [o.kind for o in orders] == ([DOWN] if mailed else [])


def test_affected_outages_are_never_mailed(tmp_path: Path) -> None:
    d = dispatcher(tmp_path)
    o = outage(root=3)
    o.notified = False
    assert d.on_event(OutageEvent(AFFECTED, o, at=at(24, 9)), at(24, 9)) == []
    assert d.on_event(OutageEvent(RESOLVE, o, at=at(24, 10)), at(24, 10)) == []


def test_resolved_only_after_a_down_mail(tmp_path: Path) -> None:
    d = dispatcher(tmp_path, policy={"outside_lesson_hours": "never"})
    o = outage(started=at(24, 20))
    assert d.on_event(OutageEvent(OPEN, o, at=at(24, 20)), at(24, 20)) == []
    o.closed = at(24, 21)
    assert d.on_event(OutageEvent(RESOLVE, o, at=at(24, 21)), at(24, 21)) == []
    o2 = outage(8, started=at(24, 9))
    assert [x.kind for x in d.on_event(OutageEvent(OPEN, o2), at(24, 9))] == [DOWN]
    o2.closed = at(24, 10)
    assert [x.kind for x in d.on_event(OutageEvent(RESOLVE, o2), at(24, 10))] == [RESOLVED]


def test_night_outage_goes_into_one_morning_digest(tmp_path: Path) -> None:
    d = dispatcher(tmp_path, digest_at="07:00")
    a, b = outage(1, started=at(24, 22)), outage(2, "uplink", "", started=at(25, 1))
    d.on_event(OutageEvent(OPEN, a), at(24, 22))
    d.on_event(OutageEvent(OPEN, b), at(25, 1))
    a.closed = at(24, 23)
    d.on_event(OutageEvent(RESOLVE, a), at(24, 23))
    assert d.tick(at(25, 6, 59), {2: b}) == []
    (digest,) = d.tick(at(25, 7), {2: b})
    assert digest.kind == DIGEST and [i.resolved for i in digest.items] == [True, False]
    assert d.tick(at(25, 7, 10), {2: b}) == []           # one digest, no repeats
    (late,) = d.tick(at(25, 7, 30), {2: b})              # lessons start: still open
    assert late.kind == DOWN and late.late and late.outage is not None and late.outage.id == 2


def test_maintenance_end_makes_a_still_open_outage_urgent(tmp_path: Path) -> None:
    w = MaintenanceWindow(start=at(24, 8), end=at(24, 10), sites=("gy",))
    d = dispatcher(tmp_path, [w])
    o = outage(started=at(24, 8, 30))
    assert d.on_event(OutageEvent(OPEN, o), at(24, 8, 31)) == []
    assert d.tick(at(24, 9, 59), {7: o}) == []
    assert [x.kind for x in d.tick(at(24, 10), {7: o})] == [DOWN]


def test_reminders_for_long_outages(tmp_path: Path) -> None:
    d = dispatcher(tmp_path, reminder_every_h=2)
    o = outage(started=at(24, 8))
    d.on_event(OutageEvent(OPEN, o), at(24, 8))
    assert d.tick(at(24, 9, 59), {7: o}) == []
    (r,) = d.tick(at(24, 10), {7: o})
    assert r.kind == REMINDER and r.reminder == 1
    assert d.tick(at(24, 20), {7: o}) == []  # evening: not urgent, no reminder


def test_dispatcher_state_survives_a_restart(tmp_path: Path) -> None:
    d = dispatcher(tmp_path)
    o = outage(started=at(24, 9))
    d.on_event(OutageEvent(OPEN, o), at(24, 9))
    again = dispatcher(tmp_path / "x")
    again.restore(d.to_json())
    o.closed = at(24, 10)
    assert [x.kind for x in again.on_event(OutageEvent(RESOLVE, o), at(24, 10))] == [RESOLVED]


# -- the mails ----------------------------------------------------------------------

def formatter(lang: str = "de", site_name: str = "Pestalozzi-Gymnasium") -> MailFormatter:
    return MailFormatter(sender="schoolnet@noc.example", token="abc123", domain="noc.example",
                         tenant_names={"t": "Stadt T"}, site_names={("t", "gy"): site_name},
                         languages={"t": lang}, zones={"t": "Europe/Berlin"})


def parse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_down_and_resolved_subjects_and_threading() -> None:
    f = formatter()
    o = outage(1042, "uplink", "", started=at(24, 9))
    o.detail = {"code": "all_lost", "targets": 3}
    down = parse(f.build(MailOrder(DOWN, "t", o, at=at(24, 9, 1)), ("it@t.example",), (40, 46)))
    assert down["Subject"] == "[schoolnet #1042] t Pestalozzi-Gymnasium: Internet-Anbindung DOWN"
    assert down["Message-ID"] == "<1042.down.abc123@noc.example>"
    body = down.get_content()
    assert "40 von 46 Geräten" in body and "alle 3 Ziele ohne Antwort" in body
    o.closed = at(24, 9, 37)
    res = parse(f.build(MailOrder(RESOLVED, "t", o, at=o.closed), ("it@t.example",)))
    assert res["Subject"] == ("[schoolnet #1042] t Pestalozzi-Gymnasium: Internet-Anbindung "
                              "RESOLVED after 37 min")
    assert res["In-Reply-To"] == res["References"] == "<1042.down.abc123@noc.example>"


def test_english_and_degraded() -> None:
    o = outage(5, "uplink_quality", "", started=at(24, 9))
    o.detail = {"code": "degraded", "loss_pct": 12.5, "rtt_ms": 80.0}
    m = parse(formatter("en").build(MailOrder(DOWN, "t", o, at=at(24, 9)), ("a@b.example",)))
    assert m["Subject"].endswith(": uplink quality DEGRADED")
    assert "loss 12.5 %, latency 80.0 ms" in m.get_content()


@pytest.mark.parametrize("evil", [
    "Schule\r\nBcc: victim@evil.example", "Schule\nX-Injected: 1", "Schule\x00\x1b[31m",
    "Schule\u2028Bcc: x@y.example"])
def test_names_cannot_inject_headers(evil: str) -> None:
    o = outage(9, "device", evil.replace(" ", "_"), started=at(24, 9))
    o.detail = {"code": "offline", "reason": evil}
    raw = formatter(site_name=evil).build(MailOrder(DOWN, "t", o, at=at(24, 9)),
                                          ("it@t.example",)).as_bytes()
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m["Bcc"] is None and m["X-Injected"] is None
    assert "\r" not in str(m["Subject"]) and "\n" not in str(m["Subject"])
    body = m.get_body()
    assert body is not None
    assert not any(line.startswith(("Bcc:", "X-Injected:")) for line in
                   body.get_content().splitlines())


@pytest.mark.parametrize("site_name", ["Schule gy", "Gesamtschule Ümläut-Straße " * 4])
def test_subject_survives_the_round_trip_exactly(site_name: str) -> None:
    o = outage(1, "uplink_quality", "", started=at(24, 9))
    m = formatter(site_name=site_name).build(MailOrder(DOWN, "t", o, at=at(24, 9)), ("a@b.c",))
    assert parse(m)["Subject"] == m["Subject"] == clean(
        f"[schoolnet #1] t {clean(site_name, 80)}: Internet-Anbindung (Qualität) DEGRADED", 200)
    assert all(len(line) <= 998 for line in m.as_bytes().split(b"\r\n"))


@pytest.mark.parametrize(("seconds", "text"), [(37 * 60, "37 min"), (4 * 3600 + 600, "4 h 10 min"),
                                               (3600, "1 h"), (3 * 86400, "3 d 0 h")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds, "en") == text


def test_clean_bounds_length() -> None:
    assert clean("x" * 500, 10) == "x" * 9 + "…"
