"""The MQTT side: a persistent QoS 1 session, acknowledged only after writing.

aiomqtt 2.5 acknowledges a QoS 1 message as soon as it is received; the collector
instead turns on paho's manual acknowledgement (aiomqtt 2.5 has no option for it yet,
empicano/aiomqtt#345 gives this workaround) and acknowledges a message only when the
writer reports its points written. Together with a persistent session (a stable client
id; MQTT 5 session expiry or MQTT 3.1.1 ``clean_session=False``) the broker keeps every
message the collector has not confirmed, across a collector crash, a database outage or
a restart: at-least-once delivery; replays are harmless (same series and timestamp)
and are recognised by their per-site ``seq``.

Acknowledgements go out in the order the messages arrived, as MQTT requires of QoS 1
(MQTT 3.1.1 4.6, MQTT 5 4.6): :class:`AckTracker` holds a finished message back until
all earlier ones are finished too. Reconnecting is this module's loop, with backoff, not
hidden inside the client (aiomqtt docs/reconnection.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.config import MqttSettings
from collector.metrics import CollectorMetrics
from schoolnet.wire import tenant_filter

log = logging.getLogger("schoolnet.collector.mqtt")

#: Called for every message: topic, payload, and the callback that acknowledges it.
MessageHandler = Callable[[str, bytes, Callable[[], None]], Awaitable[None]]


class AckTracker:
    """In-order acknowledgements for one connection.

    ``track`` returns the callback for one message; the acknowledgement is sent when that
    message and every message received before it are done. A tracker belongs to one
    connection: after a reconnect the broker redelivers what was not acknowledged, and
    callbacks of the old connection do nothing (their packet ids mean nothing now).
    """

    def __init__(self, send_ack: Callable[[int, int], Any]) -> None:
        self._send_ack = send_ack
        self._pending: deque[list[Any]] = deque()  # [mid, qos, done]
        self.closed = False
        self.acked = 0

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, mid: int, qos: int) -> Callable[[], None]:
        """Register a received message; returns the callback that marks it done."""
        if qos == 0:
            return _nothing
        entry = [mid, qos, False]
        self._pending.append(entry)

        def done() -> None:
            entry[2] = True
            self._release()

        return done

    def _release(self) -> None:
        while self._pending and self._pending[0][2]:
            mid, qos, _ = self._pending.popleft()
            if not self.closed:
                self._send_ack(mid, qos)
                self.acked += 1


def _nothing() -> None:
    """The callback of a QoS 0 message: there is nothing to acknowledge."""


class MqttSubscriber:
    """Connects, subscribes and feeds messages to a handler; reconnects with backoff.

    :meth:`run` until :meth:`stop_intake`; the connection then stays open (so the acks
    of what the writer flushes can still go out) until :meth:`release`.
    """

    def __init__(self, settings: MqttSettings, handler: MessageHandler,
                 metrics: CollectorMetrics) -> None:
        self.settings = settings
        self.handler = handler
        self.metrics = metrics
        self.connected = False
        #: True once the broker confirmed the subscriptions of the current connection.
        self.subscribed = False
        self.connected_since: float | None = None
        self.disconnected_since: float | None = time.monotonic()
        self.last_error = "not connected yet"
        self._intake_stopped = asyncio.Event()
        self._released = asyncio.Event()
        self._tracker: AckTracker | None = None
        metrics.unacked.read = lambda: [((), float(len(self._tracker) if self._tracker else 0))]

    @property
    def filters(self) -> list[str]:
        """Subscription filters: one per configured tenant, or all tenants."""
        return [tenant_filter(t) for t in self.settings.tenants] or [tenant_filter()]

    def stop_intake(self) -> None:
        """Stop taking messages (unacknowledged ones stay with the broker)."""
        self._intake_stopped.set()

    def release(self) -> None:
        """Disconnect once intake has stopped (after the writer flushed)."""
        self._intake_stopped.set()
        self._released.set()

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        tls = ssl.create_default_context(cafile=s.ca_file) if s.tls else None
        if tls is not None and s.cert_file is not None:
            tls.load_cert_chain(s.cert_file, s.key_file)
        password = s.password.reveal() if s.password is not None else None
        common: dict[str, Any] = {
            "hostname": s.host, "port": s.port, "identifier": s.client_id,
            "username": s.username, "password": password, "keepalive": s.keepalive_s,
            "tls_context": tls, "timeout": 10,
        }
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            # Receive Maximum: how many unacknowledged messages the broker sends us.
            props.ReceiveMaximum = s.max_inflight
            client = aiomqtt.Client(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                                    properties=props, **common)
        else:
            # MQTT 3.1.1: the broker's max_inflight_messages bounds what is in flight.
            client = aiomqtt.Client(protocol=aiomqtt.ProtocolVersion.V311,
                                    clean_session=False, **common)
        # Before connecting: queued messages of the session arrive right after CONNACK.
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Connect, consume, reconnect with backoff; return after :meth:`release`."""
        delay = self.settings.reconnect_min_s
        while not self._intake_stopped.is_set():
            client = self._client()
            try:
                async with client:
                    self._on_connected()
                    delay = self.settings.reconnect_min_s
                    tracker = self._tracker = AckTracker(client._client.ack)
                    try:
                        for f in self.filters:
                            await client.subscribe(f, qos=1)
                        self.subscribed = True
                        log.info("connected to %s:%d, subscribed to %s", self.settings.host,
                                 self.settings.port, ", ".join(self.filters))
                        await self._consume_until_stopped(client, tracker)
                    finally:
                        tracker.closed = True
                    # Intake stopped: keep the connection until the writer has flushed.
                    await self._released.wait()
            except aiomqtt.MqttError as exc:
                self._on_disconnected(str(exc))
                log.warning("MQTT connection to %s:%d failed or lost: %s; retrying in %.1f s",
                            self.settings.host, self.settings.port, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._intake_stopped.wait(), delay)
                delay = min(delay * 2, self.settings.reconnect_max_s)
                continue
            self._on_disconnected("stopped")
        self._on_disconnected("stopped")

    async def _consume_until_stopped(self, client: aiomqtt.Client, tracker: AckTracker) -> None:
        consume = asyncio.create_task(self._consume(client, tracker))
        stop = asyncio.create_task(self._intake_stopped.wait())
        try:
            await asyncio.wait({consume, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not consume.done():
                consume.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consume
        if consume.done() and not consume.cancelled():
            consume.result()  # re-raise MqttError: the connection was lost

    async def _consume(self, client: aiomqtt.Client, tracker: AckTracker) -> None:
        handler = self.handler
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            await handler(message.topic.value, bytes(payload),
                          tracker.track(message.mid, message.qos))

    def _on_connected(self) -> None:
        self.connected = True
        self.connected_since = time.monotonic()
        self.disconnected_since = None
        self.last_error = ""
        self.metrics.mqtt_connects.inc()
        self.metrics.mqtt_connected.set(1)

    def _on_disconnected(self, why: str) -> None:
        if self.connected or self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
        self.connected = False
        self.subscribed = False
        self.last_error = why
        self.metrics.mqtt_connected.set(0)
