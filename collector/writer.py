"""Writing line protocol to the database: a sink, a buffer, and the wrapper that batches.

The shape is Telegraf's: a *sink* only connects, writes one batch and closes
(``Output.Connect/Write/Close``); everything shared lives once in :class:`RunningWriter`
(``models/running_output.go``): batching by size and interval, retry with backoff on
5xx, timeouts and connection errors, and on a 400 splitting the batch to isolate the
bad lines (counted, dropped) while the rest is written.

Data moves in :class:`~collector.buffer.Chunk` s, one per MQTT message, through a
buffer (collector/buffer.py): in memory, where a message is acknowledged once its
lines are written, or on disk (collector/spool.py), where it is acknowledged once
stored, so the collector keeps taking messages while the database is down. A database
that acknowledges before its data is durable (VictoriaMetrics) gets written lines kept
and written again after a restart (collector/durability.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from collector.buffer import Buffer, Chunk, MemoryBuffer, SpoolError
from collector.durability import Decision, DurabilityWatch
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

    # Optional: ``async def incarnation(self) -> str | None`` names the running database
    # process (changes when it restarts; None: it cannot tell; WriteError: unreachable).
    # RunningWriter uses it when ``durable_after_s`` > 0 (collector/durability.py).


__all__ = ["Buffer", "Chunk", "InfluxSink", "MemoryBuffer", "RunningWriter", "Sink",
           "WriteError"]


class RunningWriter:
    """Batches buffered lines to a sink with retry, backoff and bad-line isolation.

    Start :meth:`run` as a task; :meth:`put` adds a chunk (waits while the buffer is
    full), or :meth:`room` then :meth:`put_nowait`; :meth:`close` flushes what is
    buffered within a deadline and stops. ``buffer`` defaults to a
    :class:`MemoryBuffer` of ``buffer_max_lines``; ``durable_after_s`` > 0 keeps
    written lines until the database has made them durable (collector/durability.py).
    """

    def __init__(
        self,
        sink: Sink,
        metrics: CollectorMetrics,
        *,
        buffer: Buffer | None = None,
        batch_max_lines: int = 5000,
        flush_interval_s: float = 1.0,
        buffer_max_lines: int = 200_000,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        early_flush_chunks: int | None = None,
        durable_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.buffer: Buffer = buffer if buffer is not None else MemoryBuffer(buffer_max_lines)
        self.batch_max_lines = batch_max_lines
        self.flush_interval_s = flush_interval_s
        self.buffer_max_lines = buffer_max_lines
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        #: Flush as soon as this many chunks wait: with a memory buffer, messages are
        #: acknowledged only once written, and the broker sends no more than its
        #: in-flight window until then.
        self.early_flush_chunks = early_flush_chunks
        self.durability = DurabilityWatch(durable_after_s)
        self._clock = clock
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()  # set by close(): ends a retry pause at once
        self._space = asyncio.Event()
        self._persist_wanted = asyncio.Event()
        self._closing = False
        self._deadline: float | None = None
        self._rewind_due = False
        #: Since when writes fail (None while they succeed); /healthz reads it.
        self.failing_since: float | None = None
        self.last_error: str = ""
        metrics.buffer_lines.read = lambda: [((), float(self.buffer.lines))]
        metrics.settling_lines.read = lambda: [((), float(self.buffer.settling))]

    # -- intake ------------------------------------------------------------------------

    async def room(self, lines: int = 0) -> None:
        """Wait until the buffer takes ``lines`` more (backpressure to the broker)."""
        if self.buffer.has_room(lines):
            return
        self.metrics.buffer_full.inc()
        while not self.buffer.has_room(lines):
            self._space.clear()
            await self._space.wait()

    def put_nowait(self, chunk: Chunk) -> None:
        """Add a chunk now (after :meth:`room`; the bound is then exceeded by at most one)."""
        self.buffer.add(chunk)
        self._persist_wanted.set()
        if self.buffer.lines >= self.batch_max_lines or (
            self.early_flush_chunks is not None and len(self.buffer) >= self.early_flush_chunks
        ):
            self._wake.set()

    async def put(self, chunk: Chunk) -> None:
        """Queue a chunk; waits while the buffer is full (backpressure to the broker)."""
        await self.room(len(chunk.lines))
        self.put_nowait(chunk)

    async def close(self, deadline_s: float) -> None:
        """Ask :meth:`run` to flush everything within ``deadline_s`` and return."""
        self._closing = True
        self._deadline = self._clock() + deadline_s
        self._wake.set()
        self._closed.set()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Write batches until closed and drained (or the close deadline passes)."""
        await self.sink.connect()
        persister = (asyncio.create_task(self._persist_loop(), name="spool-persist")
                     if self.buffer.durable else None)
        try:
            while True:
                if self._closing:
                    with contextlib.suppress(SpoolError):  # logged; the broker keeps them
                        await self._persist()
                    if not self.buffer.lines and not len(self.buffer):
                        break
                    if self._past_deadline():
                        log.warning("shutdown deadline passed with %d lines unwritten; %s",
                                    self.buffer.lines,
                                    "they stay in the spool" if self.buffer.durable else
                                    "their messages stay unacknowledged at the broker")
                        break
                else:
                    await self._wait_for_batch()
                try:
                    await self._settle()
                    if len(self.buffer):
                        await self._write_head()
                except SpoolError as exc:
                    # The spool cannot be read (a failing disk): retry, do not die.
                    self.metrics.spool_errors.inc()
                    log.error("spool: %s; retrying in 1 s", exc)
                    await self._pause(1.0)
        finally:
            if persister is not None:
                persister.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await persister
                with contextlib.suppress(Exception):
                    await self._persist()
            await self.sink.close()

    async def _persist(self) -> None:
        try:
            await self.buffer.persist()
        except SpoolError as exc:  # a full or failing disk: retry, the broker keeps the rest
            self.metrics.spool_errors.inc()
            log.error("spool: cannot store chunks (they stay unacknowledged): %s", exc)
            raise
        self._space.set()
        if self.buffer.lines >= self.batch_max_lines:
            self._wake.set()

    async def _persist_loop(self) -> None:
        """Group commit: whatever was added while the last commit ran goes in the next."""
        while True:
            await self._persist_wanted.wait()
            self._persist_wanted.clear()
            try:
                await self._persist()
            except SpoolError:
                await asyncio.sleep(1.0)
                self._persist_wanted.set()

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

    # -- durability of what was written ------------------------------------------------

    async def _probe(self) -> None:
        """Ask the database for its incarnation and release or rewind accordingly."""
        probe = getattr(self.sink, "incarnation", None)
        try:
            got = await probe() if probe is not None else None
        except WriteError:
            return  # unreachable: nothing can be decided now
        self._apply(self.durability.observe(got, self._clock()))

    def _apply(self, decision: Decision) -> None:
        if decision.rewind:
            n = self.buffer.rewind()
            if n:
                self.metrics.rewritten_lines.inc(amount=n)
                if self.durability.restarts:
                    log.warning("database restarted: writing the last %d unconfirmed "
                                "line(s) again", n)
            if self.durability.restarts:
                self.metrics.db_restarts.set(self.durability.restarts)
        elif decision.release_before is not None:
            self.buffer.release(decision.release_before)
            self._persist_wanted.set()
            self._space.set()

    async def _settle(self) -> None:
        if self._rewind_due:
            self._rewind_due = False
            self._apply(Decision(rewind=True))
        if not self.buffer.settling or self.durability.immediate:
            return
        now = self._clock()
        if self.durability.needs_probe(now, settling=True):
            await self._probe()
        else:
            self._apply(self.durability.tick(now))

    # -- writing -----------------------------------------------------------------------

    async def _write_head(self) -> None:
        """Write the oldest batch; retry until written or closing past the deadline."""
        await self.buffer.prepare(self.batch_max_lines)
        if self.durability.needs_probe(self._clock(), settling=False):
            await self._probe()  # know the incarnation before the first write
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
                if self.durability.write_failed():
                    self._rewind_due = True
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
        if self.durability.immediate:
            self.buffer.accept(len(chunks))
        else:
            self.buffer.accept(len(chunks), self._clock())
        self._persist_wanted.set()
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

    async def incarnation(self) -> str | None:
        """The database process's start time from ``/metrics`` (None if it has none).

        ``process_start_time_seconds`` is the Prometheus process collector's metric;
        VictoriaMetrics serves it. A restart changes it, which tells the writer that
        recently acknowledged writes may be gone (collector/durability.py).
        """
        return await asyncio.to_thread(self._incarnation_sync)

    def _incarnation_sync(self) -> str | None:
        import urllib.error
        import urllib.request

        url = self.url.rstrip("/") + "/metrics"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                body = r.read(8 * 1024 * 1024).decode("utf-8", "replace")
        except urllib.error.HTTPError:
            return None  # no /metrics here: the database cannot tell
        except OSError as exc:
            raise WriteError("connection", str(exc)[:300], retryable=True) from None
        for line in body.splitlines():
            if line.startswith("process_start_time_seconds "):
                return str(line.split(" ", 1)[1].strip())
        return None

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
