"""Written is not durable: the incarnation logic, and the writer keeping lines for it.

A fake database acknowledges writes into memory and "persists" them only when told;
a restart (new incarnation) loses what was not persisted, exactly like
VictoriaMetrics killed within its flush window. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from collector.buffer import Chunk, SpoolError
from collector.durability import Decision, DurabilityWatch
from collector.metrics import CollectorMetrics
from collector.spool import DiskBuffer
from collector.writer import RunningWriter, WriteError


def test_an_immediate_database_releases_at_once_and_is_never_probed() -> None:
    w = DurabilityWatch(0)
    assert w.immediate and not w.needs_probe(5.0, settling=True)
    assert w.observe("x", 5.0) == Decision(release_before=5.0)
    assert w.tick(7.0) == Decision(release_before=7.0)
    assert not w.write_failed()


def test_same_incarnation_releases_what_is_older_than_the_window() -> None:
    w = DurabilityWatch(30)
    assert w.needs_probe(0.0, settling=False)  # before the first write
    assert w.observe("A", 0.0).rewind  # first sight: nothing known about earlier writes
    assert not w.needs_probe(0.5, settling=False)
    assert not w.needs_probe(0.5, settling=True)  # about once a second
    assert w.needs_probe(1.0, settling=True)
    assert w.observe("A", 40.0) == Decision(release_before=10.0)
    assert w.restarts == 0


def test_a_new_incarnation_means_a_restart_and_everything_unreleased_is_rewritten() -> None:
    w = DurabilityWatch(30)
    w.observe("A", 0.0)
    assert w.observe("B", 50.0) == Decision(rewind=True)
    assert w.restarts == 1 and w.since == 50.0
    assert w.observe("B", 90.0) == Decision(release_before=60.0)


def test_without_an_incarnation_time_decides_and_a_failed_write_rewinds() -> None:
    w = DurabilityWatch(30)
    assert w.observe(None, 0.0) == Decision(release_before=-30.0)
    assert not w.supported and not w.needs_probe(100.0, settling=True)
    assert w.tick(100.0) == Decision(release_before=70.0)
    assert w.write_failed()


class VolatileDb:
    """Acknowledges into memory; ``persist()`` makes it durable; ``restart()`` loses the rest."""

    def __init__(self) -> None:
        self.durable: list[str] = []
        self.memory: list[str] = []
        self.generation = 1
        self.down = False
        self.probes = 0

    async def connect(self) -> None:
        pass

    async def write(self, lines: Sequence[str]) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise WriteError("connection", "refused", retryable=True)
        self.memory += lines

    async def close(self) -> None:
        pass

    async def incarnation(self) -> str | None:
        self.probes += 1
        if self.down:
            raise WriteError("connection", "refused", retryable=True)
        return f"gen-{self.generation}"

    def persist(self) -> None:
        self.durable += self.memory
        self.memory = []

    def restart(self) -> None:
        self.memory = []
        self.generation += 1

    @property
    def lines(self) -> set[str]:
        return set(self.durable) | set(self.memory)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_lines_lost_by_a_database_restart_are_written_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        db, clock = VolatileDb(), Clock()
        spool = DiskBuffer(tmp_path / "s.sqlite3")
        w = RunningWriter(db, CollectorMetrics(), buffer=spool, batch_max_lines=10,
                          flush_interval_s=0.01, durable_after_s=30, clock=clock)
        task = asyncio.create_task(w.run())
        for i in range(5):
            await w.put(Chunk([f"m i={i}i"]))
        await until(lambda: len(db.memory) == 5, "five lines acknowledged by the database")
        assert spool.settling == 5  # kept: the database has them in memory only
        db.restart()  # killed within its flush window: the five are gone
        clock.now += 1  # the next probe (about once a second) sees the new incarnation
        await until(lambda: db.lines == {f"m i={i}i" for i in range(5)}, "written again")
        assert w.durability.restarts == 1
        assert w.metrics.rewritten_lines.get() == 5
        db.persist()
        clock.now += 31  # the database has lived past the window since the rewrite
        await until(lambda: spool.settling == 0, "released once durable")
        await until(lambda: spool.stored_bytes == 0, "deleted from the spool")
        await w.close(1)
        await task
        spool.close()
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_with_a_memory_buffer_acks_wait_until_the_lines_are_durable() -> None:
    async def scenario() -> None:
        db, clock = VolatileDb(), Clock()
        w = RunningWriter(db, CollectorMetrics(), batch_max_lines=10, flush_interval_s=0.01,
                          durable_after_s=30, clock=clock)
        task = asyncio.create_task(w.run())
        acked: list[int] = []
        await w.put(Chunk(["a f=1i"], lambda: acked.append(1)))
        await until(lambda: db.memory == ["a f=1i"], "written")
        await asyncio.sleep(0.05)
        assert acked == []  # acknowledged by the database, not durable yet
        clock.now += 31
        await until(lambda: acked == [1], "acknowledged once the window has passed")
        await w.close(1)
        await task
    asyncio.run(asyncio.wait_for(scenario(), 20))


class FlakySpool(DiskBuffer):
    """A disk buffer whose reads fail a few times (a failing disk), then work."""

    failures = 2

    async def prepare(self, max_lines: int) -> None:
        if self.failures:
            self.failures -= 1
            raise SpoolError("cannot read spool: disk I/O error")
        await super().prepare(max_lines)


def test_a_spool_read_error_is_retried_not_fatal(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = VolatileDb()
        spool = FlakySpool(tmp_path / "s.sqlite3")
        w = RunningWriter(db, CollectorMetrics(), buffer=spool, flush_interval_s=0.01)
        task = asyncio.create_task(w.run())
        await w.put(Chunk(["a f=1i"]))
        await until(lambda: db.memory == ["a f=1i"], "written once the disk reads again", 10)
        assert w.metrics.spool_errors.get() == 2 and not task.done()
        await w.close(1)
        await task
        spool.close()
    asyncio.run(asyncio.wait_for(scenario(), 20))
