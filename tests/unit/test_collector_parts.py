"""Config loading, in-order acks, metrics text format and the small HTTP server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collector.config import load_config
from collector.http import HttpServer, text
from collector.metrics import Registry
from collector.subscriber import AckTracker
from schoolnet.configfile import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "collector" / "example-config.yaml"


def test_the_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOOLNET_COLLECTOR_MQTT_PASSWORD", "s3cret")
    cfg = load_config(EXAMPLE)
    assert cfg.mqtt.password is not None and cfg.mqtt.password.reveal() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.inventory == str(EXAMPLE.parents[1] / "site-configs")
    assert (cfg.mqtt.protocol, cfg.influx.batch_max_lines) == ("5", 5000)


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  hots: x\n  protocol: 4\n  tenants: [Bad!]\n"
                    "influx:\n  url: influx:8086\n  batch_max_lines: 10\n"
                    "  buffer_max_lines: 5\nhttp: {port: -1}\nextra: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    got = {(i.line, i.field) for i in err.value.issues}
    assert got == {(2, "mqtt.hots"), (3, "mqtt.protocol"), (4, "mqtt.tenants"),
                   (6, "influx.url"), (8, "influx.buffer_max_lines"), (9, "http.port"),
                   (10, "extra")}
    assert all(i.file == str(path) for i in err.value.issues)


def test_max_series_per_site_is_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("max_series_per_site: 1200\n")
    assert load_config(path).max_series_per_site == 1200
    assert load_config(EXAMPLE, resolve_secrets=False).max_series_per_site == 50_000
    path.write_text("max_series_per_site: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [(i.line, i.field) for i in err.value.issues] == [(1, "max_series_per_site")]


def test_an_empty_config_means_every_default(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    cfg = load_config(path)
    assert cfg.mqtt.client_id == "schoolnet-collector" and cfg.inventory == str(
        tmp_path / "site-configs")


def test_acks_leave_in_arrival_order_and_not_after_the_connection_is_gone() -> None:
    sent: list[int] = []
    t = AckTracker(lambda mid, qos: sent.append(mid))
    done = [t.track(mid, 1) for mid in (1, 2, 3)]
    qos0 = t.track(0, 0)
    done[1]()
    assert sent == [] and len(t) == 3
    done[0]()
    assert sent == [1, 2]
    qos0()
    t.closed = True
    done[2]()
    assert sent == [1, 2] and len(t) == 0


def test_metrics_render_in_prometheus_text_format() -> None:
    r = Registry()
    c = r.counter("x_total", "Things.", ["reason"])
    c.inc("not_json")
    c.inc('we"ird\n')
    r.counter("y_total", "Unlabelled.")
    g = r.gauge("depth", "Depth.", read=lambda: [((), 3.0)])
    h = r.histogram("lat_seconds", "Latency.", buckets=(0.1, 1.0))
    h.observe(0.05)
    h.observe(0.5)
    assert g.values == {}
    assert r.render().splitlines() == [
        "# HELP x_total Things.", "# TYPE x_total counter",
        'x_total{reason="not_json"} 1', 'x_total{reason="we\\"ird\\n"} 1',
        "# HELP y_total Unlabelled.", "# TYPE y_total counter", "y_total 0",
        "# HELP depth Depth.", "# TYPE depth gauge", "depth 3",
        "# HELP lat_seconds Latency.", "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{le="0.1"} 1', 'lat_seconds_bucket{le="1"} 2',
        'lat_seconds_bucket{le="+Inf"} 2', "lat_seconds_sum 0.55", "lat_seconds_count 2",
    ]


def test_http_server_serves_routes_and_refuses_the_rest() -> None:
    async def fetch(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    async def scenario() -> None:
        server = HttpServer("127.0.0.1", 0, {"/healthz": lambda: text(503, "mqtt: down\n")})
        await server.start()
        try:
            got = await fetch(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 503 ") and got.endswith(b"\r\n\r\nmqtt: down\n")
            assert b" 404 " in await fetch(server.port, b"GET /nope HTTP/1.1\r\n\r\n")
            assert b" 405 " in await fetch(server.port, b"POST /healthz HTTP/1.1\r\n\r\n")
            assert b" 400 " in await fetch(server.port, b"x" * 9000 + b"\r\n\r\n")
            head = await fetch(server.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
            assert head.endswith(b"\r\n\r\n")
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
