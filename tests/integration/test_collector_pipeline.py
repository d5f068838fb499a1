"""The collector on real Mosquitto and VictoriaMetrics.

Published batches end up as series with the right tags and values; bad messages are
counted and dropped while the good ones around them arrive; a database outage and a
collector restart delay data but lose none (acknowledged only after writing). Every
test uses its own tenant id and MQTT client id; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from collector.app import Collector
from collector.config import (
    CollectorConfig,
    HttpSettings,
    InfluxSettings,
    MqttSettings,
    SpoolSettings,
)
from collector.samples import switch_payload
from schoolnet.sim.servers import Mosquitto, VictoriaMetrics
from schoolnet.wire import Status, decode_batch, encode_status
from tests.collector_support import write_inventory
from tests.security_support import eventually, http_get, running_collector
from tests.security_support import metric as metric_at

pytestmark = pytest.mark.integration

SITES = {
    "gy-a": [("core-sw", "switch", "hp"), ("router", "router", "lancom")],
    "gs-b": [("core-sw", "switch", "")],
    "rs-c": [("edge-sw", "switch", "cisco")],
}


def make_config(tmp: Path, broker: Mosquitto, db: VictoriaMetrics, *, spool: bool = True,
                **influx: Any) -> CollectorConfig:
    """A collector config for one test: own tenant inventory, client id, any HTTP port."""
    tenant = "t" + uuid.uuid4().hex[:10]
    write_inventory(tmp / "inv", tenant, SITES)
    opts: dict[str, Any] = {"url": db.url, "batch_max_lines": 500, "flush_interval_s": 0.1,
                            "retry_min_s": 0.05, "retry_max_s": 0.2}
    opts.update(influx)
    return CollectorConfig(
        mqtt=MqttSettings(host=broker.host, port=broker.port, client_id=f"c-{tenant}",
                          tenants=(tenant,), reconnect_min_s=0.1, reconnect_max_s=0.5),
        influx=InfluxSettings(**opts),
        inventory=str(tmp / "inv"),
        http=HttpSettings(host="127.0.0.1", port=0, write_failing_after_s=0.3),
        spool=SpoolSettings(enabled=spool),
        state_dir=str(tmp / "state"),
    )


def tenant_of(cfg: CollectorConfig) -> str:
    return cfg.mqtt.tenants[0]


#: A collector running in this event loop, connected and subscribed.
running = running_collector


def get(c: Collector, path: str) -> tuple[int, str]:
    """GET a page of the collector's HTTP endpoint."""
    return http_get(c.http.port, path)


def metric(c: Collector, name: str) -> float:
    """A value from the collector's /metrics, over HTTP (0 if absent)."""
    return metric_at(c.http.port, name)


@asynccontextmanager
async def publisher(broker: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"p-{uuid.uuid4().hex}") as p:
        yield p


def topic(tenant: str, site: str, kind: str = "metrics") -> str:
    return f"schoolnet/v1/{tenant}/{site}/{kind}"


def series(db: VictoriaMetrics, tenant: str, name: str = "interface_in_octets") -> list[dict[str, Any]]:
    return db.export(f'{{__name__="{name}",tenant="{tenant}"}}')


def stamps(db: VictoriaMetrics, tenant: str, site: str) -> set[int]:
    """Timestamps (ms) of the device points of one site: one per batch in these tests."""
    got: set[int] = set()
    for s in db.export(f'{{__name__="device_uptime_s",tenant="{tenant}",site="{site}"}}'):
        got.update(s["timestamps"])
    return got


T0 = 1_763_712_000_000  # ms; each batch gets its own millisecond


