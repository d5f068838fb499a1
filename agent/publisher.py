"""Publisher and Forwarder: from the disk spool to the broker, acknowledged, in seq order.

* :class:`Publisher` is one MQTT connection (aiomqtt 2.x, an async context manager):
  username = site id (or ``broker.username``), password from the inventory, TLS when
  ``tls: true``, keepalive, a retained last will ``offline``/``lost`` on the site's
  ``status`` topic and a retained birth ``online`` right after connecting. It does not
  reconnect by itself (aiomqtt's advice: reconnecting is the caller's loop).
* :class:`Forwarder` is that loop: connect, send the spool's resend window again (a
  broker that restarted may have lost what it acknowledged last), publish what the
  spool holds in seq order at QoS 1, delete a batch only after its PUBACK (or keep it
  for the resend window), wait for more; on any MQTT error back off
  (exponential, jittered) and connect again. A token bucket bounds the publish rate, so
  a site that comes back after a long outage replays its backlog without flooding the
  broker. ``finish()`` turns it into a flush with a deadline that ends with a retained
  ``offline``/``shutdown`` status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiomqtt

from agent.running import SYSTEM_CLOCK, Clock, sleep_unless
from agent.spool import DiskSpool, SpooledBatch, SpoolError
from schoolnet.inventory import Site
from schoolnet.wire import Status, encode_status, status_topic

log = logging.getLogger(__name__)

#: Replay rate: 50 messages/s empties the 432,000 batches of a 72 h outage of a
#: 100-device site in 2.4 h, while 300 sites returning at once stay below 15,000
#: messages/s at the broker. Live traffic of such a site is < 2 messages/s.
DEFAULT_RATE_PER_S = 50.0
DEFAULT_WINDOW = 20  # batches in flight per round trip (paho's default inflight limit)


class TokenBucket:
    """Allows ``rate_per_s`` operations per second on average, bursts up to ``burst``."""

    def __init__(self, rate_per_s: float, *, burst: float | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.burst = max(1.0, burst if burst is not None else rate_per_s)
        self.clock = clock
        self._tokens = self.burst
        self._last = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def take(self) -> None:
        """Wait until one operation is allowed, then use it up."""
        while True:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await self.clock.sleep((1.0 - self._tokens) / self.rate)


class Backoff:
    """Exponential backoff with jitter: delays grow ``initial_s * factor**n`` up to ``max_s``.

    Each delay is drawn from the upper half of its range ("equal jitter"): never zero,
    so a dead broker is not hammered, and random, so 300 sites that lost the broker
    together do not reconnect in lockstep.
    """

    def __init__(self, initial_s: float = 1.0, max_s: float = 60.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s, self.factor = initial_s, max_s, factor
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        cap = min(self.max_s, self.initial_s * self.factor ** min(self.attempt, 60))
        self.attempt += 1
        return cap / 2 + self.rng.uniform(0.0, cap / 2)

    def reset(self) -> None:
        """Start over after a successful connection."""
        self.attempt = 0


def client_options(site: Site, *, version: str, timeout_s: float) -> dict[str, Any]:
    """Keyword arguments for ``aiomqtt.Client`` from the site's broker settings."""
    b = site.agent.broker
    will = Status(site=site.id, state="offline", reason="lost", version=version)
    tls: ssl.SSLContext | None = None
    if b.tls:
        # create_default_context verifies the server certificate and host name.
        tls = ssl.create_default_context(cafile=b.ca_file)
        if b.cert_file is not None:  # a client certificate, for brokers that require one
            tls.load_cert_chain(b.cert_file, b.key_file)
    return {
        "hostname": b.host,
        "port": b.port,
        "username": b.username or site.id,
        "password": b.password.reveal() if b.password is not None else None,
        # A fixed id: a second agent for the same site takes the session over instead
        # of publishing beside the first.
        "identifier": f"schoolnet-agent-{site.tenant}-{site.id}",
        "will": aiomqtt.Will(status_topic(site.tenant, site.id), encode_status(will),
                             qos=1, retain=True),
        "keepalive": b.keepalive_s,
        "timeout": timeout_s,
        "tls_context": tls,
        "clean_session": True,
        "max_inflight_messages": DEFAULT_WINDOW,
    }


