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

The first request that gets no answer at all (timeout, wrong credentials) ends the
poll: asking the remaining tables would only multiply the timeout. A device that was
unreachable on its last poll is asked without retries until it answers again, so a dead
device holds its semaphore slot for one timeout, not ``retries + 1`` of them.
Timestamps are ``now_ns`` (when the runtime started the gather) plus the monotonic time
that passed since, taken when each group's first request goes out, so rates use the time
their counters were really read even when the device waited for a semaphore slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
        self._closed = False
        self.stats = PollStats()

    def _use(self, profiles: Sequence[Profile]) -> None:
        self.profiles = tuple(profiles)
        self.scalars: tuple[ScalarGroup, ...] = tuple(g for p in profiles for g in p.scalars)
        self.tables: tuple[Table, ...] = tuple(t for p in profiles for t in p.tables)
        self._specs: dict[str, tuple[RateSpec, ...]] = {t.name: t.rate_specs for t in self.tables}

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
        self._after_poll(poll.device_fields.get("uptime_s"))
        self.stats.polls += 1
        self.stats.last_poll_ms = poll_ms
        return poll.points(poll_ms)

    async def close(self) -> None:
        """Let go of the shared SNMP client (the last source of the site closes it)."""
        if not self._closed:
            self._closed = True
            await self._shared.release()


class _Poll:
    """The state of one poll of one device."""

    def __init__(self, source: SnmpDeviceSource, target: Target, stamp: Callable[[], int]) -> None:
        self.src = source
        self.target = target
        self.stamp = stamp
        self.time_ns = stamp()
        self.answered = False
        self.device_fields: dict[str, FieldValue] = {}
        self.out: list[Point] = []
        self.errors: list[tuple[str, SnmpError]] = []
        self.ok_groups: list[str] = []

    def _point(self, measurement: str, tags: dict[str, str], fields: dict[str, FieldValue],
               time_ns: int) -> Point:
        return Point(measurement, {**self.src._tags, **tags}, fields, time_ns)

    def _failed(self, group: str, exc: SnmpError) -> None:
        self.errors.append((group, exc))
        self.src.stats.errors += 1

    async def run(self) -> None:
        """Scalars, then tables; stop at the first request nobody answered."""
        src = self.src
        if src._detect_due and src._auto is not None:
            go_on, detection = await self._guarded("detect", probe(
                src._client, self.target, src._auto[0]))
            if not go_on:
                return
            if detection is not None:
                src.detected(detection)
        uptime: int | None = None
        for group in src.scalars:
            go_on, values = await self._guarded(group.name, self._scalars(group))
            if not go_on:
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
        for table in src.tables:
            time_ns = self.stamp()
            go_on, rows = await self._guarded(table.name, self._table(table, time_ns))
            if not go_on:
                return
            if rows is None:
                continue
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
                continue
            results = src._tracker.table(table.name, {r.key: r.sample for r in rows},
                                         src._specs[table.name])
            for row in rows:
                rates = results[row.key].rates
                self.out.append(self._point(table.measurement, row.tags,
                                            {**row.fields, **rates}, time_ns))

    async def _guarded(self, group: str, work: Awaitable[T]) -> tuple[bool, T | None]:
        """Run one group's requests: ``(go on?, result or None if it failed)``.

        Going on is pointless once a request got no answer at all (timeout, security).
        """
        try:
            result = await work
        except SnmpError as exc:
            self._failed(group, exc)
            self.answered = self.answered or exc.answered
            return exc.answered, None
        self.answered = True
        self.ok_groups.append(group)
        return True, result

    async def _scalars(self, group: ScalarGroup) -> dict[Oid, Value]:
        oids = [(*col.oid, 0) for col in group.objects]
        self.src.stats.requests += 1
        values = await get_scalars(self.src._client, self.target, oids)
        self.src.stats.varbinds += len(values)
        return values

    async def _walk(self, table: Table, columns: Iterable[Oid]) -> dict[Oid, dict[Oid, Value]]:
        result = await walk_columns(self.src._client, self.target, list(columns),
                                    max_repetitions=self.src._reps)
        self.src.stats.requests += result.requests
        self.src.stats.varbinds += result.varbinds
        for warning in result.warnings:
            self._failed(table.name, warning)
        return result.columns

    async def _table(self, table: Table, time_ns: int) -> list[Row]:
        columns = [c.oid for c in table.primary] + [lk.column.oid for lk in table.lookups]
        data = await self._walk(table, columns)
        missing = missing_targets(table, data, self.src._limits)
        extra = [c.oid for c in table.fallbacks if c.target in missing]
        if extra:
            data.update(await self._walk(table, extra))
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
            out.append(self._point(
                "snmp_error", {"table": group, "error": exc.code},
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
