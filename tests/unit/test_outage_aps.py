"""APs behind a WLAN controller as outage entities: learning, down, missing, covering, forgetting.

Driven through the pure engine with an injected clock (the Harness of
test_outage_engine.py), fed with controller polls shaped like the controller profiles'
points (tests/outage_support.py: controller_poll) and, at the end, with the points the
real profiles make from the controller recordings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.unit.test_snmp_devices as sdev
from collector.outages.dispatch import DOWN, MailOrder
from collector.outages.model import AFFECTED, OPEN, RESOLVE, Outage
from collector.outages.service import OutageService
from collector.outages.settings import AlertingSettings, read_alerting_settings
from schoolnet.configfile import ConfigError, IssueList, MappingReader, compose_file
from schoolnet.inventory import load_inventory
from schoolnet.wire import Point
from tests.outage_support import controller_devices, controller_poll, write_site, write_tenant
from tests.unit.test_outage_engine import T0, Harness
from tests.unit.test_outage_mail import formatter as mail_formatter
from tests.unit.test_outage_service import Clock, FakeRelay

FOUR = {"ap-aula": "up", "ap-r101": "up", "ap-r102": "up", "ap-halle": "up"}


def poll(h: Harness, aps: dict[str, str], **kw: object) -> None:
    """One controller poll now, then a poll interval (60 s) passes."""
    h.feed(*controller_poll(aps, h.now, **kw))  # type: ignore[arg-type]
    h.advance(60)


def harness(tmp: Path, **kw: object) -> Harness:
    h = Harness(tmp, devices=controller_devices(), **kw)  # type: ignore[arg-type]
    poll(h, FOUR)
    poll(h, FOUR)
    return h


def opened(h: Harness, kind: str = "ap") -> list[str]:
    return [e.outage.name for e in h.kinds(OPEN) if e.outage.kind == kind]


def test_aps_are_learned_below_their_controller_and_the_aps_group(tmp_path: Path) -> None:
    h = harness(tmp_path)
    tree = h.engine.tree
    e = tree["t/gy/ap/ap-aula"]
    assert (e.kind, e.name, e.parents) == ("ap", "ap-aula", ("t/gy/device/wlc", "t/gy/aps"))
    assert e.depth > tree["t/gy/device/wlc"].depth and e.depth > tree["t/gy/aps"].depth
    assert "t/gy/ap/ap-aula" in tree.descendants("t/gy/device/wlc")
    assert len(h.engine.aps) == 4
    assert not h.events  # learning is no outage


def test_an_ap_never_seen_up_is_not_expected(tmp_path: Path) -> None:
    h = harness(tmp_path)
    for _ in range(5):
        poll(h, {**FOUR, "ghost": "down"})  # a stale row the controller keeps
    assert "t/gy/ap/ghost" not in h.engine.tree and not h.events


def test_ap_dropping_out_of_the_table_is_one_outage_naming_controller_and_clients(
        tmp_path: Path) -> None:
    h = harness(tmp_path)
    gone = {**FOUR, "ap-halle": "gone"}
    for _ in range(4):  # 2 missed polls (judged when the next poll starts) + hold-down
        poll(h, gone)
    assert opened(h) == ["ap-halle"]
    (ev,) = h.kinds(OPEN)
    assert ev.outage.key == "t/gy/ap/ap-halle"
    assert ev.outage.detail["code"] == "ap_missing"
    assert ev.outage.detail["controller"] == "wlc" and ev.outage.detail["clients"] == 5
    for _ in range(3):
        poll(h, FOUR)
    assert [e.outage.name for e in h.kinds(RESOLVE)] == ["ap-halle"]
    assert len(h.notifiable()) == 2


def test_ap_listed_in_a_not_up_state_carries_the_vendor_status(tmp_path: Path) -> None:
    h = harness(tmp_path)
    for _ in range(4):
        poll(h, {**FOUR, "ap-r101": "disassociating"})
    (ev,) = h.kinds(OPEN)
    assert ev.outage.detail["code"] == "ap_not_up"
    assert ev.outage.detail["status"] == "disassociating"


def test_one_missed_poll_is_no_outage(tmp_path: Path) -> None:
    h = harness(tmp_path)
    for aps in (FOUR, {**FOUR, "ap-halle": "gone"}, FOUR, FOUR, FOUR):
        poll(h, aps)  # an AP rebooting within one poll interval
    h.advance(120)
    assert not h.events


def test_controller_unreachable_is_one_device_outage_and_no_ap_outages(tmp_path: Path) -> None:
    h = harness(tmp_path)
    for _ in range(5):
        poll(h, FOUR, reachable=False)
    assert opened(h, "device") == ["wlc"]
    assert not [e for e in h.events if e.outage.kind in ("ap", "aps")]


def test_ap_failing_while_its_controller_goes_down_is_covered_by_the_controller(
        tmp_path: Path) -> None:
    h = harness(tmp_path)
    gone = {**FOUR, "ap-halle": "gone"}
    poll(h, gone)
    h.feed(*controller_poll(gone, h.now))
    h.advance(30)
    h.feed(*controller_poll(gone, h.now))  # ap-halle is bad now, in its hold-down
    assert h.engine.states["t/gy/ap/ap-halle"].bad
    for _ in range(2):  # the controller stops answering before the AP's hold-down ends
        h.advance(10)
        h.feed(*controller_poll(FOUR, h.now, reachable=False))
    h.advance(120)
    assert [e.outage.name for e in h.notifiable()] == ["wlc"]
    (affected,) = h.kinds(AFFECTED)
    assert affected.outage.name == "ap-halle" and affected.outage.root is not None


def test_many_aps_missing_is_one_group_outage_covering_the_single_aps(tmp_path: Path) -> None:
    h = harness(tmp_path)
    for _ in range(4):
        poll(h, {"ap-aula": "up", "ap-r101": "gone", "ap-r102": "gone", "ap-halle": "gone"})
    assert [e.outage.kind for e in h.notifiable()] == ["aps"]
    assert h.kinds(OPEN)[0].outage.detail == {"code": "aps_down", "down": 3, "total": 4}
    assert sorted(e.outage.name for e in h.kinds(AFFECTED)) == ["ap-halle", "ap-r101",
                                                                "ap-r102"]


@pytest.mark.parametrize("writes", ["ap", None])  # None: an agent from before the tag
def test_a_poll_with_a_failed_ap_table_says_nothing_about_the_aps(
        tmp_path: Path, writes: str | None) -> None:
    h = harness(tmp_path)
    for _ in range(6):
        pts = controller_poll({**FOUR, "ap-halle": "gone"}, h.now)
        tags = {"device": "wlc", "role": "controller", "table": "controller_ap_up",
                "error": "timeout", **({"writes": writes} if writes else {})}
        err = Point("snmp_error", tags, {"message": "timeout", "consecutive_failures": 1},
                    int(h.now * 1e9))
        h.feed(*pts, err)
        h.advance(60)
    assert not h.events and "t/gy/ap/ap-halle" not in h.engine.states


def test_a_failed_table_of_other_data_does_not_blind_the_ap_checks(tmp_path: Path) -> None:
    # A controller whose sensor table times out on every poll (the poll goes on since
    # per-table timeouts) still has its APs judged.
    h = harness(tmp_path)
    for _ in range(4):
        pts = controller_poll({**FOUR, "ap-halle": "gone"}, h.now)
        err = Point("snmp_error", {"device": "wlc", "role": "controller", "table": "sensors",
                                   "error": "timeout", "writes": "sensor"},
                    {"message": "timeout", "consecutive_failures": 1}, int(h.now * 1e9))
        h.feed(*pts, err)
        h.advance(60)
    assert opened(h) == ["ap-halle"]


def test_forgetting_resolves_the_outage_and_the_ap_is_learned_again_when_up(
        tmp_path: Path) -> None:
    h = harness(tmp_path)
    for _ in range(4):
        poll(h, {**FOUR, "ap-halle": "gone"})
    assert opened(h) == ["ap-halle"]
    h.events += h.engine.forget_ap("t/gy/ap/ap-halle", h.now)
    (res,) = h.kinds(RESOLVE)
    assert res.note == "forgotten" and res.outage.detail["code"] == "ap_forgotten"
    assert "t/gy/ap/ap-halle" not in h.engine.tree
    assert "t/gy/ap/ap-halle" not in h.engine.tree.descendants("t/gy/aps")
    poll(h, {**FOUR, "ap-halle": "gone"})
    assert len(h.engine.aps) == 3
    poll(h, FOUR)
    assert "t/gy/ap/ap-halle" in h.engine.tree


def test_an_ap_not_listed_for_the_forget_period_is_decommissioned(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.engine.ap_forget_s = 600
    for _ in range(14):
        poll(h, {**FOUR, "ap-halle": "gone"})
    (res,) = h.kinds(RESOLVE)
    assert res.outage.detail["code"] == "ap_decommissioned"
    assert len(h.engine.aps) == 3 and "t/gy/ap/ap-halle" not in h.engine.tree
    assert not h.engine.open


def test_an_inventory_ap_of_the_same_name_is_not_learned_twice(tmp_path: Path) -> None:
    h = Harness(tmp_path, devices=controller_devices(aps=2))
    for _ in range(3):
        poll(h, {"ap1": "up", "ap-aula": "up"})
    assert list(h.engine.aps.aps) == ["t/gy/ap/ap-aula"]
    assert "t/gy/ap/ap1" not in h.engine.tree and "t/gy/device/ap1" in h.engine.tree


def test_an_ap_follows_its_controller_on_failover(tmp_path: Path) -> None:
    devices = [*controller_devices(),
               {"name": "wlc2", "host": "10.0.0.4", "role": "controller", "parent": "core-sw"}]
    h = Harness(tmp_path, devices=devices)
    for _ in range(2):
        poll(h, FOUR)
    for _ in range(5):
        h.feed(*controller_poll({"ap-aula": "gone", "ap-r101": "up", "ap-r102": "up",
                                 "ap-halle": "up"}, h.now))
        h.feed(*controller_poll({"ap-aula": "up"}, h.now, controller="wlc2"))
        h.advance(60)
    assert h.engine.tree["t/gy/ap/ap-aula"].parents[0] == "t/gy/device/wlc2"
    assert not h.events


def test_expected_vs_joined_and_learned_aps_survive_a_restart(tmp_path: Path) -> None:
    inv_dir = tmp_path / "inv"
    write_tenant(inv_dir, "t", thresholds={"hold_down_s": 60, "min_open_s": 60},
                 alerting={"recipients": ["it@t.example"]})
    write_site(inv_dir, "t", "gy", controller_devices())
    clock = Clock(T0)

    def service() -> OutageService:
        return OutageService(AlertingSettings(), load_inventory(inv_dir), tmp_path / "state",
                             clock=clock, relay=FakeRelay())

    svc = service()
    for aps in (FOUR, FOUR, {**FOUR, "ap-halle": "gone"}, {**FOUR, "ap-halle": "gone"}):
        svc.on_points("t", "gy", controller_poll(aps, clock.t))
        clock.t += 60
    (ctl,) = svc.api()["controllers"]
    assert (ctl["controller"], ctl["expected"], ctl["joined"], ctl["not_joined"]) == (
        "wlc", 4, 3, ["ap-halle"])
    svc.store.close()
    svc = service()  # a restart: the four are still expected, the failure count kept
    assert sorted(a.name for a in svc.engine.aps.aps.values()) == sorted(FOUR)
    assert svc.engine.states["t/gy/ap/ap-halle"].suspect
    svc.on_points("t", "gy", controller_poll({**FOUR, "ap-halle": "gone"}, clock.t))
    clock.t += 60
    svc.on_points("t", "gy", controller_poll({**FOUR, "ap-halle": "gone"}, clock.t))
    assert svc.engine.states["t/gy/ap/ap-halle"].bad  # second missed poll, across the restart
    # The CLI's request (another connection on the same file) is applied by a tick.
    other = type(svc.store)(svc.store.path)
    other.request_forget("t/gy/ap/ap-halle", clock.t)
    other.close()
    svc.tick()
    assert "t/gy/ap/ap-halle" not in svc.engine.aps.aps
    assert not svc.store.forget_requests()
    assert [a["name"] for a in svc.store.learned_aps()] == ["ap-aula", "ap-r101", "ap-r102"]
    svc.store.close()


@pytest.mark.parametrize(("text", "problem"), [
    ("ap_forget_days: 0\n", "ap_forget_days"),
    ("ap_forget_day: 7\n", "ap_forget_day"),
])
def test_ap_forget_days_is_read_strictly(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text(text)
    issues = IssueList()
    read_alerting_settings(MappingReader(compose_file(path, issues), "alerting", issues))
    with pytest.raises(ConfigError) as err:
        issues.raise_if_any()
    assert problem in str(err.value)


def test_ap_forget_days_default_and_value(tmp_path: Path) -> None:
    assert AlertingSettings().ap_forget_days == 7
    path = tmp_path / "alerting.yaml"
    path.write_text("ap_forget_days: 2.5\n")
    issues = IssueList()
    s = read_alerting_settings(MappingReader(compose_file(path, issues), "alerting", issues))
    issues.raise_if_any()
    assert s.ap_forget_days == 2.5


# -- the controller profiles' own points ----------------------------------------------

def as_controller(points: list[Point], t: float) -> list[Point]:
    """Points the profile made for the test device ``dev1``, as from ``wlc`` at ``t``."""
    return [Point(p.measurement, {**p.tags, "device": "wlc", "role": "controller"}, p.fields,
                  int(t * 1e9)) for p in points]


@pytest.mark.parametrize(("profile", "recording", "up", "not_up"), [
    ("aruba_controller", "aruba", ["Test-H", "WRD-EN", "WRD-ES", "WRD-WS-1"], {}),
    ("ruckus_sz", "ruckus-sz.snmprec", ["AP-Aula", "AP-Raum-101"],
     {"AP-Sporthalle": "Disconnect"}),
    ("cisco_9800", "cisco-9800.snmprec", ["AP-Mensa", "AP-Physik-2OG", "AP-Turnhalle"], {}),
    ("cisco_wlc", "cisco", 226, {}),
    # The unnamed T350 is named by its MAC in both tables.
    ("ruckus_zd", "ruckus-zd.snmprec", ["AP-Aula", "AP-Raum-204"],
     {"00:24:82:aa:bb:03": "disconnected"}),
    ("aruba_instant", "instant", ["instant-ap-src-1"], {}),  # the real dump's one AP
    ("aruba_instant", "instant-down", [], {"instant-ap-src-1": "down"}),
    # LANCOM WLC: connected APs are the active-radios rows, AP-Sporthalle is missing.
    ("lancom_wlc", "lancom-wlc.snmprec", ["AP-Aula", "AP-Raum-204"],
     {"AP-Sporthalle": "missing"}),
])
def test_controller_profiles_normalise_the_vendor_status_to_up(
        profile: str, recording: str, up: list[str] | int, not_up: dict[str, str]) -> None:
    points = sdev.poll(recording_text(recording), [profile])
    ups = sorted(p.tags["ap"] for p in sdev.of(points, "ap") if p.fields.get("up") == 1)
    assert ups == up if isinstance(up, list) else len(ups) == up
    # Every up point names its AP and MAC, and nothing else is in it.
    assert all(set(p.fields) == {"up"} and p.tags.get("ap_mac") for p in sdev.of(points, "ap")
               if "up" in p.fields)
    # APs the controller lists in another state: their status, and no up point.
    listed = {p.tags["ap"]: p.fields["status"] for p in sdev.of(points, "ap")
              if "status" in p.fields}
    assert {ap: st for ap, st in listed.items() if ap not in ups} == not_up


def recording_text(name: str) -> str:
    if name == "aruba":
        return sdev.packaged("network/wifi/aruba-7010")
    if name == "cisco":
        return sdev.subset(sdev.packaged("network/appliance/cisco-controller"),
                           *sdev.WLC_TREES)
    if name == "instant":
        return sdev.dump("aruba-instant.snmprec")
    if name == "instant-down":
        return replaced(sdev.dump("aruba-instant.snmprec"), INSTANT_UP, INSTANT_DOWN)
    return (sdev.DATA / name).read_text()


def replaced(text: str, old: str, new: str) -> str:
    """``text`` with one recording line changed (it must be there)."""
    assert old in text
    return text.replace(old, new)


#: aiAPStatus of the Instant dump's AP (70:3a:0e:c9:c2:46): up (1), and down (2).
INSTANT_UP = "1.3.6.1.4.1.14823.2.3.3.1.2.1.1.11.112.58.14.201.194.70|2|1"
INSTANT_DOWN = INSTANT_UP[:-1] + "2"


#: ruckusZDWLANAPStatus of AP-Raum-204 (00:24:82:aa:bb:02): connected (1), disconnected (0).
ZD_UP = "1.3.6.1.4.1.25053.1.2.2.1.1.2.1.1.3.0.36.130.170.187.2|2|1"


@pytest.mark.parametrize(("profile", "recording", "learned", "up_line", "down_line",
                          "status", "clients"), [
    # AP-Raum-101 (row .2) disconnects from the SmartZone.
    ("ruckus_sz", "ruckus-sz.snmprec", ["AP-Aula", "AP-Raum-101"],
     "1.16.0.51.88.17.34.2|4|Connect", "1.16.0.51.88.17.34.2|4|Disconnect", "Disconnect", 11),
    ("ruckus_zd", "ruckus-zd.snmprec", ["AP-Aula", "AP-Raum-204"],
     ZD_UP, ZD_UP[:-1] + "0", "disconnected", 12),
    ("aruba_instant", "instant", ["instant-ap-src-1"], INSTANT_UP, INSTANT_DOWN, "down", 0),
], ids=["ruckus_sz", "ruckus_zd", "aruba_instant"])
def test_an_ap_the_real_profile_reports_not_up_is_an_ap_outage_with_its_status(
        tmp_path: Path, profile: str, recording: str, learned: list[str], up_line: str,
        down_line: str, status: str, clients: int) -> None:
    h = Harness(tmp_path, devices=controller_devices())
    text = recording_text(recording)
    for _ in range(2):
        h.feed(*as_controller(sdev.poll(text, [profile]), h.now))
        h.advance(60)
    assert sorted(a.name for a in h.engine.aps.aps.values()) == learned
    broken = replaced(text, up_line, down_line)
    for _ in range(4):
        h.feed(*as_controller(sdev.poll(broken, [profile]), h.now))
        h.advance(60)
    (ev,) = h.kinds(OPEN)
    assert ev.outage.name == learned[-1]
    assert ev.outage.detail["status"] == status and ev.outage.detail["clients"] == clients


#: AP-Raum-204 (00:a0:57:11:22:02) in the LANCOM WLC recording: its one active radio row
#: (name, valid, clients), and the missing-AP row (name, valid) the WLC lists instead
#: once the AP is gone.
WLC_RAUM_204_ACTIVE = [f"1.3.6.1.4.1.2356.11.1.73.9.2.1.{col}.0.160.87.17.34.2.0|{val}"
                       for col, val in ((3, "4|AP-Raum-204"), (5, "2|1"), (10, "2|5"))]
WLC_RAUM_204_MISSING = [f"1.3.6.1.4.1.2356.11.1.73.9.1.1.{col}.0.160.87.17.34.2|{val}"
                        for col, val in ((3, "4|AP-Raum-204"), (5, "2|1"))]


def test_an_ap_the_lancom_wlc_moves_to_its_missing_list_is_an_ap_outage(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, devices=controller_devices())
    text = recording_text("lancom-wlc.snmprec")
    for _ in range(2):
        h.feed(*as_controller(sdev.poll(text, ["lancom_wlc"]), h.now))
        h.advance(60)
    assert sorted(a.name for a in h.engine.aps.aps.values()) == ["AP-Aula", "AP-Raum-204"]
    broken = text
    for line in WLC_RAUM_204_ACTIVE:
        broken = replaced(broken, line + "\n", "")
    # snmpsim needs OID order, the fake client sorts itself: appending is enough here.
    broken += "\n".join(WLC_RAUM_204_MISSING) + "\n"
    for _ in range(4):
        h.feed(*as_controller(sdev.poll(broken, ["lancom_wlc"]), h.now))
        h.advance(60)
    (ev,) = h.kinds(OPEN)
    assert ev.outage.name == "AP-Raum-204"
    # Status from the missing list, clients the last count seen while it was up.
    assert ev.outage.detail["status"] == "missing" and ev.outage.detail["clients"] == 5


# -- the mail ---------------------------------------------------------------------------

@pytest.mark.parametrize(("lang", "words"), [
    ("de", ["Access-Point ap-halle DOWN", "Controller: wlc", "Clients zuletzt: 23",
            "Befund: fehlt in der AP-Liste des Controllers wlc (2 Abfragen)"]),
    ("en", ["access point ap-halle DOWN", "Controller: wlc", "Last known clients: 23",
            "missing from the AP table of controller wlc"]),
])
def test_the_mail_names_the_ap_its_controller_and_last_known_clients(
        lang: str, words: list[str]) -> None:
    o = Outage(id=9, key="t/gy/ap/ap-halle", tenant="t", site="gy", kind="ap",
               name="ap-halle", started=T0, opened=T0 + 60, notified=True,
               detail={"code": "ap_missing", "controller": "wlc", "clients": 23, "polls": 2})
    msg = mail_formatter(lang).build(MailOrder(DOWN, "t", o, at=T0 + 60), ("it@t.example",))
    text = f"{msg['Subject']}\n{msg.get_content()}"
    for w in words:
        assert w in text
