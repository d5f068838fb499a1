"""The collector's spool and seq state across a restart, on Mosquitto + VictoriaMetrics.

With the database down, messages are acknowledged from the spool (the broker keeps
nothing for us); after a restart the spool is written out, a replay is a duplicate
and a missing seq is still a gap, in ``/metrics`` and in ``schoolnet status``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiomqtt
import pytest

from collector.config import CollectorConfig, HttpSettings, InfluxSettings, MqttSettings
from schoolnet.sim.servers import Mosquitto, VictoriaMetrics
from schoolnet.wire import Batch, Point, encode_batch
from tests.collector_support import write_inventory
from tests.security_support import eventually, metric, running_collector, site_status

pytestmark = pytest.mark.integration

SCHOOLNET = str(Path(sys.executable).with_name("schoolnet"))


def batch(site: str, seq: int, t0_ms: int) -> bytes:
    p = Point("device", {"device": "sw"}, {"up": 1, "seq": seq}, (t0_ms + seq) * 10**6)
    return encode_batch(Batch(site=site, seq=seq, points=(p,), epoch="ep"))


def test_spool_and_seq_state_survive_a_restart_and_show_in_metrics_and_status(
    tmp_path: Path, mosquitto: Mosquitto,
) -> None:
    tenant = "r" + uuid.uuid4().hex[:8]
    write_inventory(tmp_path / "inv", tenant, {"gy": [("sw", "switch", "hp")]})
    db = VictoriaMetrics(tmp_path / "vm")
    cfg = CollectorConfig(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id=f"c-{tenant}",
                          tenants=(tenant,), reconnect_min_s=0.1),
        influx=InfluxSettings(url=db.url, flush_interval_s=0.1, retry_min_s=0.05,
                              retry_max_s=0.2),
        inventory=str(tmp_path / "inv"), http=HttpSettings(host="127.0.0.1", port=0),
        state_dir=str(tmp_path / "state"))
    topic = f"schoolnet/v1/{tenant}/gy/metrics"
    t0_ms = time.time_ns() // 10**6 - 60_000
    sel = f'{{__name__="device_seq",tenant="{tenant}"}}'

    async def scenario() -> None:
        # First run: the database is not there; everything is acknowledged from the spool.
        async with running_collector(cfg, shutdown_timeout_s=0.3) as c:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
                for seq in (0, 1, 2, 5):  # 3 and 4 never sent (yet)
                    await pub.publish(topic, batch("gy", seq, t0_ms), qos=1)
            port = c.http.port
            await eventually(lambda: metric(port, "schoolnet_collector_spool_bytes") > 0
                             and metric(port, "schoolnet_collector_unacked_messages") == 0,
                             "four messages stored and acknowledged")
        db.start()
        try:
            async with running_collector(cfg) as c:
                port = c.http.port
                await eventually(lambda: sorted(v for s in db.export(sel) for v in s["values"])
                                 == [0, 1, 2, 5], "the spool written out after the restart")
                async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
                    await pub.publish(topic, batch("gy", 2, t0_ms), qos=1)  # a replay
                    await pub.publish(topic, batch("gy", 3, t0_ms), qos=1)  # fills a gap
                dup = f'schoolnet_collector_seq_duplicates_total{{tenant="{tenant}",site="gy"}}'
                gaps = f'schoolnet_collector_seq_gaps{{tenant="{tenant}",site="gy"}}'
                await eventually(lambda: metric(port, dup) == 1 and metric(port, gaps) == 1,
                                 "one duplicate and one gap (seq 4) in /metrics")
                gy = (await asyncio.to_thread(site_status, port))["gy"]
                assert (gy["seq_highest"], gy["seq_gaps"], gy["seq_duplicates"]) == (5, 1, 1)
                out = await asyncio.to_thread(
                    subprocess.run, [SCHOOLNET, "status", "--collector",
                                     f"http://127.0.0.1:{port}", "--tenant", tenant],
                    capture_output=True, text=True, timeout=30)
                assert out.returncode == 0, out.stderr
                row = next(line.split() for line in out.stdout.splitlines()
                           if line.startswith(tenant))
                assert row[-3:] == ["5", "1", "1"]  # SEQ GAPS DUPLICATES
                assert "1 seq(s) missing" in out.stdout
                await eventually(lambda: sorted(v for s in db.export(sel) for v in s["values"])
                                 == [0, 1, 2, 3, 5], "seq 3 written, the replay not twice")
        finally:
            db.stop()

    asyncio.run(scenario())
