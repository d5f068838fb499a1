"""Real Mosquitto with the password file, ACL and TLS listener from `schoolnet broker-config`.

A site writes only below its own topic and reads nothing; the collector reads
everything and writes nothing; wrong credentials are refused; agent and collector talk
TLS with a CA the test creates, and with client certificates when the broker wants them.
"What did not arrive" is proved with markers: the broker handles one connection's
messages in order, so once a later message arrived, an earlier one would have too.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest

from agent.app import Agent
from agent.publisher import Backoff, Publisher
from agent.spool import DiskSpool
from collector.config import CollectorConfig, HttpSettings, InfluxSettings, MqttSettings
from schoolnet.configfile import Secret
from schoolnet.inventory import load_site
from schoolnet.sim.servers import VictoriaMetrics
from schoolnet.wire import Batch, Point, Status, encode_batch, encode_status
from tests.collector_support import write_inventory
from tests.security_support import (
    SecuredBroker,
    eventually,
    metric,
    running_collector,
    secured_broker,
    site_status,
)
from tests.unit.agent_fakes import CountingSource

pytestmark = pytest.mark.integration

TENANT = "sec"


@pytest.fixture()
def inv(tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inv", TENANT, {
        "site-a": [("sw-1", "switch", "hp")], "site-b": [("sw-1", "switch", "hp")]})


@pytest.fixture()
def secured(tmp_path: Path, inv: Path) -> Iterator[SecuredBroker]:
    sb = secured_broker(tmp_path, inv)
    try:
        yield sb
    finally:
        sb.broker.stop()


def collector_config(tmp: Path, sb: SecuredBroker, db: VictoriaMetrics, *,
                     tls: bool = False) -> CollectorConfig:
    return CollectorConfig(
        mqtt=MqttSettings(host="127.0.0.1", port=sb.tls_port if tls else sb.broker.port,
                          tls=tls, ca_file=str(sb.pki.ca) if tls else None,
                          username="collector", password=Secret(sb.passwords["collector"]),
                          client_id=f"c-{uuid.uuid4().hex[:8]}", reconnect_min_s=0.1,
                          reconnect_max_s=0.5),
        influx=InfluxSettings(url=db.url, flush_interval_s=0.1, retry_min_s=0.05),
        inventory=str(tmp / "inv"),
        http=HttpSettings(host="127.0.0.1", port=0),
        state_dir=str(tmp / "state"),
    )


@asynccontextmanager
async def client(sb: SecuredBroker, username: str, password: str | None = None,
                 **kw: object) -> AsyncIterator[aiomqtt.Client]:
    pw = sb.passwords.get(username) if password is None else password
    async with aiomqtt.Client("127.0.0.1", sb.broker.port, username=username, password=pw,
                              identifier=f"{username}-{uuid.uuid4().hex[:6]}", **kw) as c:
        yield c


def topic(site: str, kind: str = "metrics") -> str:
    return f"schoolnet/v1/{TENANT}/{site}/{kind}"


def batch(site: str, seq: int) -> bytes:
    import time
    p = Point("device", {"device": "sw-1"}, {"up": 1, "seq": seq}, time.time_ns())
    return encode_batch(Batch(site=site, seq=seq, points=(p,), epoch="e"))


def test_a_site_writes_only_below_its_own_topic(
    tmp_path: Path, secured: SecuredBroker, victoria: VictoriaMetrics,
) -> None:
    async def scenario() -> None:
        async with running_collector(collector_config(tmp_path, secured, victoria)) as c:
            port = c.http.port
            async with client(secured, "site-a") as a:
                await a.publish(topic("site-b"), batch("site-b", 1), qos=1)  # denied
                await a.publish(topic("site-b", "status"),
                                encode_status(Status(site="site-b", state="offline")),
                                qos=1, retain=True)  # denied: no fake "offline" for B
                await a.publish("elsewhere/entirely", b"x", qos=1)  # denied
                await a.publish(topic("site-a"), batch("site-a", 1), qos=1)  # the marker
            await eventually(lambda: site_status(port)["site-a"]["messages"] == 1, "the marker")
            b = (await asyncio.to_thread(site_status, port))["site-b"]
            assert (b["messages"], b["state"], b["seq_highest"]) == (0, "unknown", -1)
            received = 'schoolnet_collector_messages_received_total{kind="metrics"}'
            assert await asyncio.to_thread(metric, port, received) == 1
            status_kind = 'schoolnet_collector_messages_received_total{kind="status"}'
            assert await asyncio.to_thread(metric, port, status_kind) == 0

    asyncio.run(scenario())


def test_a_site_reads_nothing_and_the_collector_writes_nothing(
    tmp_path: Path, secured: SecuredBroker, victoria: VictoriaMetrics,
) -> None:
    async def scenario() -> None:
        async with running_collector(collector_config(tmp_path, secured, victoria)) as c:
            port = c.http.port
            got: list[str] = []
            async with client(secured, "site-a") as a:
                for f in ("schoolnet/v1/#", f"schoolnet/v1/{TENANT}/site-b/#", "#",
                          f"schoolnet/v1/{TENANT}/site-a/#"):
                    await a.subscribe(f, qos=1)

                async def listen() -> None:
                    async for m in a.messages:
                        got.append(str(m.topic))

                listening = asyncio.create_task(listen())
                async with client(secured, "collector") as col:  # the collector's account
                    await col.publish(topic("site-a"), batch("site-a", 7), qos=1)  # denied
                async with client(secured, "site-b") as b:
                    await b.publish(topic("site-b"), batch("site-b", 1), qos=1)
                await eventually(lambda: site_status(port)["site-b"]["messages"] == 1,
                                 "site B's message at the collector")
                # A round trip on A's own connection: anything the broker had for A
                # would have been written to A's socket before this PUBACK.
                await a.publish(topic("site-a"), batch("site-a", 1), qos=1)
                await eventually(lambda: site_status(port)["site-a"]["messages"] == 1,
                                 "A's own message")
                listening.cancel()
            assert got == []  # not B's data, not even its own
            a_now = (await asyncio.to_thread(site_status, port))["site-a"]
            assert a_now["seq_highest"] == 1  # seq 7 never came

    asyncio.run(scenario())


@pytest.mark.parametrize(("username", "password"), [
    ("site-a", "wrong-password"),
    ("site-a", ""),
    ("nobody", "whatever"),
    (None, None),
], ids=["wrong-password", "empty-password", "unknown-user", "anonymous"])
def test_wrong_credentials_are_refused(
    secured: SecuredBroker, username: str | None, password: str | None,
) -> None:
    async def scenario() -> None:
        with pytest.raises(aiomqtt.MqttCodeError) as exc:
            async with aiomqtt.Client("127.0.0.1", secured.broker.port, username=username,
                                      password=password):
                pass
        assert "authori" in str(exc.value).lower()  # "Not authorized"
        async with client(secured, "site-a"):  # the right one is taken
            pass

    asyncio.run(scenario())


def agent_site(inv: Path, site: str, sb: SecuredBroker, *, client_cert: bool = False) -> Path:
    """Give a site of the inventory TLS broker settings with its generated password."""
    pw_file = inv.parent / f"{site}.mqtt-password"
    pw_file.write_text(sb.passwords[site] + "\n")
    extra = ""
    if client_cert:
        extra = (f"    cert_file: {sb.pki.client_cert}\n"
                 f"    key_file: {sb.pki.client_key}\n")
    path = inv / TENANT / f"{site}.yaml"
    path.write_text(path.read_text() + (
        f"agent:\n  poll_interval_s: 0.05\n  broker:\n    host: 127.0.0.1\n"
        f"    port: {sb.tls_port}\n    tls: true\n    ca_file: {sb.pki.ca}\n"
        f"    password: {{file: {pw_file}}}\n{extra}"))
    return path


def test_agent_and_collector_over_tls_with_a_ca_the_test_made(
    tmp_path: Path, inv: Path, secured: SecuredBroker, victoria: VictoriaMetrics,
) -> None:
    site = load_site(agent_site(inv, "site-a", secured))

    async def scenario() -> None:
        cfg = collector_config(tmp_path, secured, victoria, tls=True)
        async with running_collector(cfg) as c:
            port = c.http.port
            with DiskSpool.for_site(tmp_path / "spool", TENANT, "site-a") as spool:
                agent = Agent(site, spool, sources=[CountingSource("sw", "sw-1")],
                              install_signal_handlers=False, replay_rate=1000,
                              backoff=Backoff(initial_s=0.05, max_s=0.3))
                serving = asyncio.create_task(agent.serve())
                await eventually(lambda: site_status(port)["site-a"]["messages"] >= 5,
                                 "the agent's batches over TLS at the collector over TLS")
                assert (await asyncio.to_thread(site_status, port))["site-a"]["state"] == "online"
                agent.handle_exit()
                assert await serving == 0
            assert c.subscriber.connected and c.config.mqtt.tls

        # Without the CA (system trust only) the server is not believed; plain MQTT to
        # the TLS port does not get through either.
        for tls_context in (ssl.create_default_context(), None):
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client("127.0.0.1", secured.tls_port, username="site-a",
                                          password=secured.passwords["site-a"],
                                          tls_context=tls_context, timeout=3):
                    pass

    asyncio.run(scenario())


def test_client_certificates_when_the_broker_requires_them(tmp_path: Path, inv: Path) -> None:
    sb = secured_broker(tmp_path, inv, require_client_cert=True)
    try:
        with_cert = load_site(agent_site(inv, "site-a", sb, client_cert=True))
        without = replace(with_cert, agent=replace(with_cert.agent, broker=replace(
            with_cert.agent.broker, cert_file=None, key_file=None)))

        async def scenario() -> None:
            async with Publisher(with_cert, timeout_s=5) as pub:  # says "online" on connect
                assert not pub.lost
            with pytest.raises(aiomqtt.MqttError):
                async with Publisher(without, timeout_s=2):
                    pass

        asyncio.run(scenario())
    finally:
        sb.broker.stop()
