"""Hostile input through the real broker, with a valid site credential.

Everything a compromised site box could publish below its own topic (the ACL allows
nothing else): each message is dropped with its documented reason, counted in
``/metrics`` and logged at most once per reason per interval; the collector stays
up; the valid batches published between them all arrive in the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from collector.config import CollectorConfig, HttpSettings, InfluxSettings, MqttSettings
from schoolnet.configfile import Secret
from schoolnet.sim.servers import VictoriaMetrics
from schoolnet.wire import Batch, Point, encode_batch
from tests.collector_support import write_inventory
from tests.security_support import (
    SecuredBroker,
    eventually,
    http_get,
    metric,
    running_collector,
    secured_broker,
    site_status,
)

pytestmark = pytest.mark.integration

TENANT = "hostile"
SITE = "site-a"
BASE = f"schoolnet/v1/{TENANT}/{SITE}"


def now_ns() -> int:
    return time.time_ns()


def point(**over: object) -> dict[str, object]:
    p: dict[str, object] = {"measurement": "device", "tags": {"device": "sw-1"},
                            "fields": {"up": 1}, "time_ns": now_ns()}
    p.update(over)
    return p


def doc(*points: dict[str, object], **over: object) -> bytes:
    d: dict[str, object] = {"v": 1, "site": SITE, "seq": 10**9, "epoch": "e",
                            "points": list(points) or [point()]}
    d.update(over)
    return json.dumps(d).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


#: (what, topic suffix, payload, reason)
HOSTILE: list[tuple[str, str, bytes, str]] = [
    ("not JSON", "metrics", b"\x00\xff{not json", "not_json"),
    ("JSON, not an object", "metrics", b"[1, 2, 3]", "bad_type"),
    ("seq as a string", "metrics", doc(seq="7"), "bad_type"),
    ("points not a list", "metrics", doc(points={"a": 1}), "bad_type"),
    ("a field that is a list", "metrics", doc(point(fields={"up": [1, 2]})), "bad_type"),
    ("nested 100,000 deep", "metrics", nested(100_000).encode(), "too_deep"),
    ("a field nested 5,000 deep", "metrics",
     doc().replace(b'"up": 1', b'"up": ' + nested(5000).encode()), "too_deep"),
    ("600 KiB", "metrics", b'{"v": 1, "pad": "' + b"x" * (600 * 1024) + b'"}', "too_large"),
    ("NaN", "metrics", doc().replace(b'"up": 1', b'"up": NaN'), "bad_number"),
    ("Infinity", "metrics", doc().replace(b'"up": 1', b'"up": -Infinity'), "bad_number"),
    ("unknown measurement", "metrics", doc(point(measurement="evil")), "unknown_measurement"),
    ("unknown tag key", "metrics", doc(point(tags={"device": "sw-1", "user": "x"})),
     "unknown_tag"),
    ("tenant tag in the payload", "metrics",
     doc(point(tags={"device": "sw-1", "tenant": "other"})), "topic_tag"),
    ("tag value of 10,000 characters", "metrics",
     doc(point(tags={"device": "sw-1", "role": "x" * 10_000})), "bad_tag_value"),
    ("1,000 unknown devices (cardinality bomb)", "metrics",
     doc(*[point(tags={"device": f"dev-{uuid.uuid4().hex}"}) for _ in range(1000)]),
     "unknown_device"),
    ("a device in the topic that the site does not have", "metrics/ghost", doc(),
     "unknown_device"),
    ("a day in the future", "metrics", doc(point(time_ns=now_ns() + 86_400 * 10**9)),
     "bad_time"),
    ("the year 2000", "metrics", doc(point(time_ns=946_684_800 * 10**9)), "bad_time"),
    ("another site's id in the payload", "metrics", doc(site="site-b"), "site_mismatch"),
    ("6,000 points", "metrics",
     doc(*[{"measurement": "agent", "fields": {"a": 1}, "time_ns": now_ns()}] * 6000),
     "too_many_points"),
    ("100 fields", "metrics", doc(point(fields={f"f{i}": i for i in range(100)})),
     "too_many_fields"),
    ("a field key with a space", "metrics", doc(point(fields={"Bad Key": 1})), "bad_key"),
    ("a string field of 5,000 characters", "metrics", doc(point(fields={"s": "x" * 5000})),
     "bad_field_value"),
    ("an integer beyond 64 bits", "metrics", doc(point(fields={"up": 2**70})),
     "bad_field_value"),
    ("schema version 99", "metrics", doc(v=99), "bad_version"),
    ("a status that is not one", "status", b'{"v": 1, "state": "pwned"}', "bad_status"),
    ("an unknown topic kind", "backdoor", doc(), "bad_topic"),
]


@pytest.fixture()
def secured(tmp_path: Path) -> Iterator[SecuredBroker]:
    inv = write_inventory(tmp_path / "inv", TENANT, {
        SITE: [("sw-1", "switch", "hp")], "site-b": [("sw-1", "switch", "hp")]})
    sb = secured_broker(tmp_path, inv)
    try:
        yield sb
    finally:
        sb.broker.stop()


def good(seq: int, t_ns: int) -> bytes:
    p = Point("device", {"device": "sw-1"}, {"up": 1, "n": seq}, t_ns)
    return encode_batch(Batch(site=SITE, seq=seq, points=(p,), epoch="e"))


def test_each_hostile_message_is_dropped_with_its_reason_and_valid_traffic_arrives(
    tmp_path: Path, secured: SecuredBroker, victoria: VictoriaMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="schoolnet.collector")
    cfg = CollectorConfig(
        mqtt=MqttSettings(host="127.0.0.1", port=secured.broker.port, username="collector",
                          password=Secret(secured.passwords["collector"]),
                          client_id=f"c-{uuid.uuid4().hex[:8]}"),
        influx=InfluxSettings(url=victoria.url, flush_interval_s=0.1),
        inventory=str(tmp_path / "inv"), http=HttpSettings(host="127.0.0.1", port=0),
        state_dir=str(tmp_path / "state"))
    t0 = (time.time_ns() // 10**6 - 60_000) * 10**6  # a minute ago, one ms per batch
    sent = len(HOSTILE) + 1

    async def scenario() -> None:
        async with running_collector(cfg) as c:
            port = c.http.port
            async with aiomqtt.Client("127.0.0.1", secured.broker.port, username=SITE,
                                      password=secured.passwords[SITE]) as pub:
                for seq, (_, suffix, payload, _) in enumerate(HOSTILE):
                    await pub.publish(f"{BASE}/metrics", good(seq, t0 + seq * 10**6), qos=1)
                    await pub.publish(f"{BASE}/{suffix}", payload, qos=1)
                await pub.publish(f"{BASE}/metrics", good(len(HOSTILE), t0 + sent * 10**6), qos=1)
                # The same bad message again: counted again, but not logged again.
                for _ in range(3):
                    await pub.publish(f"{BASE}/metrics", HOSTILE[0][2], qos=1)

            want = Counter(reason for *_, reason in HOSTILE)
            want["not_json"] += 3
            name = "schoolnet_collector_messages_dropped_total"
            for reason, n in want.items():
                await eventually(lambda r=reason, n=n: metric(port, f'{name}{{reason="{r}"}}') == n,
                                 f"{n} drop(s) counted as {reason}")
            sel = f'{{__name__="device_n",tenant="{TENANT}",site="{SITE}"}}'
            await eventually(lambda: sum(len(s["values"]) for s in victoria.export(sel)) == sent,
                             "every valid batch in the database")
            values = sorted(v for s in victoria.export(sel) for v in s["values"])
            assert values == list(range(sent))
            status = (await asyncio.to_thread(site_status, port))[SITE]
            assert (status["messages"], status["seq_gaps"], status["seq_highest"]) == (
                sent, 0, sent - 1)
            assert await asyncio.to_thread(http_get, port, "/healthz") == (200, "ok\n")
            assert c.subscriber.connected

        logged = Counter(r.getMessage().split(": ")[1] for r in caplog.records
                         if r.getMessage().startswith("dropped message"))
        assert logged["not_json"] == 1  # four drops, one line (rate-limited per reason)
        assert set(logged) == set(want)

    asyncio.run(scenario())


def test_a_packet_over_the_brokers_limit_never_reaches_the_collector(
    tmp_path: Path, secured: SecuredBroker, victoria: VictoriaMetrics,
) -> None:
    cfg = CollectorConfig(
        mqtt=MqttSettings(host="127.0.0.1", port=secured.broker.port, username="collector",
                          password=Secret(secured.passwords["collector"]),
                          client_id=f"c-{uuid.uuid4().hex[:8]}"),
        influx=InfluxSettings(url=victoria.url, flush_interval_s=0.1),
        inventory=str(tmp_path / "inv"), http=HttpSettings(host="127.0.0.1", port=0),
        state_dir=str(tmp_path / "state"))

    async def scenario() -> None:
        async with running_collector(cfg) as c:
            port = c.http.port
            with pytest.raises(aiomqtt.MqttError):  # the broker drops the connection
                async with aiomqtt.Client("127.0.0.1", secured.broker.port, username=SITE,
                                          password=secured.passwords[SITE], timeout=2) as pub:
                    await pub.publish(f"{BASE}/metrics", b"x" * (2 * 1024 * 1024), qos=1)
            async with aiomqtt.Client("127.0.0.1", secured.broker.port, username=SITE,
                                      password=secured.passwords[SITE]) as pub:
                await pub.publish(f"{BASE}/metrics", good(0, time.time_ns()), qos=1)
            await eventually(lambda: site_status(port)[SITE]["messages"] == 1, "the next batch")
            received = 'schoolnet_collector_messages_received_total{kind="metrics"}'
            assert await asyncio.to_thread(metric, port, received) == 1

    asyncio.run(scenario())
