"""Alerting settings in the inventory: thresholds, and a tenant's recipients and calendar.

Two places in ``site-configs/`` (both optional, strict like the rest of the inventory):

``tenant.yaml``::

    defaults:
      thresholds: {hold_down_s: 60, device_failed_polls: 2}   # every site of the tenant
    alerting:
      recipients: [schul-it@herne.example]
      language: de                       # de | en
      timezone: Europe/Berlin
      lesson_hours: "07:30-16:00"
      school_days: [mon, tue, wed, thu, fri]
      holidays: [de-nw]                  # built-in region(s) and/or own files
      policy: {lesson_hours: immediately, outside_lesson_hours: digest, maintenance: never}
      digest_at: "07:00"
      digest_days: [mon, tue, wed, thu, fri]
      reminder_every_h: 24               # 0: no reminders
      maintenance:
        - {sites: [gy-pestalozzi], start: "2025-11-24 06:00", end: "2025-11-24 09:00",
           reason: Switch-Tausch}

``<site>.yaml``: ``thresholds:`` (deep-merged over the tenant's ``defaults.thresholds``,
which are merged over the built-in defaults of :class:`Thresholds`).
See docs/outages.md for what every threshold means.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from schoolnet.calendars import (
    WEEKDAYS,
    SchoolCalendar,
    check_zone,
    load_holiday_file,
    parse_clock,
    read_holiday_file,
    resolve_holiday_file,
)
from schoolnet.configfile import IssueList, MappingReader, one_of

POLICIES: Final = ("immediately", "digest", "never")
LANGUAGES: Final = ("de", "en")


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When a condition counts as an outage; defaults < tenant < site."""

    #: A condition must hold this long before an outage opens.
    hold_down_s: float = 60.0
    #: An open outage stays open at least this long (a blip does not mail twice).
    min_open_s: float = 60.0
    #: This many condition changes within flap_window_s make an entity flapping ...
    flap_transitions: int = 6
    flap_window_s: float = 300.0
    #: ... and it stays flapping (one mail, then quiet) until stable for this long.
    flap_quiet_s: float = 600.0
    #: Site connection: no message for this many agent poll intervals is an outage.
    silent_intervals: float = 3.0
    #: Device: this many consecutive polls with reachable=0.
    device_failed_polls: int = 2
    #: Monitored port: this many consecutive polls oper-down while admin-up.
    interface_failed_polls: int = 1
    #: Access points of a site: at least this share and this many APs down.
    ap_down_share: float = 0.3
    ap_min_down: int = 2
    #: Uplink degraded: mean loss or mean RTT over the external targets above these ...
    loss_pct: float = 5.0
    latency_ms: float = 150.0
    #: ... for this long.
    degraded_for_s: float = 300.0
    #: Uplink throughput below this share of the contract ...
    throughput_min_ratio: float = 0.5
    #: ... on this many consecutive tests (of one direction).
    throughput_failed_tests: int = 2
    #: Uplink saturated: utilization above this, in lesson hours, for this long.
    saturation_pct: float = 90.0
    saturated_for_s: float = 600.0
    #: Points older than this (replayed from an agent's spool) do not change outages.
    max_point_age_s: float = 300.0


_INT_FIELDS: Final = frozenset(f.name for f in fields(Thresholds) if f.type == "int")


def _non_negative(val: float) -> str | None:
    return None if val >= 0 else "must be 0 or more"


def _at_least_one(val: int) -> str | None:
    return None if val >= 1 else "must be at least 1"


def _share(val: float) -> str | None:
    return None if 0 < val <= 1 else "must be a share between 0 (exclusive) and 1"


