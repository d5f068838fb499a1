"""When a site runs its throughput tests: fixed local times, outside lesson hours.

Pure logic, time passed in (seconds since the epoch), so a whole school year is tested
in milliseconds. A throughput test fills the school's line for its duration: it must
never run while pupils use it. Three guards, each of which alone keeps tests out of
lessons:

1. the config loader rejects a ``schedule`` whose slot (plus spread, retries and the
   tests themselves) reaches into the tenant's lesson hours;
2. :meth:`ThroughputSchedule.due` refuses any moment for which the tenant calendar says
   "lesson time", now or by the time the tests would end;
3. the calendar knows school days and holidays, so a Saturday or the summer holidays
   are free, and a school day is not.

Each site starts at its own fixed offset within ``spread_min`` after a slot (derived from
its tenant and site id), so the NOC's iperf3 server sees the sites of a city one after
the other instead of all at 06:30:00. A slot whose test could not start (server busy or
unreachable) stays due for ``window_min`` minutes, then it is given up.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from schoolnet.calendars import WEEKDAYS, SchoolCalendar
from schoolnet.probeconfig import ThroughputSettings

#: How many attempts one slot gets (the first and the retries within its window).
MAX_ATTEMPTS = 3


def site_offset_s(key: str, spread_min: float) -> float:
    """A stable offset in ``[0, spread_min)`` minutes for ``key`` (``tenant/site``), in s."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return (h % 1_000_000) / 1_000_000 * spread_min * 60.0


class ThroughputSchedule:
    """Which slot (if any) is due at a given time; remembers which slots were served."""

    def __init__(self, settings: ThroughputSettings, calendar: SchoolCalendar, *,
                 site_key: str, test_s: float) -> None:
        self.settings = settings
        self.calendar = calendar
        self.offset_s = site_offset_s(site_key, settings.spread_min)
        #: How long the tests of one slot take at most (all directions).
        self.test_s = test_s
        self._days = frozenset(WEEKDAYS.index(d) for d in settings.days)
        self._attempts: dict[float, int] = {}
        self._done: set[float] = set()

    def slots_around(self, now: float) -> list[float]:
        """Start times (epoch s, offset applied) of yesterday's and today's slots."""
        today = self.calendar.local(now).date()
        out = []
        for day in (today - dt.timedelta(days=1), today):
            if day.weekday() not in self._days:
                continue
            for t in self.settings.schedule:
                local = dt.datetime.combine(day, t, self.calendar.tz)
                out.append(local.timestamp() + self.offset_s)
        return out

    def in_lessons(self, now: float) -> bool:
        """Whether a test started at ``now`` would touch lesson time."""
        return self.calendar.is_lesson_time(now) or \
            self.calendar.is_lesson_time(now + self.test_s)

    def due(self, now: float) -> float | None:
        """The slot to serve at ``now`` (its start time), or None.

        A slot is due from its start for ``window_min`` minutes, until it was served or
        used up its attempts — and never when :meth:`in_lessons` says so.
        """
        if self.in_lessons(now):
            return None
        window = self.settings.window_min * 60.0
        for start in self.slots_around(now):
            if start in self._done or self._attempts.get(start, 0) >= MAX_ATTEMPTS:
                continue
            if start <= now <= start + window:
                return start
        return None

    def record(self, slot: float, *, finished: bool) -> None:
        """Note an attempt at ``slot``: ``finished`` (a result, good or bad) or to retry."""
        self._attempts[slot] = self._attempts.get(slot, 0) + 1
        if finished:
            self._done.add(slot)
        # Only yesterday's and today's slots can be due; forget older ones.
        horizon = slot - 3 * 86400.0
        self._done = {s for s in self._done if s > horizon}
        self._attempts = {s: n for s, n in self._attempts.items() if s > horizon}
