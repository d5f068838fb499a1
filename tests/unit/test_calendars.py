"""School calendars (NRW data, lesson time, DST) and the alerting keys of the inventory."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schoolnet.calendars import (
    SchoolCalendar,
    builtin_regions,
    load_holiday_file,
    resolve_holiday_file,
)
from schoolnet.configfile import ConfigError
from schoolnet.inventory import load_inventory
from tests.outage_support import school_devices, write_site, write_tenant

BERLIN = ZoneInfo("Europe/Berlin")
NW = load_holiday_file(resolve_holiday_file("de-nw"))  # type: ignore[arg-type]


def easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


@pytest.mark.parametrize("year", [2025, 2026, 2027])
def test_nrw_public_holidays_match_the_rules(year: int) -> None:
    e = easter(year)
    expected = {dt.date(year, 1, 1), e - dt.timedelta(2), e + dt.timedelta(1),
                dt.date(year, 5, 1), e + dt.timedelta(39), e + dt.timedelta(50),
                e + dt.timedelta(60), dt.date(year, 10, 3), dt.date(year, 11, 1),
                dt.date(year, 12, 25), dt.date(year, 12, 26)}
    assert {d for d in NW.public if d.year == year} == expected
    assert year in NW.years


def test_nrw_school_holidays_cover_the_years() -> None:
    for year in (2025, 2026, 2027):
        blocks = [h for h in NW.school if h.start.year == year]
        assert {h.name for h in blocks} >= {"Osterferien", "Sommerferien", "Herbstferien"}
        summer = next(h for h in blocks if h.name == "Sommerferien")
        assert 40 <= (summer.end - summer.start).days <= 45
    assert "de-nw" in builtin_regions()


CAL = SchoolCalendar(holidays=[NW])


@pytest.mark.parametrize(("when", "lesson"), [
    (dt.datetime(2025, 11, 24, 7, 29), False),   # Monday before lessons
    (dt.datetime(2025, 11, 24, 7, 30), True),
    (dt.datetime(2025, 11, 24, 15, 59), True),
    (dt.datetime(2025, 11, 24, 16, 0), False),
    (dt.datetime(2025, 11, 22, 10, 0), False),   # Saturday
    (dt.datetime(2025, 10, 3, 10, 0), False),    # Tag der Deutschen Einheit
    (dt.datetime(2026, 7, 28, 10, 0), False),    # Sommerferien
    (dt.datetime(2026, 9, 2, 10, 0), True),      # first school day after them
    (dt.datetime(2026, 5, 26, 10, 0), False),    # Pfingstferien (one day)
])
def test_lesson_time(when: dt.datetime, lesson: bool) -> None:
    assert CAL.is_lesson_time(when.replace(tzinfo=BERLIN).timestamp()) is lesson


def test_day_off_names_the_reason() -> None:
    assert CAL.day_off(dt.date(2025, 12, 24)) == "Weihnachtsferien"
    assert CAL.day_off(dt.date(2025, 12, 25)) == "1. Weihnachtstag"
    assert CAL.day_off(dt.date(2025, 11, 23)) == "weekend"
    assert CAL.day_off(dt.date(2025, 11, 24)) is None


def test_next_digest_time_keeps_local_time_across_daylight_saving() -> None:
    sat = dt.datetime(2026, 3, 28, 8, 0, tzinfo=BERLIN).timestamp()  # DST starts on Sunday
    nxt = CAL.next_time(sat, dt.time(7, 0), ("mon", "tue", "wed", "thu", "fri"))
    assert dt.datetime.fromtimestamp(nxt, BERLIN) == dt.datetime(2026, 3, 30, 7, 0,
                                                                 tzinfo=BERLIN)


# -- the alerting keys of the inventory -----------------------------------------------

def test_thresholds_defaults_tenant_site(tmp_path: Path) -> None:
    write_tenant(tmp_path, "t", thresholds={"hold_down_s": 120, "device_failed_polls": 3})
    write_site(tmp_path, "t", "a", school_devices())
    write_site(tmp_path, "t", "b", school_devices(), thresholds={"hold_down_s": 30})
    inv = load_inventory(tmp_path)
    a, b = inv.site("t", "a"), inv.site("t", "b")
    assert a is not None and b is not None
    assert (a.thresholds.hold_down_s, a.thresholds.device_failed_polls) == (120, 3)
    assert (b.thresholds.hold_down_s, b.thresholds.device_failed_polls) == (30, 3)
    assert a.thresholds.flap_quiet_s == 600  # built-in default


def test_alerting_settings_are_read(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "extra.yml").write_text(textwrap.dedent("""\
        region: herne-extra
        name: Bewegliche Ferientage Herne
        school_holidays:
          - {name: Rosenmontag, start: 2026-02-16, end: 2026-02-16}
        """))
    write_tenant(tmp_path, "t", alerting={
        "recipients": ["a@b.example"], "language": "en", "lesson_hours": "08:00-13:00",
        "holidays": ["de-nw", "extra.yml"], "policy": {"outside_lesson_hours": "never"},
        "maintenance": [{"sites": ["s"], "start": "2026-02-01 06:00",
                         "end": "2026-02-01 09:00", "reason": "Umbau"}]})
    write_site(tmp_path, "t", "s", school_devices())
    a = load_inventory(tmp_path).tenants["t"].alerting
    assert (a.recipients, a.language, a.policy_outside) == (("a@b.example",), "en", "never")
    cal = a.calendar()
    assert cal.day_off(dt.date(2026, 2, 16)) == "Rosenmontag"
    assert not cal.is_lesson_time(dt.datetime(2026, 2, 17, 13, 30, tzinfo=BERLIN).timestamp())
    (w,) = a.maintenance
    assert w.covers("s", dt.datetime(2026, 2, 1, 7, 0, tzinfo=BERLIN).timestamp())
    assert not w.covers("other", dt.datetime(2026, 2, 1, 7, 0, tzinfo=BERLIN).timestamp())


@pytest.mark.parametrize(("alerting", "message"), [
    ({"recipients": ["not an address"]}, "alerting.recipients: 'not an address' is not a plain"),
    ({"recipients": ["a@b.example\r\nBcc: x@y.example"]}, "is not a plain mail address"),
    ({"language": "fr"}, "alerting.language: must be one of de, en"),
    ({"lesson_hours": "16:00-07:30"}, "alerting.lesson_hours: '16:00-07:30' is not a span"),
    ({"holidays": ["de-xx"]}, "alerting.holidays: 'de-xx' is neither a built-in region"),
    ({"policy": {"outside_lesson_hours": "sometimes"}}, "must be one of immediately, digest"),
    ({"timezone": "Mars/Olympus"}, "alerting.timezone: 'Mars/Olympus' is not a known"),
    ({"maintenance": [{"start": "2026-02-01 09:00", "end": "2026-02-01 06:00"}]},
     "alerting.maintenance[0].end: must be after start"),
    ({"recipient": ["a@b.example"]}, "alerting.recipient: unknown key"),
])
def test_alerting_mistakes_name_file_line_and_field(tmp_path: Path, alerting: dict[str, object],
                                                    message: str) -> None:
    write_tenant(tmp_path, "t", alerting=alerting)
    write_site(tmp_path, "t", "s", school_devices())
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path)
    assert message in str(info.value)
    assert str(tmp_path / "t" / "tenant.yaml") + ":" in str(info.value)


def test_unknown_threshold_is_an_error(tmp_path: Path) -> None:
    write_tenant(tmp_path, "t")
    write_site(tmp_path, "t", "s", school_devices(), thresholds={"hold_dwn_s": 5})
    with pytest.raises(ConfigError, match=r"s.yaml:\d+: thresholds.hold_dwn_s: unknown key"):
        load_inventory(tmp_path)
