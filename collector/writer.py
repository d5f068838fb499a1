"""Writing line protocol to the database: a sink, a buffer, and the wrapper that batches.

The shape is Telegraf's: a *sink* only connects, writes one batch and closes
(``Output.Connect/Write/Close``); everything shared lives once in :class:`RunningWriter`
(``models/running_output.go``): batching by size and interval, retry with backoff on
5xx, timeouts and connection errors, and on a 400 splitting the batch to isolate the
bad lines (counted, dropped) while the rest is written.

Data moves in :class:`Chunk` s, one per MQTT message, each with a callback that
acknowledges the message to the broker. The :class:`MemoryBuffer` calls it only when
the chunk is written, so a down database *delays* data and never loses it: the buffer
fills, :meth:`RunningWriter.put` waits, the subscriber stops taking messages and the
broker keeps them queued in the collector's persistent session.

Seam for durable spooling (issue 6): a disk buffer with the same three methods (``add``
/ ``head`` / ``accept``) that calls ``on_done`` once a chunk is fsynced instead of once
it is written; RunningWriter does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from collector.metrics import CollectorMetrics

log = logging.getLogger("schoolnet.collector.writer")


class WriteError(Exception):
    """A failed write. ``retryable`` False means the lines themselves were refused."""

    def __init__(self, kind: str, detail: str, *, retryable: bool,
                 status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # server | timeout | connection | client | config
        self.detail = detail
        self.retryable = retryable
        self.status = status


#: HTTP statuses that mean "these lines are bad": split the batch to find them. Other
#: 4xx (401, 403, 404: a token or bucket problem) say nothing about the lines and are
#: retried like 5xx, so a configuration mistake delays data instead of dropping it.
SPLIT_STATUSES = frozenset({400, 413, 422})


class Sink(Protocol):
    """Where batches of line protocol go (the database)."""

    async def connect(self) -> None:
        """Prepare to write (create clients); must not fail if the database is down."""
        ...

    async def write(self, lines: Sequence[str]) -> None:
        """Write one batch, all or nothing; raise :class:`WriteError` on failure."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


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


class MemoryBuffer:
    """A FIFO of chunks in memory, counted in lines; chunks are done once written."""

    def __init__(self) -> None:
        self._chunks: deque[Chunk] = deque()
        self.lines = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, chunk: Chunk) -> None:
        """Append a chunk (the caller bounds the size)."""
        self._chunks.append(chunk)
        self.lines += len(chunk.lines)

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

    def accept(self, count: int) -> None:
        """Remove the ``count`` oldest chunks as written and mark them done, in order."""
        for _ in range(count):
            c = self._chunks.popleft()
            self.lines -= len(c.lines)
            c.done()


