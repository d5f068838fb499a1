"""`schoolnet collector run` as a process: config errors, a clean run, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import aiomqtt
import pytest

from collector.samples import switch_payload
from schoolnet.sim.servers import Mosquitto, VictoriaMetrics, free_port, wait_for
from tests.collector_support import write_inventory

pytestmark = pytest.mark.integration

SCHOOLNET = str(Path(sys.executable).with_name("schoolnet"))


def test_config_errors_exit_2_naming_file_line_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("mqtt:\n  port: seventeen\ninflux:\n  tokn: x\n")
    proc = subprocess.run([SCHOOLNET, "collector", "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{cfg}:2: mqtt.port: must be a integer" in proc.stderr
    assert f"{cfg}:4: influx.tokn: unknown key" in proc.stderr


def test_run_writes_points_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics,
) -> None:
    tenant = "t" + uuid.uuid4().hex[:10]
    write_inventory(tmp_path / "inv", tenant, {"gy": [("core-sw", "switch", "hp")]})
    port = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, client_id: c-{tenant},"
        f" tenants: [{tenant}]}}\n"
        f"influx: {{url: '{victoria.url}', flush_interval_s: 0.1}}\n"
        f"inventory: inv\nhttp: {{port: {port}}}\nstate_dir: state\n")
    proc = subprocess.Popen([SCHOOLNET, "collector", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(healthy, 30, "the collector's /healthz")

        async def publish() -> None:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
                await pub.publish(f"schoolnet/v1/{tenant}/gy/metrics",
                                  switch_payload("gy", 1, ports=2), qos=1)

        asyncio.run(publish())
        sel = f'{{__name__="interface_in_octets",tenant="{tenant}"}}'
        wait_for(lambda: len(victoria.export(sel)) == 2, 30, "two interface series")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
            assert json.loads(r.read())["sites"][0]["points"] == 3
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, out
    assert "shutting down" in out
    assert (tmp_path / "state").is_dir()
