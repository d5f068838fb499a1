"""RunningSource: aligned schedule, jitter, timeouts, isolation of failing sources."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from agent.running import Collection, Intake, RunningSource, next_tick_ns
from schoolnet.wire import Point
from tests.unit.agent_fakes import (
    NS,
    START_NS,
    CountingSource,
    FailingSource,
    FakeClock,
    HangingSource,
)


@pytest.mark.parametrize(
    ("now", "interval", "offset", "expected"),
    [
        (0, 60, 0, 60),  # exactly on a tick: the next one, never the same again
        (1, 60, 0, 60),
        (59, 60, 0, 60),
        (60, 60, 0, 120),
        (5, 60, 7, 7),  # offset shifts every tick
        (7, 60, 7, 67),
        (100, 60, 7, 127),
        (1_800_000_010, 60, 0, 1_800_000_060),
    ],
)
def test_next_tick_is_the_first_aligned_tick_after_now(now: int, interval: int, offset: int,
                                                       expected: int) -> None:
    assert next_tick_ns(now, interval, offset) == expected


def drain(intake: Intake) -> list[Collection]:
    out = []
    while not intake.queue.empty():
        out.append(intake.queue.get_nowait())
    return out


def test_gathers_on_wall_clock_aligned_ticks() -> None:
    async def main() -> None:
        clock = FakeClock(START_NS + 10 * NS)  # 10 s after a whole minute
        intake = Intake()
        src = CountingSource("c")
        rs = RunningSource(src, intake, interval_s=60, jitter_s=0, clock=clock)
        task = asyncio.create_task(rs.run())
        await clock.wait_sleepers(1)
        assert clock.pending() == [50.0]  # to the next whole minute
        clock.advance(50)
        await clock.wait_until(lambda: intake.queue.qsize() == 1)
        await clock.wait_sleepers(1)
        assert clock.pending() == [60.0]
        clock.advance(60)
        await clock.wait_until(lambda: intake.queue.qsize() == 2)
        task.cancel()
        got = drain(intake)
        assert [c.gathered_ns for c in got] == [START_NS + 60 * NS, START_NS + 120 * NS]
        assert [c.points[0].fields["uptime_s"] for c in got] == [1, 2]
        assert rs.stats.gathers == 2 and rs.stats.points == 2 and rs.stats.errors == 0

    asyncio.run(main())


def test_start_jitter_is_a_fixed_offset_within_the_interval() -> None:
    async def main() -> None:
        clock = FakeClock(START_NS)
        offsets = []
        for seed in range(20):
            rs = RunningSource(CountingSource("c"), Intake(), interval_s=60, jitter_s=30,
                               clock=clock, rng=random.Random(seed))
            offsets.append(rs.offset_s)
        assert all(0 <= o < 30 for o in offsets)
        assert len(set(offsets)) == 20  # sources spread out instead of firing together

        intake = Intake()
        rs = RunningSource(CountingSource("c"), intake, interval_s=60, jitter_s=60,
                           clock=clock, rng=random.Random(1))
        task = asyncio.create_task(rs.run())
        for i in range(1, 4):
            await clock.wait_sleepers(1)
            clock.advance(clock.pending()[0])
            await clock.wait_until(lambda i=i: intake.queue.qsize() == i)
        task.cancel()
        # Every gather lands on k * 60 s + the same offset, one interval apart.
        stamps = [c.gathered_ns - START_NS for c in drain(intake)]
        assert [s % (60 * NS) for s in stamps] == [round(rs.offset_s * NS)] * 3
        assert [b - a for a, b in itertools.pairwise(stamps)] == [60 * NS] * 2

    asyncio.run(main())


def test_timeout_counts_an_error_and_cancels_the_hung_gather() -> None:
    async def main() -> None:
        clock = FakeClock()
        intake = Intake()
        src = HangingSource()
        rs = RunningSource(src, intake, interval_s=60, timeout_s=5, jitter_s=0, clock=clock)
        gather = asyncio.create_task(rs.gather_once())
        await clock.wait_sleepers(1)
        assert clock.pending() == [5.0]
        clock.advance(5)
        assert await gather is None
        assert (rs.stats.gathers, rs.stats.errors, rs.stats.timeouts) == (1, 1, 1)
        assert "timeout" in rs.stats.last_error
        await clock.wait_until(lambda: src.cancelled == 1)
        assert intake.queue.empty()

    asyncio.run(main())


def test_failing_and_hung_sources_do_not_delay_or_stop_the_others() -> None:
    async def main() -> None:
        clock = FakeClock(START_NS)
        intake = Intake()
        good, bad, hung = CountingSource("good"), FailingSource(), HangingSource()
        runners = [RunningSource(s, intake, interval_s=60, timeout_s=50, jitter_s=0,
                                 clock=clock) for s in (good, bad, hung)]
        tasks = [asyncio.create_task(r.run()) for r in runners]
        for tick in range(1, 4):
            await clock.wait_sleepers(3)
            clock.advance(clock.pending()[0])
            # The good source delivers this tick while the hung one is still gathering.
            await clock.wait_until(lambda t=tick: good.calls == t and intake.queue.qsize() == t)
            assert runners[2].stats.timeouts == tick - 1
            await clock.wait_sleepers(3)
            clock.advance(50)  # the hung gather times out
            await clock.wait_until(lambda t=tick: runners[2].stats.timeouts == t)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert [c.source for c in drain(intake)] == ["good"] * 3
        assert runners[0].stats.errors == 0
        assert (runners[1].stats.gathers, runners[1].stats.errors) == (3, 3)
        assert "device unreachable" in runners[1].stats.last_error
        assert (runners[2].stats.errors, runners[2].stats.timeouts) == (3, 3)
        assert hung.cancelled == 3

    asyncio.run(main())


def test_an_overrunning_gather_skips_missed_ticks_instead_of_bursting() -> None:
    class SlowSource:
        name = "slow"

        def __init__(self, clock: FakeClock) -> None:
            self.clock = clock

        async def collect(self, now_ns: int) -> list[Point]:
            self.clock.advance(150)  # this gather takes 2.5 intervals
            return []

    async def main() -> None:
        clock = FakeClock(START_NS)
        rs = RunningSource(SlowSource(clock), Intake(), interval_s=60, timeout_s=1000,
                           jitter_s=0, clock=clock)
        task = asyncio.create_task(rs.run())
        await clock.wait_sleepers(1)
        clock.advance(60)  # tick at 60 s; the gather ends at 210 s
        await clock.wait_until(lambda: rs.stats.gathers == 1 and len(clock.pending()) == 1)
        assert clock.pending() == [30.0]  # next tick at 240 s; 120 s and 180 s skipped
        assert rs.stats.skipped_ticks == 2
        task.cancel()

    asyncio.run(main())


def test_points_that_break_the_contract_are_dropped_and_counted() -> None:
    class MixedSource:
        name = "mixed"

        async def collect(self, now_ns: int) -> list[Point]:
            tags = {"device": "sw-1", "role": "switch", "vendor": "x"}
            return [
                Point("device", tags, {"reachable": True}, now_ns),
                Point("no_such_measurement", tags, {"x": 1}, now_ns),
                Point("device", {**tags, "site": "evil"}, {"reachable": True}, now_ns),
                Point("device", tags, {"uptime_s": float("nan")}, now_ns),
                Point("device", tags, {"uptime_s": 5}, now_ns),
            ]

    async def main() -> None:
        intake = Intake()
        rs = RunningSource(MixedSource(), intake, interval_s=60, clock=FakeClock())
        collection = await rs.gather_once()
        assert collection is not None and len(collection.points) == 2
        assert rs.stats.invalid_points == 3 and rs.stats.points == 2
        assert rs.stats.errors == 0  # the gather itself worked

    asyncio.run(main())


def test_a_full_queue_drops_new_collections_and_counts_them() -> None:
    async def main() -> None:
        intake = Intake(maxsize=2)
        rs = RunningSource(CountingSource("c"), intake, interval_s=60, clock=FakeClock())
        for _ in range(5):
            await rs.gather_once()
        assert intake.queue.qsize() == 2
        assert (intake.dropped_collections, intake.dropped_points) == (3, 3)
        assert rs.stats.points == 2  # only what entered the queue

    asyncio.run(main())


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        RunningSource(CountingSource("c"), Intake(), interval_s=0)


def test_stop_lets_a_gather_in_progress_finish_and_starts_no_new_one() -> None:
    class GatedSource:
        name = "gated"

        def __init__(self) -> None:
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def collect(self, now_ns: int) -> list[Point]:
            self.entered.set()
            await self.release.wait()
            return [Point("device", {"device": "sw-1", "role": "switch", "vendor": "x"},
                          {"reachable": True}, now_ns)]

    async def main() -> None:
        clock = FakeClock(START_NS)
        intake = Intake()
        src = GatedSource()
        rs = RunningSource(src, intake, interval_s=60, timeout_s=30, jitter_s=0, clock=clock)
        task = asyncio.create_task(rs.run())
        await clock.wait_sleepers(1)
        clock.advance(60)
        await asyncio.wait_for(src.entered.wait(), 5)
        rs.stop()
        src.release.set()
        await asyncio.wait_for(task, 5)  # run() returns by itself after the gather
        assert intake.queue.qsize() == 1 and rs.stats.gathers == 1

        idle = RunningSource(CountingSource("c"), Intake(), interval_s=60, clock=clock)
        idle_task = asyncio.create_task(idle.run())
        await clock.wait_sleepers(1)
        idle.stop()  # a source waiting for its tick stops at once
        await asyncio.wait_for(idle_task, 5)
        assert idle.stats.gathers == 0

    asyncio.run(main())
