"""School calendars: public and school holidays as data, lesson hours, school days.

Holidays are YAML data files, one per region (``de-nw.yaml`` for North Rhine-Westphalia
ships with schoolnet; another state is another file). A tenant names built-in regions
(``de-nw``) or its own files (movable days its schools set themselves) in ``tenant.yaml``
under ``alerting.holidays``; :class:`SchoolCalendar` combines them with the tenant's
lesson hours and school days and answers the one question the outage engine asks:
*is it lesson time now?* Everything takes the time as an argument, so tests never wait.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schoolnet.configfile import ConfigError, IssueList, MappingReader, compose_file

BUILTIN_DIR = Path(__file__).resolve().parent
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class SchoolHoliday:
    """A block of school holidays, first and last day off inclusive."""

    name: str
    start: dt.date
    end: dt.date


@dataclass(frozen=True)
class HolidayData:
    """The holidays of one region (or one tenant's extra file)."""

    region: str
    name: str
    years: tuple[int, ...] = ()
    public: dict[dt.date, str] = field(default_factory=dict)
    school: tuple[SchoolHoliday, ...] = ()
    source: str = ""


def builtin_regions() -> list[str]:
    """Names of the holiday files that ship with schoolnet (``de-nw``, ...)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_holiday_file(ref: str, base: Path | None = None) -> Path | None:
    """The file a ``holidays`` entry names: a built-in region or a path (relative to
    ``base``). None if neither exists."""
    if (BUILTIN_DIR / f"{ref}.yaml").is_file() and "/" not in ref:
        return BUILTIN_DIR / f"{ref}.yaml"
    path = Path(ref)
    if not path.is_absolute() and base is not None:
        path = base / path
    return path if path.is_file() else None


def _date(val: object) -> str | None:
    return None if isinstance(val, dt.date) and not isinstance(val, dt.datetime) else \
        "must be a date (YYYY-MM-DD)"


def read_holiday_file(path: Path, issues: IssueList) -> HolidayData | None:
    """Parse one holiday file strictly; problems go to ``issues`` (file:line: field)."""
    node = compose_file(path, issues)
    if node is None:
        return None
    r = MappingReader(node, "", issues)
    if not r.ok:
        return None
    region = r.value("region", str, path.stem)
    name = r.value("name", str, region)
    r.value("timezone", str, "Europe/Berlin")  # documentation of the dates' zone
    years_node = r.sequence("years")
    years = tuple(int(n.value) for n in years_node if str(n.value).isdigit())
    public: dict[dt.date, str] = {}
    for i, item in enumerate(r.sequence("public_holidays")):
        ir = MappingReader(item, f"public_holidays[{i}]", issues)
        day = ir.value("date", dt.date, check=_date)
        label = ir.value("name", str)
        ir.finish()
        if day is not None and label is not None:
            public[day] = label
    school: list[SchoolHoliday] = []
    for i, item in enumerate(r.sequence("school_holidays")):
        ir = MappingReader(item, f"school_holidays[{i}]", issues)
        label = ir.value("name", str)
        start = ir.value("start", dt.date, check=_date)
        end = ir.value("end", dt.date, check=_date)
        if start is not None and end is not None and end < start:
            issues.add(item, f"school_holidays[{i}].end", "is before start")
        elif label is not None and start is not None and end is not None:
            school.append(SchoolHoliday(label, start, end))
        ir.finish()
    r.finish()
    return HolidayData(region=region, name=name, years=years, public=public,
                       school=tuple(school), source=str(path))


@lru_cache(maxsize=64)
def load_holiday_file(path: Path) -> HolidayData:
    """Load (and cache) one holiday file; raises :class:`ConfigError`."""
    issues = IssueList()
    data = read_holiday_file(path, issues)
    issues.raise_if_any()
    assert data is not None
    return data


def parse_clock(text: str) -> dt.time | None:
    """``"07:30"`` → time(7, 30); ``"24:00"`` → time.max (end of day); None if invalid."""
    if text.strip() == "24:00":
        return dt.time.max
    try:
        return dt.time.fromisoformat(text.strip())
    except ValueError:
        return None


def check_zone(name: str) -> str | None:
    """Check: an IANA time zone name (``Europe/Berlin``)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a known time zone"
    return None


class SchoolCalendar:
    """Lesson hours on school days, minus public and school holidays, in one time zone.

    ``holidays`` may combine several :class:`HolidayData` (the state's file and a
    tenant's own movable days).
    """

    def __init__(self, *, timezone: str = "Europe/Berlin",
                 lesson_start: dt.time = dt.time(7, 30), lesson_end: dt.time = dt.time(16, 0),
                 school_days: Iterable[str] = WEEKDAYS[:5],
                 holidays: Iterable[HolidayData] = ()) -> None:
        self.tz = ZoneInfo(timezone)
        self.lesson_start = lesson_start
        self.lesson_end = lesson_end
        self.school_days = frozenset(WEEKDAYS.index(d) for d in school_days)
        self.public: dict[dt.date, str] = {}
        self.school: list[SchoolHoliday] = []
        self.years: set[int] = set()
        for h in holidays:
            self.public.update(h.public)
            self.school.extend(h.school)
            self.years.update(h.years)

    def local(self, ts: float) -> dt.datetime:
        """The wall-clock time ``ts`` (seconds since the epoch) in this calendar's zone."""
        return dt.datetime.fromtimestamp(ts, self.tz)

    def day_off(self, day: dt.date) -> str | None:
        """Why ``day`` has no lessons (holiday name, ``weekend``), or None on a school day."""
        if day in self.public:
            return self.public[day]
        for h in self.school:
            if h.start <= day <= h.end:
                return h.name
        if day.weekday() not in self.school_days:
            return "weekend"
        return None

    def is_school_day(self, day: dt.date) -> bool:
        """Whether ``day`` has lessons at all."""
        return self.day_off(day) is None

    def is_lesson_time(self, ts: float) -> bool:
        """Whether ``ts`` falls in lesson hours of a school day."""
        t = self.local(ts)
        if not self.is_school_day(t.date()):
            return False
        now = t.time()
        # "24:00" is time.max: the last microsecond of the day still counts.
        return self.lesson_start <= now < self.lesson_end or now == self.lesson_end == dt.time.max

    def covers(self, day: dt.date) -> bool:
        """Whether the holiday data covers ``day``'s year (False: holidays are unknown)."""
        return not self.years or day.year in self.years

    def next_time(self, after: float, at: dt.time, days: Iterable[str] = WEEKDAYS) -> float:
        """The first local time ``at`` strictly after ``after`` on one of ``days``.

        Computed on the local calendar (not +86400 s), so a daylight-saving change keeps
        a 07:00 digest at 07:00.
        """
        allowed = frozenset(WEEKDAYS.index(d) for d in days)
        start = self.local(after)
        for i in range(0, 15):
            day = start.date() + dt.timedelta(days=i)
            if day.weekday() not in allowed:
                continue
            cand = dt.datetime.combine(day, at, self.tz).timestamp()
            if cand > after:
                return cand
        raise ValueError("no allowed day in the next two weeks")


def calendar_from_files(files: Iterable[Path], **kwargs: object) -> SchoolCalendar:
    """A :class:`SchoolCalendar` from holiday files (cached) and lesson settings."""
    return SchoolCalendar(holidays=[load_holiday_file(p) for p in files], **kwargs)  # type: ignore[arg-type]


__all__ = [
    "ConfigError",
    "HolidayData",
    "SchoolCalendar",
    "SchoolHoliday",
    "builtin_regions",
    "calendar_from_files",
    "check_zone",
    "load_holiday_file",
    "parse_clock",
    "read_holiday_file",
    "resolve_holiday_file",
]
