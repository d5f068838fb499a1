"""One suite for every writer buffer (Telegraf's buffer_suite_test.go idea), then the
disk spool's own cases: acknowledged once stored, restart, cold runs, bounds, damage.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.buffer import Buffer, Chunk, MemoryBuffer
from collector.spool import DiskBuffer

Factory = Callable[[], Buffer]


@pytest.fixture(params=["memory", "disk"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[DiskBuffer] = []

    def factory() -> Buffer:
        if request.param == "memory":
            return MemoryBuffer(1000)
        buf = DiskBuffer(tmp_path / "spool.sqlite3", memory_lines=1000)
        opened.append(buf)
        return buf

    yield factory
    for b in opened:
        b.close()


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def lines_of(chunks: list[Chunk]) -> list[str]:
    return [line for c in chunks for line in c.lines]


async def drain(buf: Buffer, max_lines: int = 3, written_at: float | None = None) -> list[str]:
    """Write everything the buffer hands out, batch by batch; the lines in order."""
    out: list[str] = []
    await buf.persist()
    while len(buf):
        await buf.prepare(max_lines)
        chunks = buf.head(max_lines)
        assert chunks, "head must hand out at least one chunk"
        out += lines_of(chunks)
        buf.accept(len(chunks), written_at)
    await buf.persist()
    return out


def add_all(buf: Buffer, n: int, acked: list[int], size: int = 2) -> None:
    for i in range(n):
        buf.add(Chunk([f"m,i={i} f={j}i" for j in range(size)],
                      lambda i=i: acked.append(i)))  # type: ignore[misc]


# -- the suite: every buffer ---------------------------------------------------------


def test_lines_come_out_in_add_order_in_batches_of_at_most_max_lines(make: Factory) -> None:
    async def scenario() -> None:
        buf = make()
        acked: list[int] = []
        add_all(buf, 5, acked)
        got = await drain(buf, max_lines=3)
        assert got == [f"m,i={i} f={j}i" for i in range(5) for j in range(2)]
        assert buf.lines == 0 and len(buf) == 0
    run(scenario())


def test_head_hands_out_at_least_one_chunk_even_if_bigger_than_max_lines(make: Factory) -> None:
    async def scenario() -> None:
        buf = make()
        buf.add(Chunk([f"l{i}" for i in range(10)]))
        await buf.persist()
        await buf.prepare(4)
        assert lines_of(buf.head(4))  # something, never nothing
    run(scenario())


def test_acks_leave_in_add_order_with_empty_chunks_in_their_place(make: Factory) -> None:
    async def scenario() -> None:
        buf = make()
        order: list[str] = []
        buf.add(Chunk(["a f=1i"], lambda: order.append("a")))
        buf.add(Chunk([], lambda: order.append("dropped")))
        buf.add(Chunk(["b f=1i"], lambda: order.append("b")))
        await drain(buf)
        assert order == ["a", "dropped", "b"]
    run(scenario())


def test_settling_lines_are_kept_until_released(make: Factory) -> None:
    async def scenario() -> None:
        buf = make()
        acked: list[int] = []
        add_all(buf, 2, acked)
        await drain(buf, max_lines=2, written_at=10.0)
        add_all(buf, 1, acked)
        await drain(buf, max_lines=2, written_at=20.0)
        assert buf.settling == 6 and buf.lines == 0
        buf.release(15.0)
        assert buf.settling == 2
        buf.release(20.0)
        assert buf.settling == 0
        await buf.persist()
        assert acked == [0, 1, 0]  # (add_all numbers each call from 0)
    run(scenario())


def test_rewind_writes_every_unreleased_line_again_first_and_in_order(make: Factory) -> None:
    async def scenario() -> None:
        buf = make()
        acked: list[int] = []
        add_all(buf, 3, acked)
        first = await drain(buf, max_lines=2, written_at=1.0)
        buf.add(Chunk(["late f=1i"]))
        await buf.persist()
        assert buf.rewind() == 6
        assert buf.settling == 0 and buf.lines == 7
        again = await drain(buf, max_lines=4)
        assert again == [*first, "late f=1i"]
    run(scenario())


def test_has_room_takes_one_chunk_however_big_when_empty(make: Factory) -> None:
    buf = make()
    assert buf.has_room(5000)  # empty: any chunk fits (bound 1000 lines)
    buf.add(Chunk(["x"] * 600))
    assert buf.has_room(400) and not buf.has_room(401)


# -- memory only ---------------------------------------------------------------------


def test_memory_chunks_are_done_only_once_the_database_has_them() -> None:
    async def scenario() -> None:
        buf = MemoryBuffer()
        acked: list[int] = []
        add_all(buf, 2, acked)
        await buf.persist()
        assert acked == []  # memory is never durable
        await drain(buf, written_at=5.0)
        assert acked == []  # written, not yet durable
        buf.release(5.0)
        assert acked == [0, 1]
    run(scenario())


# -- disk only -----------------------------------------------------------------------


def test_disk_chunks_are_acknowledged_once_stored_and_not_before(tmp_path: Path) -> None:
    async def scenario() -> None:
        with_db = DiskBuffer(tmp_path / "s.sqlite3")
        acked: list[int] = []
        add_all(with_db, 3, acked)
        assert acked == [] and with_db.staged == 3
        await with_db.persist()
        assert acked == [0, 1, 2] and with_db.lines == 6  # stored, not written
        with_db.close()
    run(scenario())


def test_disk_restart_writes_everything_not_released_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "s.sqlite3"
        buf = DiskBuffer(path, memory_lines=4)
        acked: list[int] = []
        add_all(buf, 3, acked)
        await buf.persist()
        await buf.prepare(2)
        buf.accept(len(buf.head(2)), 1.0)  # the first chunk written, settling
        add_all(buf, 2, acked)  # staged only: not acknowledged, so not kept
        buf.close()  # a crash: no final persist

        again = DiskBuffer(path, memory_lines=4)
        assert again.lines == 6 and len(again) == 1  # one segment of three chunks
        got = await drain(again, max_lines=4)
        assert got == [f"m,i={i} f={j}i" for i in range(3) for j in range(2)]
        assert acked == [0, 1, 2]
        again.close()
        assert DiskBuffer(path).lines == 0  # accepted without settling: deleted
    run(scenario())


def test_disk_memory_stays_bounded_and_cold_segments_come_back_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        buf = DiskBuffer(tmp_path / "s.sqlite3", memory_lines=10)
        want: list[str] = []
        for i in range(40):  # 40 persists of 3 lines: most of them cold
            lines = [f"p{i}-{j} f=1i" for j in range(3)]
            want += lines
            buf.add(Chunk(lines))
            await buf.persist()
        assert buf._mem_lines <= 10 and buf.lines == 120
        got = await drain(buf, max_lines=7)
        assert got == want
        assert buf.stored_bytes == 0 and buf._mem_lines == 0
        buf.close()
    run(scenario())


def test_disk_full_stops_intake_until_released_lines_are_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        buf = DiskBuffer(tmp_path / "s.sqlite3", max_bytes=1)
        buf.add(Chunk(["a f=1i"]))
        await buf.persist()
        assert not buf.has_room(1)  # full: the broker keeps the rest meanwhile
        await buf.prepare(10)
        buf.accept(len(buf.head(10)), 2.0)
        await buf.persist()
        assert not buf.has_room(1)  # written, not durable yet: still stored
        buf.release(2.0)
        await buf.persist()
        assert buf.has_room(1) and buf.stored_bytes == 0
        buf.close()
    run(scenario())


def test_disk_failed_commit_keeps_chunks_staged_and_unacknowledged(tmp_path: Path) -> None:
    async def scenario() -> None:
        buf = DiskBuffer(tmp_path / "s.sqlite3")
        acked: list[int] = []
        add_all(buf, 2, acked)
        real, buf._db = buf._db, sqlite3.connect(":memory:", check_same_thread=False)
        with pytest.raises(Exception, match="cannot write to spool"):
            await buf.persist()  # no such table: nothing stored
        assert acked == [] and buf.staged == 2
        buf._db.close()
        buf._db = real
        await buf.persist()
        assert acked == [0, 1] and buf.lines == 4
        buf.close()
    run(scenario())


def test_disk_damaged_file_is_moved_aside_and_a_new_spool_starts(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    buf = DiskBuffer(path)
    assert buf.lines == 0
    assert list(tmp_path.glob("s.sqlite3.corrupt-*"))
    buf.close()


def test_disk_damaged_segment_is_counted_and_the_rest_is_written(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "s.sqlite3"
        buf = DiskBuffer(path)
        for i in range(3):
            buf.add(Chunk([f"s{i} f=1i"]))
            await buf.persist()
        buf.close()
        with sqlite3.connect(path) as db:
            db.execute("UPDATE segment SET data = x'00ff' WHERE id = 2")
        again = DiskBuffer(path)
        assert await drain(again) == ["s0 f=1i", "s2 f=1i"]
        assert again.lost_lines == 1
        again.close()
    run(scenario())


def test_disk_is_wal_with_full_sync(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "s.sqlite3")
    assert buf._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert buf._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    buf.close()


class Recording:
    """A state source: saves what it is given, remembers what was committed."""

    def __init__(self) -> None:
        self.value = b"0"
        self.committed_values: list[bytes] = []

    def snapshot(self) -> dict[str, bytes]:
        return {"k": self.value}

    def committed(self, snapshot: dict[str, bytes]) -> None:
        self.committed_values.append(snapshot["k"])


def test_disk_state_is_saved_in_the_same_commit_as_the_chunks(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "s.sqlite3"
        buf = DiskBuffer(path)
        src = Recording()
        buf.state_source = src
        buf.add(Chunk(["a f=1i"]))
        src.value = b"1"  # observed with chunk a
        await buf.persist()
        buf.add(Chunk(["b f=1i"]))
        src.value = b"2"  # observed with chunk b, which is never stored (crash)
        buf.close()
        again = DiskBuffer(path)
        assert again.loaded_state == {"k": b"1"} and again.lines == 1
        again.close()
    run(scenario())
