"""The collector process: wiring, start order, signals, shutdown.

``run(config_path)`` is a plain function (the click command is a thin layer over it,
as in uvicorn). Start order: HTTP endpoint, writer (the sink), then the MQTT subscriber
(the source). Signal handlers only set a flag. Shutdown stops intake first, lets the
writer flush within a deadline (acknowledging what it writes), then disconnects: what
was not written stays unacknowledged at the broker and comes again next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from collector.buffer import SpoolError
from collector.config import CollectorConfig, load_config
from collector.http import HttpServer, Response, json_response, text
from collector.metrics import CollectorMetrics
from collector.outages.service import OutageService
from collector.spool import DiskBuffer, open_buffer
from collector.subscriber import MqttSubscriber
from collector.validate import Validator
from collector.writer import Chunk, InfluxSink, RunningWriter, Sink
from schoolnet.configfile import ConfigError
from schoolnet.inventory import Inventory, load_inventory

log = logging.getLogger("schoolnet.collector")

EXIT_OK = 0
EXIT_CONFIG = 2  # the config or the inventory has errors (listed on stderr)
EXIT_STARTUP = 3  # could not start (port in use, state_dir not writable, ...)
EXIT_FORCED = 4  # a second signal cut the shutdown short


class Collector:
    """One collector: subscriber -> validator -> writer, plus its HTTP endpoint."""

    def __init__(self, config: CollectorConfig, inventory: Inventory, *,
                 sink: Sink | None = None) -> None:
        self.config = config
        self.metrics = CollectorMetrics()
        self.validator = Validator(inventory, self.metrics, log_interval_s=config.log_interval_s,
                                   max_series_per_site=config.max_series_per_site)
        i = config.influx
        token = i.token.reveal() if i.token is not None else None
        # The disk spool (with the per-site seq state) or memory: collector/spool.py.
        self.buffer = open_buffer(config, self.validator.sites, self.metrics)
        self.writer = RunningWriter(
            sink or InfluxSink(i.url, token=token, org=i.org, bucket=i.bucket,
                               timeout_s=i.timeout_s),
            self.metrics,
            buffer=self.buffer,
            durable_after_s=i.durable_after_s,
            batch_max_lines=i.batch_max_lines,
            flush_interval_s=i.flush_interval_s,
            buffer_max_lines=i.buffer_max_lines,
            retry_min_s=i.retry_min_s,
            retry_max_s=i.retry_max_s,
            # Half the broker's in-flight window: the other half keeps arriving while
            # one batch is written, so the pipe never runs dry waiting for the interval.
            early_flush_chunks=(None if self.buffer.durable
                                else max(1, config.mqtt.max_inflight // 2)),
        )
        self.subscriber = MqttSubscriber(config.mqtt, self._on_message, self.metrics)
        # The second consumer of validated messages (ARCHITECTURE: fan-out).
        self.outages: OutageService | None = None
        if config.alerting.enabled:
            self.outages = OutageService(config.alerting, inventory, config.state_dir,
                                         connected=lambda: self.subscriber.connected,
                                         registry=self.metrics.registry)
        self.http = HttpServer(config.http.host, config.http.port, {
            "/healthz": self.health,
            "/metrics": self.metrics_page,
            "/api/status": self.status,
            "/api/outages": self.outages_page,
        })
        self.started = asyncio.Event()

    async def _on_message(self, topic: str, payload: bytes, ack: Callable[[], None]) -> None:
        # Wait for room *before* the seq is observed: between observing and staging
        # there must be no await, or the spool could save a seq without its lines.
        await self.writer.room()
        verdict = self.validator.handle(topic, payload)
        # Dropped and duplicate messages go through the writer too, as empty chunks, so
        # acknowledgements leave in arrival order.
        self.writer.put_nowait(Chunk(verdict.lines, ack))
        t = verdict.topic
        if self.outages is not None and t is not None and not verdict.duplicate:
            try:
                if verdict.status is not None:
                    self.outages.on_status(t.tenant, t.site, verdict.status.state,
                                           verdict.status.reason)
                else:
                    self.outages.on_points(t.tenant, t.site, verdict.points_where(
                        self.outages.wanted(t.tenant, t.site)))
            except Exception:  # alerting must never stop ingest
                log.exception("outage engine failed on a message of %s/%s", t.tenant, t.site)

    def outages_page(self) -> Response:
        """JSON: open and recent (24 h) outages with affected counts, and the mail queue."""
        if self.outages is None:
            return json_response(200, {"enabled": False, "open": [], "recent": []})
        return json_response(200, {"enabled": True, **self.outages.api()})

    async def _write_outage_lines(self, lines: list[str]) -> None:
        await self.writer.put(Chunk(lines))

    def health(self) -> Response:
        """200 when connected to the broker and writes are not failing for long."""
        problems = []
        if not self.subscriber.connected:
            problems.append(f"mqtt: not connected ({self.subscriber.last_error})")
        since = self.writer.failing_since
        limit = self.config.http.write_failing_after_s
        if since is not None and time.monotonic() - since > limit:
            problems.append(f"database: writes failing for {time.monotonic() - since:.0f} s "
                            f"({self.writer.last_error[:200]})")
        if problems:
            return text(503, "\n".join(problems) + "\n")
        return text(200, "ok\n")

    def metrics_page(self) -> Response:
        """Prometheus text format."""
        return Response(200, self.metrics.registry.render().encode(),
                        "text/plain; version=0.0.4; charset=utf-8")

    def status(self) -> Response:
        """JSON: the collector's own state and every inventory site's."""
        doc = {
            "collector": {
                "mqtt_connected": self.subscriber.connected,
                "mqtt_error": self.subscriber.last_error,
                "writes_failing": self.writer.failing_since is not None,
                "write_error": self.writer.last_error if self.writer.failing_since else "",
                "buffer_lines": self.writer.buffer.lines,
                "settling_lines": self.writer.buffer.settling,
                "database_restarts": self.writer.durability.restarts,
                "spool": self.buffer.stats() if isinstance(self.buffer, DiskBuffer) else None,
            },
            "sites": [s.to_json() for _, s in sorted(self.validator.sites.items())],
            "outages": self.outages.api() if self.outages is not None else None,
        }
        return json_response(200, doc)

    async def serve(self, stop: asyncio.Event, *, shutdown_timeout_s: float = 10.0) -> None:
        """Run until ``stop`` is set (or a part fails), then shut down in order."""
        await self.http.start()
        log.info("HTTP on http://%s:%d (/healthz /metrics /api/status)",
                 self.http.host, self.http.port)
        writer_task = asyncio.create_task(self.writer.run(), name="writer")
        sub_task = asyncio.create_task(self.subscriber.run(), name="subscriber")
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        outage_stop = asyncio.Event()
        outage_task = None
        if self.outages is not None:
            outage_task = asyncio.create_task(
                self.outages.run(outage_stop, self._write_outage_lines), name="outages")
        self.started.set()
        try:
            await asyncio.wait({writer_task, sub_task, stop_task},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            log.info("shutting down: stop intake, flush within %.0f s", shutdown_timeout_s)
            self.subscriber.stop_intake()
            outage_stop.set()  # before the writer closes: its last outage points go in
            if outage_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(outage_task, 15)
            await self.writer.close(shutdown_timeout_s)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer_task), shutdown_timeout_s + 5)
            if not writer_task.done():
                writer_task.cancel()
            self.subscriber.release()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(sub_task), 5)
            if not sub_task.done():
                sub_task.cancel()
            await self.http.close()
            if isinstance(self.buffer, DiskBuffer):
                self.buffer.close()
            for t in (writer_task, sub_task):
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
                     force: Callable[[], None]) -> None:
    """SIGINT/SIGTERM set ``stop``; a second one forces exit (only the flag, as uvicorn)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler() -> None:
        if stop.is_set():
            force()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