def read_thresholds(r: MappingReader) -> Thresholds:
    """Read a (merged) ``thresholds`` mapping; unknown keys are errors."""
    d = Thresholds()
    values: dict[str, Any] = {}
    for f in fields(Thresholds):
        default = getattr(d, f.name)
        if f.name in _INT_FIELDS:
            values[f.name] = r.value(f.name, int, default, _at_least_one)
        elif f.name in ("ap_down_share", "throughput_min_ratio"):
            values[f.name] = r.value(f.name, float, default, _share)
        else:
            values[f.name] = r.value(f.name, float, default, _non_negative)
    r.finish()
    return Thresholds(**values)


@dataclass(frozen=True, kw_only=True)
class MaintenanceWindow:
    """A time span in which outages of some sites (or all) are recorded, not urgent."""

    start: float  # seconds since the epoch
    end: float
    sites: tuple[str, ...] = ()  # empty: every site of the tenant
    reason: str = ""
    id: str = ""  # "config:<n>" for windows from tenant.yaml, a number for CLI ones

    def covers(self, site: str, ts: float) -> bool:
        """Whether this window applies to ``site`` at ``ts``."""
        return self.start <= ts < self.end and (not self.sites or site in self.sites)


@dataclass(frozen=True, kw_only=True)
class TenantAlerting:
    """Who gets a tenant's mail, in which language, and when it is urgent."""

    recipients: tuple[str, ...] = ()
    language: str = "de"
    timezone: str = "Europe/Berlin"
    lesson_start: dt.time = dt.time(7, 30)
    lesson_end: dt.time = dt.time(16, 0)
    school_days: tuple[str, ...] = WEEKDAYS[:5]
    holidays: tuple[Path, ...] = ()
    #: Mail policy per situation: lesson hours, outside lesson hours, maintenance.
    policy_lesson: str = "immediately"
    policy_outside: str = "digest"
    policy_maintenance: str = "never"
    digest_at: dt.time = dt.time(7, 0)
    digest_days: tuple[str, ...] = WEEKDAYS[:5]
    reminder_every_h: float = 24.0
    maintenance: tuple[MaintenanceWindow, ...] = field(default_factory=tuple)

    def calendar(self) -> SchoolCalendar:
        """This tenant's :class:`SchoolCalendar`."""
        return SchoolCalendar(timezone=self.timezone, lesson_start=self.lesson_start,
                              lesson_end=self.lesson_end, school_days=self.school_days,
                              holidays=[load_holiday_file(p) for p in self.holidays])


def _email(val: str) -> str | None:
    # Deliberately narrow: one address, no display name, no whitespace or line breaks
    # (the address goes into To: and the SMTP envelope).
    local, at, domain = val.partition("@")
    bad = set(val) & set(" \t\r\n<>,;\"'()[]\\")
    if not at or not local or "." not in domain or bad or len(val) > 254:
        return f"{val!r} is not a plain mail address (name@example.org)"
    return None


