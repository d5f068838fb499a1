"""The SNMP poller: one :class:`~agent.source.Source` per device of a site.

:func:`build_sources` is what the agent runtime calls. All sources of a site share one
SNMP client (one pysnmp engine, see agent/snmp/client.py) and one semaphore that bounds
how many devices are polled at once (``site.agent.snmp_concurrency``). Each source's
``collect`` runs one poll of its device:

1. the scalar groups of its profiles (sysDescr, sysUpTime, …) with one GET each;
2. every table, its columns walked in parallel (agent/snmp/walk.py); fallback columns
   (32-bit counters, ifDescr, ifSpeed) only for rows that lack the preferred one;
3. points: ``device`` (reachable, poll_ms, the system fields), one per table row
   (``interface``) with rates from agent/snmp/rates.py, and one ``snmp_error`` per group
   that failed — beside whatever the other groups got.

How far a poll goes when requests get no answer (a timeout, or no usable answer: a
security failure, malformed datagrams). A *group* is a scalar group or a table:

* **Nothing answered yet:** the first request of the poll got no answer, so the device
  is unreachable: the poll ends there with ``reachable=0`` and one ``snmp_error``
  (asking the remaining groups would only multiply the timeout).
* **The device has answered in this poll:** a group that then gets no answer costs
  that group only: one ``snmp_error`` for it (``timeout``), and the poll goes on with
  the next group. A device whose ENTITY-SENSOR or LLDP table is slow keeps its
  interfaces.
* **Two groups in a row without an answer** (no answer in between): the device most
  likely went away during the poll. The rest of the poll is skipped, with one
  ``snmp_error`` ``skipped`` per group not asked, so nothing goes missing silently.
  A group that also got no answer on its previous poll does not count here: its
  silence is old news, not a sign that the device left, and two permanently slow
  tables next to each other must not starve the tables after them.
* **Bounded cost:** a group that got no answer on its last poll (where the device did
  answer) is asked with ``retries=0`` until it answers again, so a table that never
  answers costs one timeout per poll, not ``retries + 1``. Likewise a device that was
  unreachable on its last poll is asked without retries until it answers again, so a
  dead device holds its semaphore slot for one timeout.
* **A table cut off mid-walk** (some GETBULKs answered, then a timeout) yields no rows:
  rows would lack columns (an ``ifname`` lookup not yet read makes a row a different
  series), fallback columns would be read for rows that are merely cut off, and an
  ``aggregate`` table (clients per SSID) would undercount without saying so. A row is
  complete or absent; the ``snmp_error`` message says how many requests had been
  answered, and the answers still count as the device having answered. The table's
  rate baselines are kept, so its next good poll gives rates over the gap.

Limit: the first group decides whether the device is reachable, so a device whose
*first* group never answers is reported unreachable on every poll. Scalar groups come
before tables, and the ``system`` group (one GET) is what devices answer first and
fastest; a profile set without scalar groups starts with its first table.

Timestamps are ``now_ns`` (when the runtime started the gather) plus the monotonic time
that passed since, taken when each group's first request goes out, so rates use the time
their counters were really read even when the device waited for a semaphore slot.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from agent.snmp.client import Oid, PysnmpClient, SnmpClient, SnmpError, Target, Value
from agent.snmp.convert import Row, aggregate_rows, build_rows, convert, missing_targets
from agent.snmp.detect import Detection, Rules, load_rules, probe, uses_auto
from agent.snmp.profile import PROFILE_DIR, Profile, ScalarGroup, Table, load_profiles, resolve
from agent.snmp.rates import RateSpec, RateTracker
from agent.snmp.walk import MAX_REPETITIONS, get_scalars, walk_columns
from agent.source import Source
from schoolnet.inventory import Device, Site
from schoolnet.wire import DEFAULT_LIMITS, FieldValue, Limits, Point

T = TypeVar("T")


class SharedClient:
    """One SNMP client shared by the sources of a site; closed when the last lets go."""

    def __init__(self, client: SnmpClient, users: int) -> None:
        self.client = client
        self._users = users

    async def release(self) -> None:
        """One source is done with the client; the last one closes it."""
        self._users -= 1
        if self._users == 0:
            await self.client.close()


@dataclass
class PollStats:
    """Protocol counters of one device source since it was built (self-metrics, bench).

    ``varbinds`` counts the values received that belong to what was asked for (not the
    end-of-column overshoot of a GETBULK): the figure to divide CPU time by.
    """

    polls: int = 0
    requests: int = 0
    varbinds: int = 0
    errors: int = 0
    last_poll_ms: float = 0.0


class SnmpDeviceSource:
    """Polls one device with its profiles; ``name`` is ``snmp:<device>``."""

    def __init__(
        self,
        device: Device,
        profiles: Sequence[Profile],
        shared: SharedClient,
        limit: asyncio.Semaphore,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits = DEFAULT_LIMITS,
        max_repetitions: int = MAX_REPETITIONS,
        auto: tuple[Rules, Mapping[str, Profile]] | None = None,
    ) -> None:
        self.name = f"snmp:{device.name}"
        self.device = device
        #: ``profile: auto``: the rules and every known profile; detection runs at the
        #: first poll and again after the device rebooted.
        self._auto = auto
        self._explicit = tuple(profiles)
        self.detection: Detection | None = None
        self._detect_due = auto is not None
        self._last_uptime: float | None = None
        self._use(profiles)
        self._shared = shared
        self._client = shared.client
        self._limit = limit
        self._clock = clock
        self._limits = limits
        self._reps = max_repetitions
        self._tags = {"device": device.name, "role": device.role}
        if device.vendor:  # tag values must not be empty: no vendor, no tag
            self._tags["vendor"] = device.vendor
        self._tracker = RateTracker()
        self._failures: dict[str, int] = {}
        self._down = False
        #: Groups that got no answer on their last poll: asked without retries.
        self._silent_groups: set[str] = set()
        self._closed = False
        self.stats = PollStats()

    def _use(self, profiles: Sequence[Profile]) -> None:
        self.profiles = tuple(profiles)
        self.scalars: tuple[ScalarGroup, ...] = tuple(g for p in profiles for g in p.scalars)
        self.tables: tuple[Table, ...] = tuple(t for p in profiles for t in p.tables)
        self._specs: dict[str, tuple[RateSpec, ...]] = {t.name: t.rate_specs for t in self.tables}
        #: The measurement each group writes: an ``snmp_error`` names it (``writes``), so
        #: the collector knows which data a failure leaves out (an AP table vs sensors).
        self._writes: dict[str, str] = {
            **{g.name: g.measurement for g in self.scalars},
            **{t.name: t.measurement for t in self.tables}}

    def detected(self, detection: Detection) -> None:
        """Poll with what detection chose (plus the profiles the inventory names)."""
        assert self._auto is not None
        known = self._auto[1]
        names = [n for n in detection.profiles if n in known]
        names += [p.name for p in self._explicit if p.name not in names]
        self.detection = detection
        self._detect_due = False
        self._use(resolve(names, known, where=f"{self.device.name}: detected profiles"))

    def _after_poll(self, uptime: FieldValue | None) -> None:
        """A device whose uptime went backwards rebooted: detect again next poll."""
        if isinstance(uptime, int | float):
            if self._auto is not None and self._last_uptime is not None and (
                    uptime < self._last_uptime):
                self._detect_due = True
            self._last_uptime = float(uptime)

    def _target(self) -> Target:
        creds = self.device.snmp
        return Target(host=self.device.host, port=self.device.port, credentials=creds,
                      timeout_s=creds.timeout_s, retries=0 if self._down else creds.retries)

    async def collect(self, now_ns: int) -> list[Point]:
        """Poll the device once (see the module doc); never raises for SNMP failures."""
        entered = self._clock()

        def stamp() -> int:
            return now_ns + round((self._clock() - entered) * 1e9)

        async with self._limit:
            started = self._clock()
            poll = _Poll(self, self._target(), stamp)
            await poll.run()
            poll_ms = (self._clock() - started) * 1000.0
        self._down = not poll.answered
        if poll.answered:  # a poll nobody answered says nothing about single groups
            self._silent_groups.difference_update(poll.heard)
            self._silent_groups.update(poll.silent)
        self._after_poll(poll.device_fields.get("uptime_s"))
        self.stats.polls += 1
        self.stats.last_poll_ms = poll_ms
        return poll.points(poll_ms)

    async def close(self) -> None:
        """Let go of the shared SNMP client (the last source of the site closes it)."""
        if not self._closed:
            self._closed = True
            await self._shared.release()


#: Groups in a row without an answer (not already silent last poll) that end a poll.
SILENT_IN_A_ROW = 2


class _Poll:
    """The state of one poll of one device."""

    def __init__(self, source: SnmpDeviceSource, target: Target, stamp: Callable[[], int]) -> None:
        self.src = source
        self.target = target
        self.stamp = stamp
        self.time_ns = stamp()
        self.answered = False
        #: Set once the poll must end here (see the module doc).
        self.stopped = False
        self.device_fields: dict[str, FieldValue] = {}
        self.out: list[Point] = []
        self.errors: list[tuple[str, SnmpError]] = []
        self.ok_groups: list[str] = []
        #: Groups the device answered (data or an error PDU) / left without an answer.
        self.heard: list[str] = []
        self.silent: list[str] = []
        #: Groups without an answer since the last answer, not counting old news.
        self._streak: list[str] = []

    def _point(self, measurement: str, tags: dict[str, str], fields: dict[str, FieldValue],
               time_ns: int) -> Point:
        return Point(measurement, {**self.src._tags, **tags}, fields, time_ns)

    def _failed(self, group: str, exc: SnmpError) -> None:
        self.errors.append((group, exc))
        self.src.stats.errors += 1

    async def run(self) -> None:
        """Scalars, then tables; stops early as the module doc says."""
        src = self.src
        if src._detect_due and src._auto is not None:
            detection = await self._guarded("detect", functools.partial(
                probe, src._client, rules=src._auto[0]))
            if self.stopped:
                return  # only the first request of a poll can stop it here
            if detection is not None:
                src.detected(detection)
        uptime: int | None = None
        for n, group in enumerate(src.scalars):
            values = await self._guarded(group.name, functools.partial(self._scalars, group))
            if self.stopped:
                self._skip([g.name for g in src.scalars[n + 1:]] + [t.name for t in src.tables])
                return
            if values is None:
                continue
            fields: dict[str, FieldValue] = {}
            for col in group.objects:
                value = values.get((*col.oid, 0))
                if value is None:
                    continue
                if col.role == "uptime" and isinstance(value, int):
                    uptime = value
                converted = convert(col, value, src._limits)
                if converted is not None and col.field:
                    fields[col.field] = converted
            if group.measurement == "device":
                self.device_fields.update(fields)
            elif fields:
                self.out.append(self._point(group.measurement, {}, fields, self.time_ns))
        src._tracker.device_poll(uptime, self.time_ns)
        for n, table in enumerate(src.tables):
            time_ns = self.stamp()
            rows = await self._guarded(table.name, functools.partial(
                self._table, table, time_ns=time_ns))
            if self.stopped:
                self._skip([t.name for t in src.tables[n + 1:]])
                return
            if rows is not None:
                self._emit(table, rows, time_ns)

    def _emit(self, table: Table, rows: list[Row], time_ns: int) -> None:
        """The points of one table that answered: rows (with rates) or aggregates."""
        src = self.src
        if table.max_rows is not None and len(rows) > table.max_rows:
            # Cardinality guard: the first rows in index order are kept, the cut is
            # reported (an snmp_error point) rather than silently hidden.
            self._failed(table.name, SnmpError(
                "row_limit", f"{len(rows)} rows, {table.max_rows} kept (max_rows)",
                answered=True))
            rows = rows[: table.max_rows]
        if table.aggregate:
            groups: dict[tuple[str | None, ...], list[Row]] = {}
            for row in rows:
                groups.setdefault(tuple(row.tags.get(t) for t in table.group_by),
                                  []).append(row)
            for key, members in groups.items():
                folded = aggregate_rows(table.aggregate, members)
                tags = {t: v for t, v in zip(table.group_by, key, strict=True) if v}
                if folded:
                    self.out.append(self._point(table.measurement, tags, folded, time_ns))
            return
        results = src._tracker.table(table.name, {r.key: r.sample for r in rows},
                                     src._specs[table.name])
        for row in rows:
            rates = results[row.key].rates
            self.out.append(self._point(table.measurement, row.tags,
                                        {**row.fields, **rates}, time_ns))

    async def _guarded(self, group: str, work: Callable[[Target], Awaitable[T]]) -> T | None:
        """Run one group's requests: its result, or None if it failed (recorded).

        A group that got no answer on its last poll is asked without retries. Sets
        ``stopped`` when the poll must end here: nothing has answered in this poll yet
        (the device is unreachable), or this is the second group in a row without an
        answer (the device went away; see the module doc).
        """
        old_news = group in self.src._silent_groups
        target = replace(self.target, retries=0) if old_news else self.target
        try:
            result = await work(target)
        except SnmpError as exc:
            self._failed(group, exc)
            if exc.answered:  # an error PDU: the device is there, this group failed
                self._heard(group)
                return None
            self.silent.append(group)
            if exc.answered_before:  # cut off mid-walk: it was there until just now
                self.answered = True
                self._streak.clear()
            if not self.answered:
                self.stopped = True
            elif not old_news:
                self._streak.append(group)
                self.stopped = len(self._streak) >= SILENT_IN_A_ROW
            return None
        self._heard(group)
        self.ok_groups.append(group)
        return result

    def _heard(self, group: str) -> None:
        self.answered = True
        self.heard.append(group)
        self._streak.clear()

    def _skip(self, groups: Sequence[str]) -> None:
        """The groups not asked because the poll stopped mid-way: one error each.

        Nothing when the device never answered: that is one unreachable device, not
        one failure per group.
        """
        if not self.answered or not groups:
            return
        why = (f"not asked: {' and '.join(self._streak)} got no answer one after the "
               "other, so the device most likely went away during this poll")
        for group in groups:
            self._failed(group, SnmpError("skipped", why, answered=False))

    async def _scalars(self, group: ScalarGroup, target: Target) -> dict[Oid, Value]:
        oids = [(*col.oid, 0) for col in group.objects]
        self.src.stats.requests += 1
        values = await get_scalars(self.src._client, target, oids)
        self.src.stats.varbinds += len(values)
        return values

    async def _walk(self, table: Table, target: Target,
                    columns: Iterable[Oid]) -> tuple[dict[Oid, dict[Oid, Value]], int]:
        """Walk ``columns``: the values per column and how many requests it took."""
        result = await walk_columns(self.src._client, target, list(columns),
                                    max_repetitions=self.src._reps)
        self.src.stats.requests += result.requests
        self.src.stats.varbinds += result.varbinds
        for warning in result.warnings:
            self._failed(table.name, warning)
        return result.columns, result.requests

    async def _table(self, table: Table, target: Target, *, time_ns: int) -> list[Row]:
        columns = [c.oid for c in table.primary] + [lk.column.oid for lk in table.lookups]
        answered = 0
        try:
            data, answered = await self._walk(table, target, columns)
            missing = missing_targets(table, data, self.src._limits)
            extra = [c.oid for c in table.fallbacks if c.target in missing]
            if extra:
                more, _ = await self._walk(table, target, extra)
                data.update(more)
        except SnmpError as exc:
            before = answered + exc.answered_before
            if exc.answered or not before:
                raise
            # A partial table yields no rows (module doc); say how far the walk got.
            raise SnmpError(exc.code, f"{exc.message} (after {before} answered request(s) "
                            "of this table; its partial rows are dropped)",
                            answered=False, index=exc.index, answered_before=before) from exc
        return build_rows(table, data, time_ns, self.src._limits)

    def points(self, poll_ms: float) -> list[Point]:
        """The device point first, then the rows and scalar points, then the errors."""
        src = self.src
        fields: dict[str, FieldValue] = {"reachable": 1 if self.answered else 0,
                                         "poll_ms": poll_ms}
        if self.answered:
            fields.update(self.device_fields)
        out = [self._point("device", {}, fields, self.time_ns), *self.out]
        failed = {group for group, _ in self.errors}
        for group in self.ok_groups:
            if group not in failed:
                src._failures.pop(group, None)
        for group in failed:
            src._failures[group] = src._failures.get(group, 0) + 1
        for group, exc in self.errors:
            count = src._failures[group]
            tags = {"table": group, "error": exc.code}
            writes = src._writes.get(group)  # none for the detection probe
            if writes:
                tags["writes"] = writes
            out.append(self._point(
                "snmp_error", tags,
                {"message": exc.message[: src._limits.max_string_field_len],
                 "consecutive_failures": count},
                self.time_ns))
        return out


def build_sources(
    site: Site,
    *,
    client: SnmpClient | None = None,
    profile_dirs: Sequence[Path] = (PROFILE_DIR,),
    clock: Callable[[], float] = time.monotonic,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Source]:
    """One SNMP source per device of ``site`` (name ``snmp:<device>``).

    The sources share one SNMP client (``client``, default: pysnmp) and a semaphore of
    ``site.agent.snmp_concurrency``. Each has ``async collect(now_ns)`` and
    ``async close()``; the last source closed closes the client. Raises
    :class:`~schoolnet.configfile.ConfigError` for a broken profile or a device that
    names an unknown profile.
    """
    profiles = load_profiles(profile_dirs)
    rules = load_rules() if any(uses_auto(d.profiles) for d in site.devices) else None
    resolved = []
    for i, dev in enumerate(site.devices):
        # `auto` until detection: the rules' base profiles plus any others named.
        names = [n for n in dev.profiles if n != "auto"]
        if rules is not None and uses_auto(dev.profiles):
            names = list(dict.fromkeys([*rules.base, *names]))
        resolved.append(resolve(names, profiles, where=f"devices[{i}].profile",
                                file=site.source))
    if not site.devices:
        return []
    shared = SharedClient(client if client is not None else PysnmpClient(), len(site.devices))
    limit = asyncio.Semaphore(max(1, site.agent.snmp_concurrency))
    return [SnmpDeviceSource(dev, profs, shared, limit, clock=clock, limits=limits,
                             auto=(rules, profiles) if rules and uses_auto(dev.profiles)
                             else None)
            for dev, profs in zip(site.devices, resolved, strict=True)]