class Publisher:
    """One MQTT connection of a site agent; ``async with`` connects and says ``online``.

    Leaving the context disconnects cleanly (no last will). After a connection loss
    every method raises :class:`aiomqtt.MqttError`; make a new Publisher to reconnect.
    """

    def __init__(self, site: Site, *, version: str = "", clock: Clock = SYSTEM_CLOCK,
                 timeout_s: float = 10.0) -> None:
        self.site = site
        self.version = version
        self.clock = clock
        self.timeout_s = timeout_s
        self._client: aiomqtt.Client | None = None
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Publisher:
        opts = client_options(self.site, version=self.version, timeout_s=self.timeout_s)
        client = aiomqtt.Client(**opts)
        await client.__aenter__()
        self._client = client
        self._watch = asyncio.create_task(self._watch_connection(client))
        try:
            await self.publish_status("online")
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._watch
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    @staticmethod
    async def _watch_connection(client: aiomqtt.Client) -> None:
        # The agent subscribes to nothing, so the message iterator only ever ends, with
        # MqttError, when the connection is lost: a cheap, public loss detector.
        with contextlib.suppress(aiomqtt.MqttError):
            async for _ in client.messages:
                pass

    @property
    def lost(self) -> bool:
        """Whether the connection is gone."""
        return self._watch is None or self._watch.done()

    def _require(self) -> aiomqtt.Client:
        if self._client is None or self.lost:
            raise aiomqtt.MqttError("not connected")
        return self._client

    async def publish_status(self, state: str, reason: str = "") -> None:
        """Publish the retained status (``online`` / ``offline``) and wait for its PUBACK."""
        status = Status(site=self.site.id, state=state, time_ns=self.clock.time_ns(),
                        reason=reason, version=self.version)
        await self._require().publish(status_topic(self.site.tenant, self.site.id),
                                      encode_status(status), qos=1, retain=True)

    async def publish_window(
        self, batches: Sequence[SpooledBatch], pace: Callable[[], Awaitable[None]]
    ) -> tuple[list[int], int]:
        """Publish batches in seq order at QoS 1, up to a window in flight at once.

        ``pace`` is awaited before each publish (the rate limit). Returns the seqs the
        broker acknowledged and how many publishes failed; stops early on a loss.
        """
        client = self._require()
        sent: list[tuple[int, asyncio.Task[None]]] = []
        for b in batches:
            await pace()
            if self.lost:
                break
            # paho queues the PUBLISH inside publish(), before its first await, so the
            # wire order is the order these tasks start in: seq order.
            sent.append((b.seq, asyncio.create_task(client.publish(b.topic, b.payload, qos=1))))
        pending: set[asyncio.Future[Any]] = {t for _, t in sent}
        assert self._watch is not None
        while pending and not self._watch.done():
            _, pending = await asyncio.wait(pending | {self._watch},
                                            return_when=asyncio.FIRST_COMPLETED)
            pending.discard(self._watch)
        for t in pending:
            t.cancel()
        acked = [seq for seq, t in sent
                 if t.done() and not t.cancelled() and t.exception() is None]
        return acked, len(sent) - len(acked)

    async def wait_for(self, event: asyncio.Event) -> None:
        """Return when ``event`` is set; raise :class:`aiomqtt.MqttError` on a loss first."""
        assert self._watch is not None
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, self._watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self.lost:
            raise aiomqtt.MqttError("connection lost")


@dataclass
class PublishStats:
    """Counters of the forwarder since the agent started."""

    published: int = 0  # batches acknowledged by the broker and deleted from the spool
    publish_errors: int = 0  # publishes without PUBACK (loss, timeout, refused)
    connects: int = 0
    connection_errors: int = 0  # failed connects and lost connections
    resent: int = 0  # acknowledged batches queued again after a new connection
    connected: bool = False
    last_error: str = ""