class RunningWriter:
    """Batches chunks to a sink with retry, backoff and bad-line isolation.

    Start :meth:`run` as a task; :meth:`put` adds a chunk (waits while the buffer is
    full); :meth:`close` flushes what is buffered within a deadline and stops.
    """

    def __init__(
        self,
        sink: Sink,
        metrics: CollectorMetrics,
        *,
        batch_max_lines: int = 5000,
        flush_interval_s: float = 1.0,
        buffer_max_lines: int = 200_000,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        early_flush_chunks: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.buffer = MemoryBuffer()
        self.batch_max_lines = batch_max_lines
        self.flush_interval_s = flush_interval_s
        self.buffer_max_lines = buffer_max_lines
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        #: Flush as soon as this many chunks wait: messages are acknowledged only once
        #: written, and the broker sends no more than its in-flight window until then.
        self.early_flush_chunks = early_flush_chunks
        self._clock = clock
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()  # set by close(): ends a retry pause at once
        self._space = asyncio.Event()
        self._closing = False
        self._deadline: float | None = None
        #: Since when writes fail (None while they succeed); /healthz reads it.
        self.failing_since: float | None = None
        self.last_error: str = ""
        metrics.buffer_lines.read = lambda: [((), float(self.buffer.lines))]

    async def put(self, chunk: Chunk) -> None:
        """Queue a chunk; waits while the buffer is full (backpressure to the broker)."""
        while self.buffer.lines and self.buffer.lines + len(chunk.lines) > self.buffer_max_lines:
            self._space.clear()
            await self._space.wait()
        self.buffer.add(chunk)
        if self.buffer.lines >= self.batch_max_lines or (
            self.early_flush_chunks is not None and len(self.buffer) >= self.early_flush_chunks
        ):
            self._wake.set()

    async def close(self, deadline_s: float) -> None:
        """Ask :meth:`run` to flush everything within ``deadline_s`` and return."""
        self._closing = True
        self._deadline = self._clock() + deadline_s
        self._wake.set()
        self._closed.set()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    async def run(self) -> None:
        """Write batches until closed and drained (or the close deadline passes)."""
        await self.sink.connect()
        try:
            while True:
                if self._closing and (not self.buffer.lines and not len(self.buffer)):
                    break
                if self._closing and self._past_deadline():
                    log.warning("shutdown deadline passed with %d lines unwritten; their "
                                "messages stay unacknowledged at the broker",
                                self.buffer.lines)
                    break
                if not self._closing:
                    await self._wait_for_batch()
                if len(self.buffer):
                    await self._write_head()
        finally:
            await self.sink.close()

    async def _wait_for_batch(self) -> None:
        if self.buffer.lines >= self.batch_max_lines:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
        self._wake.clear()

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` between retries; once closing, retry at least every 0.5 s."""
        if self._closing:
            await asyncio.sleep(min(delay, 0.5))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), delay)

    async def _write_head(self) -> None:
        """Write the oldest batch; retry until written or closing past the deadline."""
        chunks = self.buffer.head(self.batch_max_lines)
        lines = [line for c in chunks for line in c.lines]
        # Segments still to write; a 400 splits a segment in two until the bad lines
        # are single, so a retryable failure resumes where it stopped.
        pending: list[list[str]] = [lines] if lines else []
        delay = self.retry_min_s
        while pending:
            seg = pending[0]
            try:
                started = self._clock()
                await self.sink.write(seg)
            except WriteError as exc:
                self.metrics.write_errors.inc(exc.kind)
                self.last_error = str(exc)
                if not exc.retryable:
                    pending.pop(0)
                    if len(seg) == 1:
                        self.metrics.rejected_lines.inc()
                        log.warning("database refused a line (%s): %.200s", exc.detail, seg[0])
                    else:
                        half = len(seg) // 2
                        pending[0:0] = [seg[:half], seg[half:]]
                    continue
                if self.failing_since is None:
                    self.failing_since = self._clock()
                    log.warning("write failed, will retry: %s", exc)
                if self._closing and self._past_deadline():
                    return
                await self._pause(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.metrics.write_seconds.observe(self._clock() - started)
            self.metrics.written.inc(amount=len(seg))
            if self.failing_since is not None:
                log.warning("writes succeed again after %.1f s", self._clock() - self.failing_since)
            self.failing_since = None
            pending.pop(0)
        self.buffer.accept(len(chunks))
        self._space.set()


class InfluxSink:
    """Writes to InfluxDB ``/api/v2/write`` (1.8+, 2.x, 3.x, VictoriaMetrics).

    Uses influxdb-client's synchronous write API in a worker thread: its async client
    needs aiohttp, a second HTTP stack the collector does not otherwise need, and one
    request per batch of thousands of lines makes a thread hop negligible. The event
    loop keeps decoding messages while a batch is on the wire. The client's own retries
    are off (``retries=False`` is its default): :class:`RunningWriter` owns retrying.
    """

    def __init__(self, url: str, *, token: str | None, org: str, bucket: str,
                 timeout_s: float = 10.0) -> None:
        self.url = url
        self.org = org
        self.bucket = bucket
        self.timeout_s = timeout_s
        self._token = token
        self._client: Any = None
        self._write_api: Any = None

    async def connect(self) -> None:
        """Create the HTTP client (no request is made: the database may be down)."""
        # Imported here: influxdb-client is slow to import, and `--help` should not be.
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = InfluxDBClient(url=self.url, token=self._token or "", org=self.org,
                                      timeout=int(self.timeout_s * 1000))
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    async def write(self, lines: Sequence[str]) -> None:
        """POST one batch; raise :class:`WriteError` classified for retry or split."""
        body = "\n".join(lines).encode()
        await asyncio.to_thread(self._write_sync, body)

    def _write_sync(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError, NewConnectionError
        from urllib3.exceptions import TimeoutError as Urllib3Timeout

        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=body,
                                  write_precision="ns")
        except ApiException as exc:
            status = int(exc.status or 0)
            detail = f"HTTP {status} {str(exc.body or exc.reason or '')[:300]}"
            if status in SPLIT_STATUSES:
                raise WriteError("client", detail, retryable=False, status=status) from None
            kind = "server" if status >= 500 or status == 429 else "config"
            raise WriteError(kind, detail, retryable=True, status=status) from None
        except NewConnectionError as exc:  # a subclass of a timeout in urllib3 2.x
            raise WriteError("connection", str(exc)[:300], retryable=True) from None
        except Urllib3Timeout as exc:
            raise WriteError("timeout", str(exc)[:300], retryable=True) from None
        except (HTTPError, OSError) as exc:
            raise WriteError("connection", str(exc)[:300], retryable=True) from None

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
