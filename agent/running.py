"""RunningSource: what every source gets for free — schedule, jitter, timeout, self-metrics.

Telegraf's ``RunningInput`` idea: a :class:`~agent.source.Source` only collects; the
wrapper here owns everything shared, so no SNMP poller or uplink probe re-implements it:

* **Schedule.** Ticks are aligned to the wall clock (``k * interval + offset``), so every
  poll of a 60 s source lands on the same second of the minute and series line up in
  dashboards. ``offset`` is a random start jitter chosen once per source, so the sources
  of a site (and the sites of a city) do not all fire at ``:00``. A gather that overruns
  its interval skips the ticks it missed (counted) instead of queueing them up.
* **Timeout.** Each gather is bounded; a hung device costs one timeout, never a stalled
  agent. Every source runs in its own task, so one slow or failing source never delays
  another.
* **Validation.** Points are checked against the wire contract before they enter the
  pipeline: the collector rejects a batch whole if one point breaks the contract, so a
  bad point is dropped (counted) here rather than taking its neighbours with it.
* **Self-metrics.** Gathers, errors, timeouts, duration and points per source
  (:class:`SourceStats`); the self-health source sums them into the ``agent`` point.

Time comes from a :class:`Clock`, so schedules and timeouts are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.source import Source
from schoolnet.wire import DEFAULT_LIMITS, Limits, Point, WireError, check_point

log = logging.getLogger(__name__)

NS = 1_000_000_000


class Clock(Protocol):
    """Where the agent gets time from; tests inject a fake one."""

    def time_ns(self) -> int:
        """Wall-clock time in ns since the epoch (point timestamps, tick alignment)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (durations, rate limits)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (of this clock's time)."""
        ...


class SystemClock:
    """The real clock: ``time.time_ns``, ``time.monotonic`` and ``asyncio.sleep``."""

    def time_ns(self) -> int:
        """Wall-clock time in ns."""
        return time.time_ns()

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep."""
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


async def sleep_unless(clock: Clock, seconds: float, event: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock`` but wake early when ``event`` is set.

    Returns whether the event is set: True means "cut short" (or set before).
    """
    if event.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
    return event.is_set()


@dataclass(frozen=True, slots=True)
class Collection:
    """The points of one gather of one source, as they travel through the queue."""

    source: str
    points: tuple[Point, ...]
    gathered_ns: int


class Intake:
    """The bounded queue between the sources and the spool writer.

    Bounded so a stuck disk cannot eat the box's memory: when the queue is full the new
    collection is dropped and counted (``offer`` never blocks a source).
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self.queue: asyncio.Queue[Collection] = asyncio.Queue(maxsize)
        self.dropped_collections = 0
        self.dropped_points = 0

    def offer(self, collection: Collection) -> bool:
        """Enqueue ``collection``; False (and counted) if the queue is full."""
        try:
            self.queue.put_nowait(collection)
        except asyncio.QueueFull:
            self.dropped_collections += 1
            self.dropped_points += len(collection.points)
            return False
        return True


@dataclass
class SourceStats:
    """Self-metrics of one running source (counters since the agent started)."""

    gathers: int = 0
    errors: int = 0  # failed gathers, timeouts included
    timeouts: int = 0
    points: int = 0  # valid points handed to the queue
    invalid_points: int = 0  # points that broke the wire contract (dropped)
    skipped_ticks: int = 0  # ticks missed because a gather overran its interval
    last_duration_s: float = 0.0
    last_error: str = ""


class GatherTimeout(Exception):
    """A gather did not finish within its timeout."""


def next_tick_ns(now_ns: int, interval_ns: int, offset_ns: int) -> int:
    """The first tick ``k * interval + offset`` strictly after ``now_ns``."""
    return ((now_ns - offset_ns) // interval_ns + 1) * interval_ns + offset_ns


class RunningSource:
    """Wraps one :class:`Source`: schedule, jitter, timeout, validation, self-metrics.

    ``interval_s`` is the poll interval (usually ``site.agent.poll_interval_s``);
    ``timeout_s`` bounds one gather (default: 90 % of the interval, so a gather is over
    before the next tick); ``jitter_s`` bounds the random start offset (default: the
    whole interval, spreading sources evenly).
    """

    def __init__(
        self,
        source: Source,
        intake: Intake,
        *,
        interval_s: float,
        timeout_s: float | None = None,
        jitter_s: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.source = source
        self.name = source.name
        self.intake = intake
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else 0.9 * interval_s
        jitter = interval_s if jitter_s is None else min(jitter_s, interval_s)
        self.offset_s = (rng or random.Random()).uniform(0.0, jitter) if jitter > 0 else 0.0
        self.clock = clock
        self.limits = limits
        self.stats = SourceStats()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """No more gathers; one in progress still finishes (cancel the task to cut it)."""
        self._stopping.set()

    async def run(self) -> None:
        """Gather on every tick until :meth:`stop` (or until the task is cancelled)."""
        interval_ns = max(1, round(self.interval_s * NS))
        offset_ns = round(self.offset_s * NS) % interval_ns
        now = self.clock.time_ns()
        tick = next_tick_ns(now, interval_ns, offset_ns)
        while await self._sleep_unless_stopped((tick - now) / NS):
            await self.gather_once()
            now = self.clock.time_ns()
            following = next_tick_ns(now, interval_ns, offset_ns)
            # Ticks that passed while the gather ran are skipped, not made up for:
            # a burst of catch-up polls would only hammer an already slow device.
            self.stats.skipped_ticks += max(0, (following - tick) // interval_ns - 1)
            tick = following

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep; False (at once) if the source is stopped meanwhile."""
        return not await sleep_unless(self.clock, seconds, self._stopping)

    async def gather_once(self) -> Collection | None:
        """Gather once (bounded by the timeout), validate, enqueue; never raises.

        Returns the collection handed to the queue, or None when the gather failed.
        """
        start_ns = self.clock.time_ns()
        t0 = self.clock.monotonic()
        self.stats.gathers += 1
        try:
            points = await self._collect_with_timeout(start_ns)
        except asyncio.CancelledError:
            raise
        except GatherTimeout:
            self.stats.errors += 1
            self.stats.timeouts += 1
            self.stats.last_error = f"timeout after {self.timeout_s:g}s"
            log.warning("source %s: gather timed out after %gs", self.name, self.timeout_s)
            return None
        except Exception as exc:  # a source may fail in any way; the agent stays up
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("source %s: gather failed: %s", self.name, self.stats.last_error)
            return None
        finally:
            self.stats.last_duration_s = self.clock.monotonic() - t0
        valid = self._validate(points, start_ns)
        collection = Collection(self.name, tuple(valid), start_ns)
        if valid and self.intake.offer(collection):
            self.stats.points += len(valid)
        return collection

    async def _collect_with_timeout(self, now_ns: int) -> list[Point]:
        # The timer runs on the injected clock (not asyncio.timeout), so tests drive
        # timeouts with a fake clock instead of waiting for them.
        task = asyncio.ensure_future(self.source.collect(now_ns))
        timer = asyncio.ensure_future(self.clock.sleep(self.timeout_s))
        try:
            done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()
                # Never wait for a source that ignores cancellation; just make sure its
                # eventual exception is retrieved so asyncio does not log it as lost.
                task.add_done_callback(_retrieve)
        if task not in done:
            raise GatherTimeout
        return list(task.result())

    def _validate(self, points: list[Point], now_ns: int) -> list[Point]:
        valid: list[Point] = []
        first_error: WireError | None = None
        for p in points:
            try:
                check_point(p, self.limits, now_ns=now_ns)
            except WireError as exc:
                first_error = first_error or exc
                continue
            valid.append(p)
        if first_error is not None:
            # One line per gather, not per point: a broken profile can make every
            # interface of every poll invalid.
            bad = len(points) - len(valid)
            self.stats.invalid_points += bad
            log.warning("source %s: dropped %d point(s) that break the contract, first: %s",
                        self.name, bad, first_error)
        return valid


def _retrieve(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        task.exception()
