"""What the writer buffers: chunks of line protocol, and the buffer interface.

Data moves in :class:`Chunk` s, one per MQTT message, each with a callback that
acknowledges the message to the broker. A buffer is transactional in Telegraf's sense
(``models/buffer.go``): :meth:`Buffer.head` hands out the oldest lines without removing
them, :meth:`Buffer.accept` removes them once the database took them. Two
implementations share one test suite (tests/unit/test_collector_buffers.py):

* :class:`MemoryBuffer`: chunks in memory; a chunk is *done* (its message acknowledged)
  only once the database has its lines durably. A down database delays data and never
  loses it: the buffer fills, intake waits, the broker keeps the messages.
* :class:`collector.spool.DiskBuffer`: chunks in a SQLite file in ``state_dir``; a
  chunk is done once it is on disk (fsynced), so the collector keeps acknowledging
  while the database is down and the broker's queue stays short.

Written is not always durable (see collector/durability.py): ``accept(count,
written_at=t)`` keeps the lines until ``release(before)`` says the database has made
everything written up to ``before`` durable, or ``rewind()`` says it may have lost them
and they must be written again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class SpoolError(Exception):
    """A disk buffer cannot be opened, read or written (permissions, full disk, ...)."""


@dataclass(slots=True)
class Chunk:
    """The lines of one message and what to call once they are safe."""

    lines: list[str]
    on_done: Callable[[], None] | None = None

    def done(self) -> None:
        """Tell the producer the lines are safe (written, or durably stored)."""
        if self.on_done is not None:
            self.on_done()
            self.on_done = None


class Buffer(Protocol):
    """The writer's buffer: chunks in, batches of lines out, acknowledgements in order."""

    #: Lines waiting to be written.
    lines: int

    def __len__(self) -> int:
        """Units waiting to be written (chunks, or stored segments)."""
        ...

    @property
    def settling(self) -> int:
        """Lines written but not yet known to be durable in the database."""
        ...

    @property
    def durable(self) -> bool:
        """Whether :meth:`persist` makes added chunks durable (a disk buffer)."""
        ...

    def has_room(self, lines: int = 0) -> bool:
        """Whether a chunk of ``lines`` lines may be added now (else intake waits)."""
        ...

    def add(self, chunk: Chunk) -> None:
        """Append a chunk (its ``done`` is called once it is safe, in add order)."""
        ...

    async def persist(self) -> None:
        """Make the chunks added so far durable and call their ``done`` (disk only)."""
        ...

    async def prepare(self, max_lines: int) -> None:
        """Make the next :meth:`head` complete (load lines kept on disk only)."""
        ...

    def head(self, max_lines: int) -> list[Chunk]:
        """The oldest unwritten lines as chunks, at most ``max_lines`` (at least one)."""
        ...

    def accept(self, count: int, written_at: float | None = None) -> None:
        """The ``count`` chunks of the last head are written.

        ``written_at`` None: the database has them durably. Otherwise they are kept
        until :meth:`release` or :meth:`rewind`.
        """
        ...

    def release(self, written_before: float) -> None:
        """Lines written at or before ``written_before`` are durable: forget them."""
        ...

    def rewind(self) -> int:
        """The database may have lost the unreleased lines: queue them again, first.

        Returns how many lines will be written again.
        """
        ...


class MemoryBuffer:
    """A FIFO of chunks in memory, bounded in lines; chunks are done once durable."""

    def __init__(self, max_lines: int = 200_000) -> None:
        self._chunks: deque[Chunk] = deque()
        self._settling: deque[tuple[float, Chunk]] = deque()
        self.lines = 0
        self._settling_lines = 0
        self.max_lines = max_lines

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def settling(self) -> int:
        """Lines written, not yet known durable."""
        return self._settling_lines

    @property
    def durable(self) -> bool:
        """Memory is not durable: chunks are done only when the database has them."""
        return False

    def has_room(self, lines: int = 0) -> bool:
        """Room for ``lines`` more; an empty buffer takes any chunk, however big."""
        held = self.lines + self._settling_lines
        return not held or held + lines <= self.max_lines

    def add(self, chunk: Chunk) -> None:
        """Append a chunk."""
        self._chunks.append(chunk)
        self.lines += len(chunk.lines)

    async def persist(self) -> None:
        """Nothing to do: memory is never durable."""

    async def prepare(self, max_lines: int) -> None:
        """Nothing to do: every chunk is in memory."""

    def head(self, max_lines: int) -> list[Chunk]:
        """The oldest chunks with at most ``max_lines`` lines (at least one chunk)."""
        out: list[Chunk] = []
        n = 0
        for c in self._chunks:
            if out and n + len(c.lines) > max_lines:
                break
            out.append(c)
            n += len(c.lines)
        return out

    def accept(self, count: int, written_at: float | None = None) -> None:
        """Remove the ``count`` oldest chunks as written; done now, or once released."""
        for _ in range(count):
            c = self._chunks.popleft()
            self.lines -= len(c.lines)
            if written_at is None and not self._settling:
                c.done()
            else:
                # Behind an earlier chunk that is still settling, a chunk waits even if
                # durable: acknowledgements leave in order.
                self._settling.append((written_at if written_at is not None else -1.0, c))
                self._settling_lines += len(c.lines)
        if written_at is None:
            self._release_durable_prefix(None)

    def release(self, written_before: float) -> None:
        """Chunks written at or before ``written_before`` are done, in order."""
        self._release_durable_prefix(written_before)

    def _release_durable_prefix(self, before: float | None) -> None:
        while self._settling:
            at, c = self._settling[0]
            if at >= 0 and (before is None or at > before):
                break
            self._settling.popleft()
            self._settling_lines -= len(c.lines)
            c.done()

    def rewind(self) -> int:
        """Unreleased chunks go back to the front, in their order, to be written again."""
        n = self._settling_lines
        while self._settling:
            _, c = self._settling.pop()
            self._chunks.appendleft(c)
            self.lines += len(c.lines)
        self._settling_lines = 0
        return n
