"""The writer: batching by size and interval, retry, 400 split, in-order acks, backpressure.

A fake sink stands in for the database; every wait is for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from collector.metrics import CollectorMetrics
from collector.writer import Chunk, MemoryBuffer, RunningWriter, WriteError


class FakeSink:
    """Records batches; can fail for a while, and refuses lines containing 'BAD'."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.down = False
        self.calls = 0
        self.closed = False

    async def connect(self) -> None:
        pass

    async def write(self, lines: Sequence[str]) -> None:
        self.calls += 1
        await asyncio.sleep(0)
        if self.down:
            raise WriteError("connection", "refused", retryable=True)
        if any("BAD" in line for line in lines):
            raise WriteError("client", "HTTP 400 field type conflict", retryable=False,
                             status=400)
        self.batches.append(list(lines))

    async def close(self) -> None:
        self.closed = True

    @property
    def written(self) -> list[str]:
        return [line for b in self.batches for line in b]


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait for ``cond`` with a deadline (no sleep-and-hope)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def writer_with(sink: FakeSink, **kw: float) -> RunningWriter:
    opts: dict[str, float] = {"batch_max_lines": 4, "flush_interval_s": 30,
                              "retry_min_s": 0.01, "retry_max_s": 0.02,
                              "buffer_max_lines": 100}
    opts.update(kw)
    return RunningWriter(sink, CollectorMetrics(), **opts)  # type: ignore[arg-type]


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_memory_buffer_hands_out_whole_chunks_up_to_the_batch_size() -> None:
    buf = MemoryBuffer()
    done: list[int] = []
    for i, n in enumerate([2, 2, 3, 0, 1]):
        buf.add(Chunk([f"l{i}"] * n, lambda i=i: done.append(i)))  # type: ignore[misc]
    assert [len(c.lines) for c in buf.head(4)] == [2, 2]
    assert [len(c.lines) for c in buf.head(1)] == [2]  # at least one chunk, even if big
    buf.accept(2)
    assert done == [0, 1] and buf.lines == 4
    assert [len(c.lines) for c in buf.head(4)] == [3, 0, 1]


def test_a_full_batch_is_written_at_once_and_acks_follow_in_order() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        w = writer_with(sink)
        task = asyncio.create_task(w.run())
        acked: list[int] = []
        for i in range(4):
            await w.put(Chunk([f"m,i={i} f=1i"], lambda i=i: acked.append(i)))  # type: ignore[misc]
        await until(lambda: acked == [0, 1, 2, 3], "four acks")  # long before the 30 s interval
        assert sink.batches == [[f"m,i={i} f=1i" for i in range(4)]]
        assert w.metrics.written.get() == 4
        await w.close(1)
        await task
        assert sink.closed
    run(scenario)


def test_a_partial_batch_is_written_after_the_flush_interval() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        w = writer_with(sink, flush_interval_s=0.05)
        task = asyncio.create_task(w.run())
        await w.put(Chunk(["a f=1i"]))
        await until(lambda: sink.written == ["a f=1i"], "the interval flush")
        await w.close(1)
        await task
    run(scenario)


def test_early_flush_when_enough_messages_wait_for_their_ack() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        w = RunningWriter(sink, CollectorMetrics(), batch_max_lines=1000, flush_interval_s=30,
                          early_flush_chunks=3)
        task = asyncio.create_task(w.run())
        for i in range(3):
            await w.put(Chunk([f"x{i} f=1i"]))
        await until(lambda: len(sink.written) == 3, "the early flush")
        await w.close(1)
        await task
    run(scenario)


def test_a_bad_line_is_isolated_counted_and_the_rest_written() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        w = writer_with(sink, batch_max_lines=8)
        task = asyncio.create_task(w.run())
        acked: list[int] = []
        lines = [f"m,i={i} f=1i" for i in range(8)]
        lines[5] = "m,i=5 BAD"
        for i in range(0, 8, 2):
            await w.put(Chunk(lines[i:i + 2], lambda i=i: acked.append(i)))  # type: ignore[misc]
        await until(lambda: len(acked) == 4, "all chunks acknowledged")
        assert sorted(sink.written) == sorted(lines[:5] + lines[6:])
        assert w.metrics.rejected_lines.get() == 1
        assert w.metrics.write_errors.get("client") >= 1
        assert acked == [0, 2, 4, 6]
        await w.close(1)
        await task
    run(scenario)


def test_a_down_database_delays_without_losing_and_health_sees_it() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        sink.down = True
        w = writer_with(sink, batch_max_lines=2)
        task = asyncio.create_task(w.run())
        acked: list[int] = []
        for i in range(6):
            await w.put(Chunk([f"p{i} f=1i"], lambda i=i: acked.append(i)))  # type: ignore[misc]
        await until(lambda: sink.calls >= 3, "several failed attempts")
        assert acked == [] and w.failing_since is not None
        assert w.metrics.write_errors.get("connection") >= 3
        sink.down = False
        await until(lambda: acked == list(range(6)), "every chunk written after recovery")
        assert sink.written == [f"p{i} f=1i" for i in range(6)]
        assert w.failing_since is None
        await w.close(1)
        await task
    run(scenario)


def test_a_full_buffer_makes_put_wait_until_space_frees() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        sink.down = True
        w = writer_with(sink, batch_max_lines=2, buffer_max_lines=4)
        task = asyncio.create_task(w.run())
        for i in range(4):
            await w.put(Chunk([f"p{i} f=1i"]))
        blocked = asyncio.create_task(w.put(Chunk(["p4 f=1i"])))
        await until(lambda: sink.calls >= 2, "the writer retrying")
        assert not blocked.done() and w.buffer.lines == 4
        sink.down = False
        await asyncio.wait_for(blocked, 5)
        await until(lambda: len(sink.written) == 5, "everything written")
        await w.close(1)
        await task
    run(scenario)


def test_close_flushes_what_is_buffered_and_gives_up_at_the_deadline() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        w = writer_with(sink, batch_max_lines=100)
        task = asyncio.create_task(w.run())
        await w.put(Chunk(["a f=1i", "b f=1i"]))
        await w.close(5)
        await task
        assert sink.written == ["a f=1i", "b f=1i"]

        down = FakeSink()
        down.down = True
        w = writer_with(down, batch_max_lines=100)
        acked: list[int] = []
        task = asyncio.create_task(w.run())
        await w.put(Chunk(["c f=1i"], lambda: acked.append(1)))
        await w.close(0.1)
        await asyncio.wait_for(task, 5)
        assert acked == [] and w.buffer.lines == 1  # left to the broker to deliver again
    run(scenario)


def test_empty_chunks_are_acknowledged_in_their_place() -> None:
    async def scenario() -> None:
        sink = FakeSink()
        w = writer_with(sink, flush_interval_s=0.02)
        task = asyncio.create_task(w.run())
        order: list[str] = []
        await w.put(Chunk(["a f=1i"], lambda: order.append("a")))
        await w.put(Chunk([], lambda: order.append("dropped")))
        await w.put(Chunk(["b f=1i"], lambda: order.append("b")))
        await until(lambda: len(order) == 3, "three acks")
        assert order == ["a", "dropped", "b"]
        await w.close(1)
        await task
    run(scenario)