def _weekdays(r: MappingReader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    days = r.string_list(key, default)
    for d in days:
        if d not in WEEKDAYS:
            r.issues.add(r.node_of(key), r.sub(key), f"{d!r} is not one of {', '.join(WEEKDAYS)}")
            return default
    return days


def _clock(r: MappingReader, key: str, default: dt.time) -> dt.time:
    text = r.value(key, str, None)
    if text is None:
        return default
    t = parse_clock(text)
    if t is None:
        r.issues.add(r.node_of(key), r.sub(key), f"{text!r} is not a time (HH:MM)")
        return default
    return t


def parse_local_datetime(val: object, zone: str) -> float | None:
    """A YAML datetime or ``"YYYY-MM-DD HH:MM"`` in ``zone`` → epoch seconds (or None)."""
    if isinstance(val, str):
        try:
            val = dt.datetime.fromisoformat(val.strip())
        except ValueError:
            return None
    if not isinstance(val, dt.datetime):
        return None
    if val.tzinfo is None:
        val = val.replace(tzinfo=ZoneInfo(zone))
    return val.timestamp()


def _read_windows(r: MappingReader, zone: str) -> tuple[MaintenanceWindow, ...]:
    out = []
    for i, node in enumerate(r.sequence("maintenance")):
        path = f"{r.sub('maintenance')}[{i}]"
        wr = MappingReader(node, path, r.issues)
        sites = wr.string_list("sites", ())
        raw = {k: wr.value(k, (str, dt.datetime)) for k in ("start", "end")}
        reason = wr.value("reason", str, "")
        wr.finish()
        times = {}
        for k, v in raw.items():
            times[k] = parse_local_datetime(v, zone) if v is not None else None
            if v is not None and times[k] is None:
                r.issues.add(wr.node_of(k), f"{path}.{k}", f"{v!r} is not a date and time")
        if times["start"] is not None and times["end"] is not None:
            if times["end"] <= times["start"]:
                r.issues.add(node, f"{path}.end", "must be after start")
                continue
            out.append(MaintenanceWindow(start=times["start"], end=times["end"], sites=sites,
                                         reason=reason, id=f"config:{i + 1}"))
    return tuple(out)


def read_tenant_alerting(r: MappingReader, base: Path) -> TenantAlerting:
    """Read ``alerting:`` of a tenant file (absent: defaults, no recipients)."""
    d = default_alerting()
    if r.node is None or not r.ok:
        r.finish()
        return d
    recipients = r.string_list("recipients", ())
    for addr in recipients:
        err = _email(addr)
        if err:
            r.issues.add(r.node_of("recipients"), r.sub("recipients"), err)
    zone = r.value("timezone", str, d.timezone, check_zone)
    start, end = d.lesson_start, d.lesson_end
    hours = r.value("lesson_hours", str, None)
    if hours is not None:
        a, _, b = hours.partition("-")
        ta, tb = parse_clock(a), parse_clock(b)
        if ta is None or tb is None or tb <= ta:
            r.issues.add(r.node_of("lesson_hours"), r.sub("lesson_hours"),
                         f"{hours!r} is not a span like 07:30-16:00")
        else:
            start, end = ta, tb
    holidays: list[Path] = []
    for ref in r.string_list("holidays", ("de-nw",)):
        if ref == "none":  # a tenant outside Germany, or one that wants no holidays
            continue
        path = resolve_holiday_file(ref, base)
        if path is None:
            r.issues.add(r.node_of("holidays"), r.sub("holidays"),
                         f"{ref!r} is neither a built-in region nor a file")
        elif read_holiday_file(path, r.issues) is not None:
            holidays.append(path)
    pol = r.mapping("policy")
    check = one_of(*POLICIES)
    policy = (pol.value("lesson_hours", str, d.policy_lesson, check),
              pol.value("outside_lesson_hours", str, d.policy_outside, check),
              pol.value("maintenance", str, d.policy_maintenance, check))
    pol.finish()
    a = TenantAlerting(
        recipients=tuple(addr for addr in recipients if not _email(addr)),
        language=r.value("language", str, d.language, one_of(*LANGUAGES)),
        timezone=zone,
        lesson_start=start,
        lesson_end=end,
        school_days=_weekdays(r, "school_days", d.school_days),
        holidays=tuple(holidays),
        policy_lesson=policy[0],
        policy_outside=policy[1],
        policy_maintenance=policy[2],
        digest_at=_clock(r, "digest_at", d.digest_at),
        digest_days=_weekdays(r, "digest_days", d.digest_days),
        reminder_every_h=r.value("reminder_every_h", float, d.reminder_every_h, _non_negative),
        maintenance=_read_windows(r, zone),
    )
    r.finish()
    return a


def default_alerting() -> TenantAlerting:
    """The settings of a tenant without ``alerting:`` (NRW holidays, no recipients)."""
    path = resolve_holiday_file("de-nw")
    return TenantAlerting(holidays=(path,) if path else ())


__all__ = [
    "LANGUAGES",
    "POLICIES",
    "IssueList",
    "MaintenanceWindow",
    "TenantAlerting",
    "Thresholds",
    "default_alerting",
    "parse_local_datetime",
    "read_tenant_alerting",
    "read_thresholds",
]