class Forwarder:
    """The reconnect loop: spool -> broker, in seq order, rate-limited, acknowledged.

    ``connect`` makes a new :class:`Publisher` (one per connection attempt). Call
    :meth:`notify` after appending to the spool; :meth:`finish` to flush and stop.
    """

    def __init__(
        self,
        spool: DiskSpool,
        connect: Callable[[], Publisher],
        *,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        window: int = DEFAULT_WINDOW,
        backoff: Backoff | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.spool = spool
        self.connect = connect
        self.clock = clock
        self.bucket = TokenBucket(rate_per_s, clock=clock)
        # A window never holds more than about a second of the rate, so a flush with a
        # deadline overruns it by at most that.
        self.window = max(1, min(window, int(rate_per_s)))
        self.backoff = backoff or Backoff()
        self.stats = PublishStats()
        self._wake = asyncio.Event()
        self._finish = asyncio.Event()
        self._deadline = 0.0
        self.flushed = False

    def notify(self) -> None:
        """New batches are in the spool."""
        self._wake.set()

    def finish(self, timeout_s: float) -> None:
        """Flush what the spool holds for at most ``timeout_s``, say ``offline``, stop."""
        self._deadline = self.clock.monotonic() + timeout_s
        self._finish.set()
        self._wake.set()

    def _overdue(self) -> bool:
        return self._finish.is_set() and self.clock.monotonic() >= self._deadline

    async def run(self) -> None:
        """Connect, forward, reconnect with backoff, until :meth:`finish` completes."""
        while not self._overdue():
            try:
                async with self.connect() as pub:
                    self.stats.connects += 1
                    self.stats.connected = True
                    self.backoff.reset()
                    log.info("mqtt: connected as %s", pub.site.id)
                    # The broker may have restarted and lost what it acknowledged last
                    # (it saves only every autosave_interval): send the kept ones again.
                    resent = await asyncio.to_thread(self.spool.resend)
                    if resent:
                        self.stats.resent += resent
                        log.info("mqtt: sending %d recently acknowledged batch(es) again",
                                 resent)
                    await self._pump(pub)
                    await pub.publish_status("offline", "shutdown")
                    return
            except aiomqtt.MqttError as exc:
                self.stats.connection_errors += 1
                self.stats.last_error = str(exc)[:200]
            except SpoolError as exc:
                # A disk hiccup: retrying after the backoff beats losing the forwarder
                # (reconnecting on the way is harmless).
                self.stats.last_error = str(exc)[:200]
            finally:
                self.stats.connected = False
            delay = self.backoff.next_delay()
            if self._finish.is_set():
                delay = min(delay, max(0.0, self._deadline - self.clock.monotonic()))
            log.warning("mqtt: %s; next attempt in %.1fs", self.stats.last_error, delay)
            await self._sleep_unless_finishing(delay)

    async def _sleep_unless_finishing(self, delay: float) -> None:
        # finish() must cut a long backoff short, or the flush deadline would be missed;
        # once finishing, the delay is already bounded by the deadline.
        if self._finish.is_set():
            await self.clock.sleep(delay)
        else:
            await sleep_unless(self.clock, delay, self._finish)

    async def _pump(self, pub: Publisher) -> None:
        """Publish until finishing and (flushed or overdue); raises MqttError on loss."""
        while True:
            self._wake.clear()
            batches = await asyncio.to_thread(self.spool.peek, self.window)
            if not batches:
                if self._finish.is_set():
                    self.flushed = True
                    return
                await pub.wait_for(self._wake)
                continue
            if self._overdue():
                return
            acked, failed = await pub.publish_window(batches, self.bucket.take)
            if acked:
                await asyncio.to_thread(self.spool.ack, acked)
                self.stats.published += len(acked)
            if failed:
                self.stats.publish_errors += failed
                raise aiomqtt.MqttError(f"{failed} publish(es) not acknowledged")
