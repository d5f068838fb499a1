"""Decode and validate one MQTT message: contract, inventory, per-site sequence.

Pure logic, no I/O (the clock is injected): :meth:`Validator.handle` takes a topic and a
payload and returns a :class:`Verdict` with the line-protocol lines to write, or the
reason the message was dropped. Tenant and site come from the topic only (the broker
ACL makes the topic trustworthy); a payload that names another site is dropped.
Every drop is counted per reason and logged at most once per reason per interval.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter, xor
from typing import Final

from collector.lineproto import GroupEncoder, LineEncoder, LineProtocolError
from collector.metrics import CollectorMetrics
from schoolnet.inventory import Inventory, Site
from schoolnet.wire import (
    DEFAULT_LIMITS,
    DEVICE_TAGS,
    MEASUREMENT_TAGS,
    CheckedBatch,
    Limits,
    Point,
    PointGroup,
    SeqTracker,
    Status,
    Topic,
    WireError,
    decode_batch_groups,
    decode_status,
    parse_topic,
)

try:  # the optional C extension (schoolnet/_speedups.c); same hashes, less CPU
    from schoolnet._speedups import row_keys as _row_keys_c
except ImportError:  # pragma: no cover - built wherever a C compiler is present
    _row_keys_c = None  # type: ignore[assignment]

log = logging.getLogger("schoolnet.collector")

#: Drop reasons the collector adds to the wire contract's own (WireError.reason).
UNKNOWN_SITE: Final = "unknown_site"
SITE_MISMATCH: Final = "site_mismatch"
UNKNOWN_DEVICE: Final = "unknown_device"
BAD_FIELD_VALUE: Final = "bad_field_value"
#: A point of a new series beyond its site's series budget (points, not messages).
SERIES_BUDGET: Final = "series_budget"

#: Default of ``max_series_per_site``: a site of ~100 devices has ~6,000 series (a 48-port
#: switch ~60: device, system, ~50 interfaces); 50,000 leaves room for AP controllers
#: with hundreds of APs, probe targets and renamed interfaces within one window.
DEFAULT_MAX_SERIES_PER_SITE: Final = 50_000
#: Series not seen for one to two windows are forgotten (interfaces, APs that are gone).
SERIES_WINDOW_S: Final = 86_400.0

#: Measurements whose points carry role and vendor (filled in from the inventory).
_DEVICE_MEASUREMENTS: Final = frozenset(
    m for m, tags in MEASUREMENT_TAGS.items() if tags >= DEVICE_TAGS
)


class RateLimitedLog:
    """At most one log line per key per ``interval_s``; says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str) -> bool:
        """Log ``msg`` unless ``key`` was logged within the interval; True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        suffix = f" (and {more} more since the last report)" if more else ""
        self._logger.warning("%s%s", msg, suffix)
        return True


class SeriesBudget:
    """The distinct series (measurement + tag set) of one site, bounded by ``limit``.

    Series are kept as hashes in two generations: a series seen in the current window or
    the one before is known (and moves to the current one when seen). Known series
    always pass; a new one passes while both generations together hold fewer than
    ``limit``, so at most ``limit`` hashes are kept, and a series not seen for one to
    two windows is forgotten. The common case (every series known) is one C-level
    subset test per group.
    """

    __slots__ = ("_clock", "_cur", "_old", "_rotate_at", "_window", "limit")

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._window = window_s
        self._clock = clock
        self._cur: set[int] = set()
        self._old: set[int] = set()
        self._rotate_at = clock() + window_s

    def __len__(self) -> int:
        return len(self._cur) + len(self._old)

    def refuse(self, keys: set[int]) -> AbstractSet[int]:
        """Admit ``keys`` (series hashes); return those refused (new beyond the budget)."""
        cur = self._cur
        if keys <= cur:
            return _NONE
        now = self._clock()
        if now >= self._rotate_at:
            self._old, self._cur = cur, set()
            cur = self._cur
            self._rotate_at = now + self._window
        new = keys - cur
        old = self._old
        known = new & old
        if known:  # moved, not copied: a series counts once
            cur |= known
            old -= known
            new -= known
        # Series of the last window not seen yet in this one still hold their place.
        room = self.limit - len(cur) - len(old)
        if len(new) <= room:
            cur |= new
            return _NONE
        refused = set()
        for key in new:
            if room > 0:
                cur.add(key)
                room -= 1
            else:
                refused.add(key)
        return refused


_NONE: Final[frozenset[int]] = frozenset()


def _tags_key(measurement: str, tags: Mapping[str, str]) -> int:
    """The order-free hash of a measurement and tags: XOR of one hash per (tag, value)."""
    key = hash(measurement)
    for item in tags.items():
        key ^= hash(item)
    return key


def _group_keys_py(g: PointGroup) -> list[int]:
    """The series hash of each row of ``g``.

    A series is its measurement and tag set, however the agent laid the group out (a
    tag shared by the group or a column): the hash XORs one hash per (tag, value) pair,
    which does not depend on order, so a point hashes the same in any group (and as a
    v1 point, :func:`_point_key`). Column by column, with ``map``: no Python loop per
    row unless a row lacks a tag (``None``). The reference of the C ``row_keys``.
    """
    base = _tags_key(g.measurement, g.tags)
    rows = g.rows
    if not g.tag_columns:
        return [base] * len(rows)
    keys: list[int] | None = None
    for j, name in enumerate(g.tag_columns):
        values = list(map(itemgetter(j), rows))
        if None in values:
            terms = [0 if v is None else hash((name, v)) for v in values]
        else:
            terms = list(map(hash, zip(repeat(name), values)))
        keys = terms if keys is None else list(map(xor, keys, terms))
    assert keys is not None
    return list(map(xor, repeat(base), keys))


def _group_keys(g: PointGroup) -> list[int]:
    """The series hash of each row of ``g``: :func:`_group_keys_py`, in C where built."""
    if _row_keys_c is None or not g.tag_columns:
        return _group_keys_py(g)
    return _row_keys_c(g.rows, g.tag_columns, _tags_key(g.measurement, g.tags))


def _point_key(p: Point) -> int:
    """The series hash of a v1 point (the same as its row's in a group)."""
    return _tags_key(p.measurement, p.tags)


@dataclass
class SiteState:
    """What the collector knows about one inventory site (for /api/status)."""

    tenant: str
    site: str
    name: str
    devices: int
    state: str = "unknown"  # online | offline | unknown (no status message yet)
    state_since_ns: int | None = None
    last_seen_ns: int | None = None
    messages: int = 0
    points: int = 0
    dropped: int = 0
    seq: SeqTracker = field(default_factory=SeqTracker)
    series: SeriesBudget | None = field(default=None, repr=False)
    #: Points of new series dropped beyond the series budget.
    series_dropped: int = 0

    def to_json(self) -> dict[str, object]:
        """The JSON object of this site in /api/status."""
        return {
            "tenant": self.tenant, "site": self.site, "name": self.name,
            "devices": self.devices, "state": self.state,
            "state_since_ns": self.state_since_ns, "last_seen_ns": self.last_seen_ns,
            "messages": self.messages, "points": self.points, "dropped": self.dropped,
            "seq_highest": self.seq.highest, "seq_gaps": self.seq.gaps,
            "seq_duplicates": self.seq.duplicates,
            "series": len(self.series) if self.series is not None else 0,
            "series_dropped": self.series_dropped,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one message: lines to write, or why it was dropped."""

    lines: list[str]
    points: int = 0
    reason: str | None = None  # set when dropped
    duplicate: bool = False
    topic: Topic | None = None
    #: The status, for the outage engine (the writer's second consumer of messages).
    status: Status | None = None
    #: The checked batch behind :attr:`decoded`.
    batch: CheckedBatch | None = field(default=None, repr=False, compare=False)

    @property
    def decoded(self) -> tuple[Point, ...]:
        """The accepted points, for the outage engine; () for drops and status messages.

        Built on first use: the writer needs only the lines, so a collector without
        the outage engine never makes the Point objects of a v2 payload.
        """
        return () if self.batch is None else self.batch.points

    def points_where(self, wanted: Callable[[str, str | None], bool]) -> Iterator[Point]:
        """The accepted points, in order, of the groups (v1: points) ``wanted`` keeps.

        ``wanted(measurement, device)`` is asked once per group (``device`` None when a
        group has no single device); the points of a group are built only if it is
        wanted. The outage engine wants few of a message's points.
        """
        batch = self.batch
        if batch is None:
            return
        if not batch.groups:
            for p in batch.v1_points:
                if wanted(p.measurement, p.tags.get("device")):
                    yield p
            return
        for g in batch.groups:
            device = None if "device" in g.tag_columns else g.tags.get("device")
            if wanted(g.measurement, device):
                yield from g.points

    @property
    def dropped(self) -> bool:
        """Whether the message was dropped (its lines are empty then)."""
        return self.reason is not None


class Validator:
    """Turns (topic, payload) into a :class:`Verdict`; keeps per-site state and counts."""

    def __init__(
        self,
        inventory: Inventory,
        metrics: CollectorMetrics,
        *,
        limits: Limits = DEFAULT_LIMITS,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        log_interval_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_series_per_site: int = DEFAULT_MAX_SERIES_PER_SITE,
        series_window_s: float = SERIES_WINDOW_S,
    ) -> None:
        self.inventory = inventory
        self.metrics = metrics
        self.limits = limits
        self._now_ns = wall_clock_ns
        self._log = RateLimitedLog(log, log_interval_s, monotonic)
        self._encoder = LineEncoder()
        self._group_encoder = GroupEncoder()
        self.sites: dict[tuple[str, str], SiteState] = {
            key: SiteState(tenant=s.tenant, site=s.id, name=s.name, devices=len(s.devices),
                           series=SeriesBudget(max_series_per_site, series_window_s,
                                               monotonic))
            for key, s in inventory.sites.items()
        }
        self._extra: dict[tuple[str, str, str | None, bool], Mapping[str, str]] = {}
        metrics.gaps.read = self._gap_values
        metrics.series.read = self._series_values

    def _series_values(self) -> list[tuple[tuple[str, ...], float]]:
        return [((s.tenant, s.site), float(len(s.series))) for s in self.sites.values()
                if s.series is not None and len(s.series)]

    def _gap_values(self) -> list[tuple[tuple[str, ...], float]]:
        return [((s.tenant, s.site), float(s.seq.gaps)) for s in self.sites.values()
                if s.seq.highest >= 0]

    def _drop(self, reason: str, topic: str, detail: str,
              state: SiteState | None = None) -> Verdict:
        self.metrics.dropped.inc(reason)
        if state is not None:
            state.dropped += 1
        self._log.warning(reason, f"dropped message on {topic[:160]!r}: {reason}: {detail}")
        return Verdict([], reason=reason)

    def handle(self, topic: str, payload: bytes) -> Verdict:
        """Validate one message; count it; return its lines or its drop reason."""
        try:
            t = parse_topic(topic)
        except WireError as exc:
            self.metrics.received.inc("invalid")
            return self._drop(exc.reason, topic, exc.detail)
        self.metrics.received.inc(t.kind)
        state = self.sites.get((t.tenant, t.site))
        site = self.inventory.site(t.tenant, t.site)
        if state is None or site is None:
            return self._drop(UNKNOWN_SITE, topic, "not in the inventory")
        now_ns = self._now_ns()
        if t.kind == "status":
            return self._handle_status(t, topic, payload, state, now_ns)
        try:
            batch = decode_batch_groups(payload, self.limits, now_ns=now_ns)
        except WireError as exc:
            return self._drop(exc.reason, topic, exc.detail, state)
        if batch.site != t.site:
            return self._drop(SITE_MISMATCH, topic, f"payload names site {batch.site!r}", state)
        if t.device is not None and site.device(t.device) is None:
            return self._drop(UNKNOWN_DEVICE, topic, f"device {t.device!r} in the topic", state)
        try:
            budget = state.series
            if budget is not None:
                batch = self._within_budget(batch, budget, state, topic)
            if batch.groups:
                lines = self._encode_groups(t, site, batch.groups)
            else:
                lines = self._encode(t, site, batch.v1_points)
        except WireError as exc:
            return self._drop(exc.reason, topic, exc.detail, state)
        except LineProtocolError as exc:
            return self._drop(BAD_FIELD_VALUE, topic, str(exc), state)
        state.last_seen_ns = now_ns
        if not state.seq.observe(batch.seq, batch.epoch):
            self.metrics.duplicates.inc(t.tenant, t.site)
            return Verdict([], duplicate=True, topic=t)
        count = batch.count
        state.messages += 1
        state.points += count
        self.metrics.accepted.inc()
        self.metrics.points.inc(amount=count)
        return Verdict(lines, points=count, topic=t, batch=batch)

    def _within_budget(self, batch: CheckedBatch, budget: SeriesBudget, state: SiteState,
                       topic: str) -> CheckedBatch:
        """``batch`` without the points of new series beyond the site's series budget."""
        refused_count = 0
        if batch.groups:
            groups: list[PointGroup] = []
            for g in batch.groups:
                keys = _group_keys(g)
                refused = budget.refuse(set(keys))
                if not refused:
                    groups.append(g)
                    continue
                keep = [i for i, k in enumerate(keys) if k not in refused]
                refused_count += len(keys) - len(keep)
                if keep:
                    groups.append(dataclasses.replace(
                        g, rows=tuple(g.rows[i] for i in keep),
                        types=tuple(g.types[i] for i in keep),
                        _points=None if g._points is None else
                        tuple(g._points[i] for i in keep)))
            if not refused_count:
                return batch
            kept = dataclasses.replace(batch, groups=tuple(groups))
        else:
            pkeys = [_point_key(p) for p in batch.v1_points]
            refused = budget.refuse(set(pkeys))
            if not refused:
                return batch
            points = tuple(p for p, k in zip(batch.v1_points, pkeys, strict=True)
                           if k not in refused)
            refused_count = len(pkeys) - len(points)
            kept = dataclasses.replace(batch, v1_points=points)
        state.series_dropped += refused_count
        self.metrics.dropped_points.inc(SERIES_BUDGET, amount=refused_count)
        self._log.warning(SERIES_BUDGET, f"dropped {refused_count} point(s) of new series on "
                          f"{topic[:160]!r}: {SERIES_BUDGET}: the site has {len(budget)} "
                          f"series, the limit is {budget.limit} (max_series_per_site)")
        return kept

    def _handle_status(self, t: Topic, topic: str, payload: bytes, state: SiteState,
                       now_ns: int) -> Verdict:
        try:
            status = decode_status(payload, self.limits)
        except WireError as exc:
            return self._drop(exc.reason, topic, exc.detail, state)
        if status.site != t.site:
            return self._drop(SITE_MISMATCH, topic, f"payload names site {status.site!r}", state)
        if status.state != state.state:
            state.state = status.state
            state.state_since_ns = status.time_ns or now_ns
        state.last_seen_ns = now_ns
        self.metrics.accepted.inc()
        return Verdict([], topic=t, status=status)

    def _encode_groups(self, t: Topic, site: Site, groups: tuple[PointGroup, ...]) -> list[str]:
        """:meth:`_encode` for the groups of a v2 payload: rows are formatted directly.

        A group's device is one of its shared tags (the agent groups points of one device
        poll); a group with a device column, which the agent does not send, goes point by
        point.
        """
        lines: list[str] = []
        for g in groups:
            if "device" in g.tag_columns:
                lines += self._encode(t, site, g.points)
                continue
            device = g.tags.get("device")
            if t.device is not None and device is not None and device != t.device:
                raise WireError(UNKNOWN_DEVICE, f"point of {device[:64]!r} under the topic "
                                                f"of {t.device!r}")
            with_role = g.measurement in _DEVICE_MEASUREMENTS
            extra = self._extra.get((t.tenant, t.site, device, with_role))
            if extra is None:
                extra = self._make_extra(t, site, device, with_role)
            lines += self._group_encoder.encode(g, extra)
        return lines

    def _encode(self, t: Topic, site: Site, points: tuple[Point, ...]) -> list[str]:
        """Check devices against the inventory and encode, adding the trusted tags.

        Points are encoded in runs that share their extra tags (one device), so the
        encoder works on whole runs.
        """
        lines: list[str] = []
        run: list[Point] = []
        run_extra: Mapping[str, str] | None = None
        for p in points:
            device = p.tags.get("device")
            if t.device is not None and device is not None and device != t.device:
                raise WireError(UNKNOWN_DEVICE, f"point of {device[:64]!r} under the topic "
                                                f"of {t.device!r}")
            extra = self._extra.get((t.tenant, t.site, device, p.measurement in
                                     _DEVICE_MEASUREMENTS))
            if extra is None:
                extra = self._make_extra(t, site, device, p.measurement in _DEVICE_MEASUREMENTS)
            if extra is not run_extra:
                if run:
                    assert run_extra is not None
                    lines += self._encoder.encode_all(run, run_extra, finite=True)
                run, run_extra = [], extra
            run.append(p)
        if run:
            assert run_extra is not None
            lines += self._encoder.encode_all(run, run_extra, finite=True)
        return lines

    def _make_extra(self, t: Topic, site: Site, device: str | None,
                    with_role: bool) -> Mapping[str, str]:
        extra = {"tenant": t.tenant, "site": t.site}
        if device is not None:
            dev = site.device(device)
            if dev is None:
                raise WireError(UNKNOWN_DEVICE, f"device {device[:64]!r} is not in the inventory")
            if with_role:
                # The inventory is the truth about a device's role and vendor; the
                # payload's vendor is kept only where the inventory does not name one.
                extra["role"] = dev.role
                if dev.vendor:
                    extra["vendor"] = dev.vendor
        if len(self._extra) >= 100_000:  # bounded: only inventory devices get here
            self._extra.clear()
        self._extra[(t.tenant, t.site, device, with_role)] = extra
        return extra