def run(config_path: str | Path, *, http_port: int | None = None,
        shutdown_timeout_s: float = 10.0) -> int:
    """Load the config and inventory, run the collector until a signal; the exit code.

    ``http_port`` overrides ``http.port`` (0: any free port, logged at start).
    """
    try:
        config = load_config(config_path)
        # The collector needs sites and devices, not the SNMP credentials of every school.
        inventory = load_inventory(config.inventory, resolve_secrets=False)
    except ConfigError as exc:
        for issue in exc.issues:
            log.error("%s", issue)
        return EXIT_CONFIG
    if http_port is not None:
        from dataclasses import replace
        config = replace(config, http=replace(config.http, port=http_port))
    try:
        Path(config.state_dir).mkdir(parents=True, exist_ok=True)
        if not os.access(config.state_dir, os.W_OK):
            raise PermissionError(f"{config.state_dir} is not writable")
    except OSError as exc:
        log.error("cannot use state_dir: %s", exc)
        return EXIT_STARTUP

    async def main() -> int:
        stop = asyncio.Event()
        current = asyncio.current_task()
        assert current is not None

        def force() -> None:
            current.cancel()

        _install_signals(asyncio.get_running_loop(), stop, force)
        try:
            collector = Collector(config, inventory)
        except SpoolError as exc:  # state_dir/spool.sqlite3 unusable
            log.error("cannot start: %s", exc)
            return EXIT_STARTUP
        try:
            await collector.serve(stop, shutdown_timeout_s=shutdown_timeout_s)
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_STARTUP
        return EXIT_OK

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        log.warning("forced exit: unwritten messages stay unacknowledged at the broker")
        return EXIT_FORCED