def batch(site: str, seq: int, device: str = "core-sw", ports: int = 3) -> bytes:
    import time
    t_ms = (time.time_ns() // 10**6) - 60_000 + seq  # a minute ago, one ms per seq
    return switch_payload(site, seq, device=device, ports=ports, time_ns=t_ms * 10**6, salt=seq)


def batch_ms(data: bytes) -> int:
    return decode_batch(data).points[0].time_ns // 10**6


def test_batches_become_series_with_trusted_tags_and_exact_values(
    tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics,
) -> None:
    cfg = make_config(tmp_path, mosquitto, victoria)
    tenant = tenant_of(cfg)

    async def scenario() -> None:
        async with running(cfg) as c, publisher(mosquitto) as pub:
            for site in SITES:
                await pub.publish(topic(tenant, site, "status"),
                                  encode_status(Status(site=site, state="online")),
                                  qos=1, retain=True)
            sent = {
                "gy-a": batch("gy-a", 1),
                "gs-b": batch("gs-b", 1),
                "rs-c": batch("rs-c", 1, device="edge-sw", ports=2),
            }
            for site, data in sent.items():
                await pub.publish(topic(tenant, site), data, qos=1)
            await eventually(lambda: len(series(victoria, tenant)) == 8, "8 interface series")
            got = {(s["metric"]["site"], s["metric"]["ifname"]): s for s in series(victoria, tenant)}
            for site, data in sent.items():
                for p in decode_batch(data).points[1:]:
                    s = got[(site, p.tags["ifname"])]
                    assert s["values"] == [p.fields["in_octets"]]
                    assert s["timestamps"] == [p.time_ns // 10**6]
            labels = got[("gy-a", "Gi0/1")]["metric"]
            assert {k: labels[k] for k in ("tenant", "site", "device", "role", "vendor",
                                           "ifindex")} == {
                "tenant": tenant, "site": "gy-a", "device": "core-sw", "role": "switch",
                "vendor": "hp", "ifindex": "10101"}
            # gs-b's inventory names no vendor: the agent's is kept.
            assert got[("gs-b", "Gi0/1")]["metric"]["vendor"] == "cisco"
            status, body = await asyncio.to_thread(get, c, "/api/status")
            sites = {s["site"]: s for s in json.loads(body)["sites"]}
            assert status == 200 and sites["gy-a"]["state"] == "online"
            assert sites["rs-c"]["points"] == 3 and sites["gs-b"]["seq_highest"] == 1
            assert (await asyncio.to_thread(get, c, "/healthz")) == (200, "ok\n")
            # 11 agent points, and the outage service's one ``maintenance`` point per
            # site at its first tick (no window: active=0).
            await eventually(lambda: metric(c, "schoolnet_collector_points_written_total")
                             == 11 + len(SITES), "11 agent + 3 maintenance points written")

    asyncio.run(scenario())


def test_bad_messages_are_counted_and_dropped_while_the_rest_arrives(
    tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics,
) -> None:
    cfg = make_config(tmp_path, mosquitto, victoria)
    tenant = tenant_of(cfg)
    good = [batch("gy-a", seq) for seq in range(1, 8)]
    wrong_type = json.loads(good[0])  # the v2 form: groups of rows
    device_group = wrong_type["groups"][0]
    device_group["rows"][0][device_group["field_columns"].index("poll_ms")] = [1, 2]
    ghost = json.loads(good[0])
    ghost["seq"] = 100
    for g in ghost["groups"]:
        g["tags"]["device"] = "ghost"
    bad: list[tuple[str, bytes, str]] = [
        (topic(tenant, "gy-a"), b"\x00not json{", "not_json"),
        (topic(tenant, "gy-a"), json.dumps(wrong_type).encode(), "bad_type"),
        (topic(tenant, "gy-a"), b"[" + b" " * (600 * 1024) + b"]", "too_large"),
        (topic(tenant, "gy-a"), json.dumps(ghost).encode(), "unknown_device"),
        (topic(tenant, "gy-a"), batch("gs-b", 50), "site_mismatch"),
        (topic(tenant, "nowhere"), batch("nowhere", 1), "unknown_site"),
    ]

    async def scenario() -> None:
        async with running(cfg) as c, publisher(mosquitto) as pub:
            for i, data in enumerate(good):
                await pub.publish(topic(tenant, "gy-a"), data, qos=1)
                if i < len(bad):
                    await pub.publish(bad[i][0], bad[i][1], qos=1)
            await pub.publish(topic(tenant, "gy-a"), good[2], qos=1)  # a replay
            want = {batch_ms(d) for d in good}
            await eventually(lambda: stamps(victoria, tenant, "gy-a") == want,
                             "all 7 good batches")
            name = "schoolnet_collector_messages_dropped_total"
            for _, _, reason in bad:
                await eventually(lambda r=reason: metric(c, f'{name}{{reason="{r}"}}') == 1,
                                 f"one drop counted as {reason}")
            dup = f'schoolnet_collector_seq_duplicates_total{{tenant="{tenant}",site="gy-a"}}'
            await eventually(lambda: metric(c, dup) == 1, "the replay counted")
            assert await asyncio.to_thread(metric, c, "schoolnet_collector_messages_accepted_total") == 7
            assert await asyncio.to_thread(metric, c, "schoolnet_collector_unacked_messages") == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("spool", [True, False], ids=["spool", "memory"])
def test_database_outage_delays_data_and_loses_none(
    tmp_path: Path, mosquitto: Mosquitto, spool: bool,
) -> None:
    db = VictoriaMetrics(tmp_path / "vm")
    with db:
        cfg = make_config(tmp_path, mosquitto, db, spool=spool)
        tenant = tenant_of(cfg)
        sent = [batch("gy-a", seq) for seq in range(1, 7)]

        async def scenario() -> None:
            async with running(cfg) as c, publisher(mosquitto) as pub:
                await pub.publish(topic(tenant, "gy-a"), sent[0], qos=1)
                await eventually(lambda: len(stamps(db, tenant, "gy-a")) == 1, "the first batch")
                await asyncio.to_thread(db.stop)
                for data in sent[1:4]:
                    await pub.publish(topic(tenant, "gy-a"), data, qos=1)
                await eventually(lambda: get(c, "/healthz")[0] == 503, "/healthz to report it")
                assert "database" in (await asyncio.to_thread(get, c, "/healthz"))[1]
                # With the spool the messages are acknowledged once on disk; without it
                # they wait at the broker until written.
                unacked = "schoolnet_collector_unacked_messages"
                if spool:
                    await eventually(lambda: metric(c, unacked) == 0, "acks from the spool")
                    assert await asyncio.to_thread(metric, c, "schoolnet_collector_spool_bytes") > 0
                else:
                    assert await asyncio.to_thread(metric, c, unacked) == 3
                await asyncio.to_thread(db.start)
                for data in sent[4:]:
                    await pub.publish(topic(tenant, "gy-a"), data, qos=1)
                want = {batch_ms(d) for d in sent}
                await eventually(lambda: stamps(db, tenant, "gy-a") == want, "all 6 batches")
                await eventually(lambda: get(c, "/healthz")[0] == 200, "/healthz healthy again")
                errors = 'schoolnet_collector_write_errors_total{kind="connection"}'
                assert await asyncio.to_thread(metric, c, errors) >= 1

        asyncio.run(scenario())


def test_unwritten_messages_survive_a_collector_restart_at_the_broker(
    tmp_path: Path, mosquitto: Mosquitto,
) -> None:
    """Database down, collector stopped before it could write: the broker still has it all."""
    db = VictoriaMetrics(tmp_path / "vm")
    with db:
        cfg = make_config(tmp_path, mosquitto, db)
        tenant = tenant_of(cfg)
        sent = [batch("gy-a", seq) for seq in range(1, 6)]

        async def scenario() -> None:
            await asyncio.to_thread(db.stop)
            async with running(cfg, shutdown_timeout_s=0.3) as c, publisher(mosquitto) as pub:
                for data in sent[:3]:
                    await pub.publish(topic(tenant, "gy-a"), data, qos=1)
                await eventually(lambda: c.validator.metrics.accepted.get() == 3, "intake")
            # Collector gone: the broker queues these for its persistent session.
            async with publisher(mosquitto) as pub:
                for data in sent[3:]:
                    await pub.publish(topic(tenant, "gy-a"), data, qos=1)
            await asyncio.to_thread(db.start)
            async with running(replace(cfg, http=replace(cfg.http, port=0))):
                want = {batch_ms(d) for d in sent}
                await eventually(lambda: stamps(db, tenant, "gy-a") == want, "all 5 batches")

        asyncio.run(scenario())
