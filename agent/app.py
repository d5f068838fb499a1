"""The site agent as a plain function: ``run(site_config) -> exit code``.

Pipeline: sources -> :class:`~agent.running.Intake` (bounded queue) -> spool writer ->
:class:`~agent.spool.DiskSpool` -> :class:`~agent.publisher.Forwarder` -> broker.

Lifecycle (Telegraf's agent.go order, uvicorn's server.py shape):

1. start-up: load the site, open the spool, build the sources. Any failure here exits
   with :data:`EXIT_STARTUP` and a message that says what to fix;
2. start the publisher first, then the spool writer, then the sources;
3. SIGINT/SIGTERM only set ``should_exit`` (a second signal sets ``force_exit``); the
   main loop waits for that flag;
4. shut down: stop the sources (no new gathers; one in progress may finish within
   ``stop_grace_s``), drain the queue into the spool, flush the spool to the broker
   until ``flush_timeout_s`` (skipped on ``force_exit``), publish ``offline``, close.
   What could not be sent stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.health import AgentHealth, PipelineState
from agent.publisher import DEFAULT_RATE_PER_S, Backoff, Forwarder, Publisher, client_options
from agent.running import SYSTEM_CLOCK, Clock, Intake, RunningSource
from agent.source import Source
from agent.spool import DEFAULT_MAX_AGE_S, DEFAULT_MAX_BYTES, DiskSpool, SpoolError, route
from schoolnet import __version__
from schoolnet.configfile import ConfigError
from schoolnet.inventory import Site, load_site

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error while running
# 2 is click's exit code for a usage error.
EXIT_STARTUP = 3  # bad site config, unusable spool directory, unreadable CA file ...
EXIT_UNSENT = 4  # --once: data could not all be delivered (it stays in the spool)

#: Collections the spool writer takes from the queue per transaction (one fsync).
WRITE_BATCH = 500
#: Acknowledged batches are kept this long and sent again after every new connection:
#: Mosquitto acknowledges a message before it saves it (every ``autosave_interval``,
#: which ``schoolnet broker-config`` sets to 5 s), so a broker killed within that window
#: has lost them. 30 s covers the interval and a slow save with a wide margin.
DEFAULT_RESEND_WINDOW_S = 30.0


def default_sources(site: Site) -> list[Source]:
    """The site's SNMP pollers (``agent.snmp.build_sources``), uplink probes and the
    LLDP ``topology`` derived from the polls (agent/topology_source.py)."""
    try:
        from agent.snmp import build_sources  # type: ignore[attr-defined, unused-ignore]
    except ImportError as exc:
        # Only the absence of agent.snmp (or of its build_sources) is tolerated; a
        # missing dependency inside it (exc.name == "pysnmp") is a real error.
        if exc.name != "agent.snmp":
            raise
        log.warning("agent.snmp.build_sources is not available: no SNMP sources")
        return []
    snmp = list(build_sources(site))
    # The uplink probes (docs/probes.md); the uplink device's SNMP source comes back
    # wrapped so its polls also yield the ``uplink`` utilization point.
    from agent.probes import build_sources as probe_sources
    from agent.topology_source import with_topology

    return with_topology(site, probe_sources(site, snmp))


class Agent:
    """One running agent: owns the queue, the spool writer, the forwarder and the sources.

    ``serve()`` runs until ``should_exit`` (set by a signal or :meth:`handle_exit`); with
    ``once=True`` it gathers every source once, flushes and returns.
    """

    def __init__(
        self,
        site: Site,
        spool: DiskSpool,
        *,
        sources: Sequence[Source],
        once: bool = False,
        replay_rate: float = DEFAULT_RATE_PER_S,
        flush_timeout_s: float = 10.0,
        stop_grace_s: float = 5.0,
        queue_size: int = 1000,
        backoff: Backoff | None = None,
        connect: Callable[[], Publisher] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        version: str = __version__,
        install_signal_handlers: bool = True,
    ) -> None:
        self.site = site
        self.spool = spool
        self.once = once
        self.flush_timeout_s = flush_timeout_s
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self.version = version
        self.install_signal_handlers = install_signal_handlers
        self.should_exit = False
        self.force_exit = False
        self._exit = asyncio.Event()
        self._force = asyncio.Event()
        self.intake = Intake(queue_size)
        self.forwarder = Forwarder(
            spool,
            connect or (lambda: Publisher(site, version=version, clock=clock)),
            rate_per_s=replay_rate, backoff=backoff, clock=clock,
        )
        self._spool_baseline = spool.stats()
        self._write_error_points = 0
        self._started = clock.monotonic()
        health = AgentHealth(version, self._pipeline_state)
        # A source may ask for its own interval and gather timeout (the uplink probes
        # do: a throughput test is looked for every minute and may run for minutes).
        self.runners = [
            RunningSource(s, self.intake,
                          interval_s=getattr(s, "interval_s", None) or site.agent.poll_interval_s,
                          timeout_s=getattr(s, "timeout_s", None), clock=clock)
            for s in [*sources, health]
        ]

    def handle_exit(self, sig: int | None = None) -> None:
        """Ask the agent to stop (what SIGINT/SIGTERM do); a second call forces it."""
        if self.should_exit:
            self.force_exit = True
            self._force.set()
            log.warning("forced exit: not waiting for the flush")
        else:
            self.should_exit = True
            log.info("stopping (signal %s)", sig)
        self._exit.set()

    async def _pipeline_state(self, now_ns: int) -> PipelineState:
        return PipelineState(
            now_ns=now_ns, uptime_s=self.clock.monotonic() - self._started,
            intake=self.intake, spool=await asyncio.to_thread(self.spool.stats),
            spool_baseline=self._spool_baseline,
            spool_write_errors_points=self._write_error_points,
            runners=self.runners, publish=self.forwarder.stats,
        )

    async def serve(self) -> int:
        """Run the agent; returns the process exit code."""
        with self._signal_handlers():
            # Publisher first, so the first batches find a connection (or its backoff).
            forwarder = asyncio.create_task(self.forwarder.run(), name="forwarder")
            writer = asyncio.create_task(self._write_spool(), name="spool-writer")
            code = EXIT_OK
            if self.once:
                # Derived sources (the topology) read what the others gathered: after them.
                first = [r for r in self.runners if not getattr(r.source, "derived", False)]
                await asyncio.gather(*(r.gather_once() for r in first))
                await asyncio.gather(*(r.gather_once() for r in self.runners
                                       if r not in first))
            else:
                code = await self._main_loop(forwarder, writer)
            await self._close_sources()
            await self._shutdown(forwarder, writer)
            if self.once and not self.forwarder.flushed:
                log.error("--once: %d batch(es) could not be delivered; kept in the spool",
                          self.spool.stats().batches)
                code = code or EXIT_UNSENT
            return code

    async def _main_loop(self, forwarder: asyncio.Task[None], writer: asyncio.Task[None]) -> int:
        sources = [asyncio.create_task(r.run(), name=f"source:{r.name}") for r in self.runners]
        log.info("agent for %s/%s running with %d source(s)", self.site.tenant, self.site.id,
                 len(sources))
        try:
            exit_wait = asyncio.ensure_future(self._exit.wait())
            done, _ = await asyncio.wait({exit_wait, forwarder, writer},
                                         return_when=asyncio.FIRST_COMPLETED)
            exit_wait.cancel()
            for task in (forwarder, writer):
                if task in done:  # they only end on a bug; say so and stop
                    log.error("%s stopped unexpectedly: %r", task.get_name(),
                              task.exception() if not task.cancelled() else "cancelled")
                    return EXIT_FAILURE
            return EXIT_OK
        finally:
            await self._stop_sources(sources)

    async def _stop_sources(self, sources: list[asyncio.Task[None]]) -> None:
        """Stop sources first, so nothing new enters while the rest drains.

        A gather in progress may finish within ``stop_grace_s`` (its points are real
        measurements); after that, or on a forced exit, it is cancelled.
        """
        for r in self.runners:
            r.stop()
        forced = asyncio.ensure_future(self._force.wait())
        pending: set[asyncio.Future[Any]] = set(sources)
        deadline = asyncio.get_running_loop().time() + self.stop_grace_s
        while pending and not forced.done():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(pending | {forced}, timeout=remaining,
                                            return_when=asyncio.FIRST_COMPLETED)
            pending.discard(forced)
        forced.cancel()
        for t in pending:
            t.cancel()
        await asyncio.gather(*sources, return_exceptions=True)

    async def _close_sources(self) -> None:
        """Call ``close()`` of sources that have one (SNMP sources release their engine)."""
        for r in self.runners:
            close = getattr(r.source, "close", None)
            if close is None:
                continue
            try:
                await asyncio.wait_for(close(), timeout=5)
            except Exception as exc:  # closing is best effort; shutdown goes on
                log.warning("source %s: close failed: %r", r.name, exc)

    async def _shutdown(self, forwarder: asyncio.Task[None], writer: asyncio.Task[None]) -> None:
        # Drain the queue into the spool: local and quick, so even a forced exit waits.
        if not writer.done():
            joined = asyncio.ensure_future(self.intake.queue.join())
            await asyncio.wait({joined, writer}, return_when=asyncio.FIRST_COMPLETED)
            joined.cancel()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        if forwarder.done():
            return
        self.forwarder.finish(0.0 if self.force_exit else self.flush_timeout_s)
        # The forwarder honours its deadline itself; the extra margin only guards
        # against a publish that hangs past it. A forced exit stops waiting at once.
        forced = asyncio.ensure_future(self._force.wait())
        await asyncio.wait({forwarder, forced}, timeout=self.flush_timeout_s + 15,
                           return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        forwarder.cancel()
        await asyncio.gather(forwarder, return_exceptions=True)

    async def _write_spool(self) -> None:
        """Move collections from the queue into the spool, many per transaction."""
        queue = self.intake.queue
        while True:
            items = [await queue.get()]
            while len(items) < WRITE_BATCH and not queue.empty():
                items.append(queue.get_nowait())
            outgoing = [o for c in items for o in route(self.site.tenant, self.site.id, c.points)]
            try:
                await asyncio.to_thread(self.spool.append, outgoing)
            except SpoolError as exc:
                # A full or failing disk: count the loss, keep the agent and its
                # status reports alive (the self-health point still gets through
                # once the disk recovers).
                self._write_error_points += sum(len(c.points) for c in items)
                log.error("%s", exc)
            finally:
                for _ in items:
                    queue.task_done()
            self.forwarder.notify()

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if not self.install_signal_handlers:
            yield
            return
        loop = asyncio.get_running_loop()
        sigs = (signal.SIGINT, signal.SIGTERM)
        for sig in sigs:
            loop.add_signal_handler(sig, self.handle_exit, sig)
        try:
            yield
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)


def _startup_error(what: str, detail: str) -> int:
    print(f"schoolnet agent: cannot start: {what}", file=sys.stderr)
    for line in detail.splitlines():
        print(f"  {line}", file=sys.stderr)
    return EXIT_STARTUP


def run(
    site_config: str | Path,
    *,
    spool_dir: str | Path | None = None,
    once: bool = False,
    replay_rate: float = DEFAULT_RATE_PER_S,
    flush_timeout_s: float = 10.0,
    spool_max_bytes: int = DEFAULT_MAX_BYTES,
    spool_max_age_s: float = DEFAULT_MAX_AGE_S,
    resend_window_s: float = DEFAULT_RESEND_WINDOW_S,
    sources: Sequence[Source] | None = None,
) -> int:
    """Run the agent for the site in ``site_config``; returns the exit code.

    ``spool_dir`` overrides ``agent.spool_dir`` of the site; ``once`` gathers every
    source once, delivers and exits (:data:`EXIT_UNSENT` if delivery was incomplete);
    ``sources`` replaces the sources built from the site (tests, demos);
    ``resend_window_s`` is how long acknowledged batches are kept to be sent again after
    a reconnect (the broker acknowledges before it saves; agent/spool.py).
    """
    try:
        site = load_site(site_config)
    except ConfigError as exc:
        return _startup_error(f"bad site config {site_config}", str(exc))
    except OSError as exc:
        return _startup_error(f"cannot read {site_config}", str(exc))
    try:
        client_options(site, version=__version__, timeout_s=10.0)  # reads the CA file
    except (OSError, ssl.SSLError) as exc:
        return _startup_error("bad TLS settings (agent.broker.ca_file)", str(exc))
    try:
        spool = DiskSpool.for_site(spool_dir or site.agent.spool_dir, site.tenant, site.id,
                                   max_bytes=spool_max_bytes, max_age_s=spool_max_age_s,
                                   keep_sent_s=resend_window_s)
    except SpoolError as exc:
        return _startup_error("unusable spool directory (agent.spool_dir or --spool-dir)",
                              str(exc))
    async def main() -> int:
        # Sources are built inside the loop: SNMP engines bind to the running loop.
        try:
            built = list(sources) if sources is not None else default_sources(site)
        except ConfigError as exc:
            return _startup_error("bad device profiles", str(exc))
        except Exception as exc:  # a source that cannot be built is a config problem
            return _startup_error("cannot build the sources", f"{type(exc).__name__}: {exc}")
        return await Agent(site, spool, sources=built, once=once, replay_rate=replay_rate,
                           flush_timeout_s=flush_timeout_s).serve()

    with spool:
        return asyncio.run(main())
