"""DiskBuffer: the collector's durable spool, one SQLite file (WAL) in ``state_dir``.

With it the collector acknowledges a message to the broker once its lines are on disk
here, not once the database has them. A database outage then fills this spool instead
of the broker's queue (Mosquitto keeps queued messages in memory and writes them out only
every ``autosave_interval``; a broker killed meanwhile loses them). When the database
is back the spool is written out in order; after a collector restart everything still
in it is written again (replays are harmless: same series and timestamp).

Layout and life of the data::

    add(chunk)      -> staged in memory (not yet acknowledged)
    persist()       -> one transaction: the staged lines become one *segment* row,
                       released segments are deleted, changed per-site seq state is
                       saved; fsync (WAL, synchronous=FULL); then the staged chunks'
                       acknowledgements go out, in order
    head()/accept() -> the writer takes lines from the oldest segments
    release()       -> segments the database has durably are deleted (next persist)
    rewind()        -> segments written but not yet released go back to the front

Memory stays bounded however long the database is away: at most ``memory_lines`` lines
of pending segments are kept in memory, the rest are *cold* (on disk only, one
:class:`_ColdRun` per run of consecutive rows) and are loaded when they reach the front.
Disk is bounded by ``max_bytes`` (compressed lines): when it is full, intake waits and
the broker keeps the rest, so the collector itself never drops data.

The per-site seq state (schoolnet/wire.py ``SeqTracker``) is saved in the same
transaction as the chunks whose seqs it contains, so after a crash it never claims a
seq whose lines are not stored: a redelivered message is a duplicate exactly when its
lines are safe (collector/seqstate.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from collector.buffer import Buffer, Chunk, MemoryBuffer, SpoolError
from collector.seqstate import SeqState
from schoolnet.sqlitefile import open_durable

if TYPE_CHECKING:
    from collector.config import CollectorConfig
    from collector.metrics import CollectorMetrics
    from collector.validate import SiteState

log = logging.getLogger("schoolnet.collector.spool")

FILE_NAME = "spool.sqlite3"
SCHEMA_VERSION = 1
#: 8 GiB of zlib-compressed line protocol (~5-8x smaller than the text): about a day
#: of 500 switch messages per second, a whole weekend for a typical city.
DEFAULT_MAX_BYTES = 8 * 1024**3  # the config's default (collector/config.py)


class StateSource(Protocol):
    """Extra state saved atomically with the chunks (the per-site seq trackers)."""

    def snapshot(self) -> dict[str, bytes]:
        """Values changed since the last :meth:`committed` (taken with the staged chunks)."""
        ...

    def committed(self, snapshot: Mapping[str, bytes]) -> None:
        """The snapshot is on disk."""
        ...


@dataclass(eq=False, slots=True)
class _Segment:
    """One stored row: the lines of the chunks of one persist."""

    rowid: int
    n: int
    size: int
    lines: list[str] | None  # None: on disk only (loaded by prepare)
    offset: int = 0  # lines already written (only the front segment is ever partial)
    written_at: float | None = None


@dataclass(eq=False, slots=True)
class _ColdRun:
    """Consecutive pending rows ``first``..``last`` that are not in memory."""

    first: int
    last: int
    n: int
    count: int
    size: int


class DiskBuffer:
    """The writer's buffer on disk (see the module docstring). Open one per collector."""

    def __init__(self, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 memory_lines: int = 200_000, compress_level: int = 1) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.memory_lines = memory_lines
        self._level = compress_level
        self._lock = threading.Lock()  # one connection, used from worker threads
        self._persist_lock = asyncio.Lock()
        self.state_source: StateSource | None = None
        self._staged: list[Chunk] = []
        self._staged_lines = 0
        self._acks: deque[Chunk] = deque()  # added, not yet stored: in add order
        self._pending: deque[_Segment | _ColdRun] = deque()
        self._settling: deque[_Segment] = deque()
        self._to_delete: list[tuple[int, int]] = []  # (rowid, size)
        self._head: list[tuple[_Segment, int]] = []
        self.lines = 0  # unwritten lines in segments
        self._settling_lines = 0
        self._mem_lines = 0  # lines of pending segments held in memory
        self.stored_bytes = 0
        self.lost_lines = 0  # unreadable segments (a damaged file), dropped
        # An unreadable file is moved aside and an empty spool begins (schoolnet/sqlitefile.py).
        self._db = open_durable(self.path, self._setup, SpoolError, log)
        self.loaded_state = self._load()

    # -- opening -----------------------------------------------------------------------

    def _setup(self, db: sqlite3.Connection, version: int) -> None:
        """Create the schema (schoolnet/sqlitefile.py opens the file; FULL sync: a commit
        is on disk before the broker hears "acknowledged")."""
        if version == 0:
            db.execute("BEGIN IMMEDIATE")
            # AUTOINCREMENT: row ids never come back, so id order is add order.
            db.execute("CREATE TABLE IF NOT EXISTS segment (id INTEGER PRIMARY KEY"
                       " AUTOINCREMENT, lines INTEGER NOT NULL, size INTEGER NOT NULL,"
                       " data BLOB NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY,"
                       " value BLOB NOT NULL)")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        elif version != SCHEMA_VERSION:
            raise SpoolError(f"spool {self.path} has schema {version}, "
                             f"this collector knows {SCHEMA_VERSION}")

    def _load(self) -> dict[str, bytes]:
        """Everything stored is pending again: one cold run; returns the saved state."""
        count, first, last, n, size = self._db.execute(
            "SELECT COUNT(*), MIN(id), MAX(id), COALESCE(SUM(lines), 0),"
            " COALESCE(SUM(size), 0) FROM segment").fetchone()
        if count:
            self._pending.append(_ColdRun(int(first), int(last), int(n), int(count), int(size)))
            self.lines = int(n)
            self.stored_bytes = int(size)
            log.info("spool: %d line(s) from before the restart will be written again", n)
        return {str(k): bytes(v) for k, v in self._db.execute("SELECT key, value FROM state")}

    # -- the Buffer interface ----------------------------------------------------------

    def __len__(self) -> int:
        return sum(e.count if isinstance(e, _ColdRun) else 1 for e in self._pending)

    @property
    def settling(self) -> int:
        """Lines written but not yet known durable in the database."""
        return self._settling_lines

    @property
    def durable(self) -> bool:
        """Chunks are durable (and acknowledged) once :meth:`persist` stored them."""
        return True

    @property
    def staged(self) -> int:
        """Chunks added but not yet stored (their messages are not acknowledged yet)."""
        return len(self._acks)

    def has_room(self, lines: int = 0) -> bool:
        """Room while staged lines fit in memory and the file is below ``max_bytes``."""
        if self.stored_bytes >= self.max_bytes:
            return False
        return not self._staged_lines or self._staged_lines + lines <= self.memory_lines

    def add(self, chunk: Chunk) -> None:
        """Stage a chunk; it is stored (and acknowledged) by the next :meth:`persist`."""
        self._acks.append(chunk)
        if chunk.lines:
            self._staged.append(chunk)
            self._staged_lines += len(chunk.lines)

    async def persist(self) -> None:
        """Store what was staged, delete what was released, save the state: one commit."""
        async with self._persist_lock:
            staged, self._staged = self._staged, []
            staged_lines, self._staged_lines = self._staged_lines, 0
            acks = len(self._acks)
            deletes, self._to_delete = self._to_delete, []
            state = self.state_source.snapshot() if self.state_source is not None else {}
            if not staged and not deletes and not state:
                self._done(acks)  # only empty chunks (drops, duplicates) waited
                return
            lines = [line for c in staged for line in c.lines]
            try:
                rowid, size = await asyncio.to_thread(self._commit, lines, deletes, state)
            except (sqlite3.Error, OSError) as exc:
                # Nothing was stored: put everything back for the next attempt.
                self._staged[0:0] = staged
                self._staged_lines += staged_lines
                self._to_delete[0:0] = deletes
                raise SpoolError(f"cannot write to spool {self.path}: {exc}") from exc
            if self.state_source is not None and state:
                self.state_source.committed(state)
            self.stored_bytes += size - sum(s for _, s in deletes)
            if rowid is not None:
                self._append_segment(rowid, lines, size)
            self._done(acks)

    def _done(self, count: int) -> None:
        for _ in range(count):
            self._acks.popleft().done()

    def _commit(self, lines: list[str], deletes: list[tuple[int, int]],
                state: Mapping[str, bytes]) -> tuple[int | None, int]:
        """One transaction (worker thread): insert a segment, delete, save state."""
        blob = zlib.compress("\n".join(lines).encode(), self._level) if lines else b""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rowid = None
                if lines:
                    cur = self._db.execute(
                        "INSERT INTO segment (lines, size, data) VALUES (?, ?, ?)",
                        (len(lines), len(blob), blob))
                    rowid = cur.lastrowid
                for i in range(0, len(deletes), 500):
                    ids = [r for r, _ in deletes[i:i + 500]]
                    self._db.execute(
                        f"DELETE FROM segment WHERE id IN ({','.join('?' * len(ids))})", ids)
                if state:
                    self._db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                                         list(state.items()))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return rowid, len(blob)

    def _append_segment(self, rowid: int, lines: list[str], size: int) -> None:
        n = len(lines)
        self.lines += n
        back = self._pending[-1] if self._pending else None
        if self._mem_lines + n <= self.memory_lines or not self._pending:
            self._pending.append(_Segment(rowid, n, size, lines))
            self._mem_lines += n
        elif isinstance(back, _ColdRun):
            back.last, back.n, back.count, back.size = rowid, back.n + n, back.count + 1, \
                back.size + size
        else:
            self._pending.append(_ColdRun(rowid, rowid, n, 1, size))

    async def prepare(self, max_lines: int) -> None:
        """Load the lines the next :meth:`head` hands out, if they are on disk only."""
        want: list[_Segment] = []
        run: _ColdRun | None = None
        budget = max_lines
        for e in self._pending:
            if budget <= 0:
                break
            if isinstance(e, _ColdRun):
                run = e
                break
            if e.lines is None:
                want.append(e)
            budget -= e.n - e.offset
        if not want and run is None:
            return
        limit = max(1, budget // max(1, run.n // run.count)) if run is not None else 0
        rows = await asyncio.to_thread(self._read, [s.rowid for s in want], run, limit)
        for s in want:
            s.lines = self._decode(rows.pop(s.rowid, None), s.n)
            self._mem_lines += s.n
        if run is not None and not rows:
            # The rows of this run are gone (a damaged file): it can never be written.
            self.lost_lines += run.n
            self.lines -= run.n
            self.stored_bytes -= run.size
            self._pending.remove(run)
            log.error("spool: %d line(s) in rows %d-%d are missing; dropped",
                      run.n, run.first, run.last)
        elif run is not None:
            loaded = [_Segment(rid, n, size, self._decode(data, n))
                      for rid, (n, size, data) in sorted(rows.items())]
            # The run may have grown at its end meanwhile (persist); it shrinks at the front.
            run.first = loaded[-1].rowid + 1
            run.n -= sum(s.n for s in loaded)
            run.count -= len(loaded)
            run.size -= sum(s.size for s in loaded)
            i = self._pending.index(run)
            if run.count == 0:
                del self._pending[i]
            for s in reversed(loaded):
                self._pending.insert(i, s)
                self._mem_lines += s.n

    def _read(self, rowids: list[int], run: _ColdRun | None,
              limit: int) -> dict[int, tuple[int, int, bytes]]:
        with self._lock:
            try:
                out: dict[int, tuple[int, int, bytes]] = {}
                if rowids:
                    q = f"SELECT id, lines, size, data FROM segment WHERE id IN " \
                        f"({','.join('?' * len(rowids))})"
                    for rid, n, size, data in self._db.execute(q, rowids):
                        out[int(rid)] = (int(n), int(size), bytes(data))
                if run is not None:
                    for rid, n, size, data in self._db.execute(
                            "SELECT id, lines, size, data FROM segment WHERE id BETWEEN ? AND ?"
                            " ORDER BY id LIMIT ?", (run.first, run.last, limit)):
                        out[int(rid)] = (int(n), int(size), bytes(data))
                return out
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read spool {self.path}: {exc}") from exc

    def _decode(self, row: tuple[int, int, bytes] | bytes | None, n: int) -> list[str]:
        data = row[2] if isinstance(row, tuple) else row
        try:
            if data is None:
                raise ValueError("row is missing")
            lines = zlib.decompress(data).decode().split("\n")
            if len(lines) != n:
                raise ValueError(f"{len(lines)} lines, expected {n}")
            return lines
        except (zlib.error, UnicodeDecodeError, ValueError) as exc:
            # A damaged segment cannot be written; the rest must still be.
            self.lost_lines += n
            log.error("spool: dropped an unreadable segment of %d line(s): %s", n, exc)
            return [""] * n if n else []

    def head(self, max_lines: int) -> list[Chunk]:
        """The oldest unwritten lines, segment by segment, at most ``max_lines``."""
        out: list[Chunk] = []
        self._head = []
        n = 0
        for e in self._pending:
            if not isinstance(e, _Segment) or e.lines is None:
                break
            avail = e.n - e.offset
            take = min(avail, max_lines - n) if out else min(avail, max_lines)
            if take <= 0:
                break
            out.append(Chunk([x for x in e.lines[e.offset:e.offset + take] if x]))
            self._head.append((e, take))
            n += take
            if take < avail or n >= max_lines:
                break
        return out

    def accept(self, count: int, written_at: float | None = None) -> None:
        """The first ``count`` chunks of the last head are written."""
        for seg, take in self._head[:count]:
            seg.offset += take
            self.lines -= take
            if seg.offset < seg.n:
                continue
            front = self._pending.popleft()
            assert front is seg, "accept must follow head"
            self._mem_lines -= seg.n
            seg.lines = None  # on disk; reloaded only if it must be written again
            if written_at is None:
                self._to_delete.append((seg.rowid, seg.size))
            else:
                seg.written_at = written_at
                self._settling.append(seg)
                self._settling_lines += seg.n
        self._head = []

    def release(self, written_before: float) -> None:
        """Segments written at or before ``written_before`` are durable: delete them."""
        while self._settling:
            seg = self._settling[0]
            assert seg.written_at is not None
            if seg.written_at > written_before:
                break
            self._settling.popleft()
            self._settling_lines -= seg.n
            self._to_delete.append((seg.rowid, seg.size))

    def rewind(self) -> int:
        """Unreleased segments (and a partly written front one) are written again."""
        n = self._settling_lines
        front = self._pending[0] if self._pending else None
        if isinstance(front, _Segment) and front.offset:
            n += front.offset
            self.lines += front.offset
            front.offset = 0
        while self._settling:
            seg = self._settling.pop()
            seg.written_at, seg.offset = None, 0
            self._pending.appendleft(seg)
            self.lines += seg.n
        self._settling_lines = 0
        self._head = []
        return n

    # -- the rest ----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """For /api/status and /metrics."""
        return {"segments": len(self) + len(self._settling), "bytes": self.stored_bytes,
                "max_bytes": self.max_bytes, "pending_lines": self.lines,
                "settling_lines": self._settling_lines, "staged_chunks": len(self._acks),
                "lost_lines": self.lost_lines}

    def close(self) -> None:
        """Close the database (staged chunks not persisted stay unacknowledged)."""
        with self._lock:
            self._db.close()


def open_buffer(config: CollectorConfig, sites: Mapping[tuple[str, str], SiteState],
                metrics: CollectorMetrics) -> Buffer:
    """The writer's buffer as configured: the disk spool (seq state restored) or memory."""
    i = config.influx
    if not config.spool.enabled:
        return MemoryBuffer(i.buffer_max_lines)
    spool = DiskBuffer(Path(config.state_dir) / FILE_NAME, max_bytes=config.spool.max_bytes,
                       memory_lines=i.buffer_max_lines)
    seq = SeqState(sites)
    restored = seq.restore(spool.loaded_state, metrics)
    if restored:
        log.info("seq state of %d site(s) restored", restored)
    spool.state_source = seq
    metrics.spool_bytes.read = lambda: [((), float(spool.stored_bytes))]
    metrics.spool_segments.read = lambda: [((), float(spool.stats()["segments"]))]
    return spool
