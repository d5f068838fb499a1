"""The uplink report without a database: rows, text, CSV, and the queries' answers parsed."""

from __future__ import annotations

import csv
import io
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from schoolnet.inventory import load_inventory
from schoolnet.uplink.query import InfluxQLBackend, PromQueryBackend, QueryError, SiteStats
from schoolnet.uplink.report import build_rows, to_csv, to_text


def inventory(tmp_path: Path) -> Path:
    root = tmp_path / "sc"
    d = root / "herne"
    d.mkdir(parents=True)
    (d / "tenant.yaml").write_text("tenant: herne\nname: Stadt Herne\n")
    for sid, name, kind, down, up in (("gs-park", "GS Am Park", "dsl", 50, 10),
                                      ("gy-ost", "Gymnasium Ost", "fibre", 400, 400),
                                      ("fs-lte", "Förderschule", "lte", 100, 20)):
        (d / f"{sid}.yaml").write_text(
            f"site: {sid}\nname: {name}\nuplink: {{kind: {kind}, down_mbit: {down}, "
            f"up_mbit: {up}, device: r, interface: wan}}\n"
            "devices: [{name: r, host: 127.0.0.1, role: router, snmp: {version: 2c, "
            "community: c}}]\n")
    return root


STATS = {
    "gs-park": SiteStats(down_p50=47.5, down_p10=40.0, down_tests=60, up_p50=9.5,
                         up_p10=9.0, up_tests=60, loss_pct=0.4, rtt_ms=18.25,
                         util_in_p95=92.0, util_out_p95=30.0),
    "gy-ost": SiteStats(down_p50=180.0, down_p10=120.0, down_tests=58, loss_pct=0.0,
                        rtt_ms=4.0),
}


def test_rows_join_inventory_and_measurements(tmp_path: Path) -> None:
    inv = load_inventory(inventory(tmp_path))
    rows = build_rows(inv, "herne", STATS)
    assert [r.get("site") for r in rows] == ["fs-lte", "gs-park", "gy-ost"]
    park = rows[1]
    assert park.get("down_contract") == 50.0 and park.get("down_ratio") == pytest.approx(0.95)
    assert park.get("up_ratio") == pytest.approx(0.95)
    ost = rows[2]
    assert ost.get("down_ratio") == pytest.approx(0.45) and ost.get("up_p50") is None
    # A site without any measurement is in the report, with no data.
    assert rows[0].get("down_p50") is None and rows[0].get("down_tests") == 0


def test_text_and_csv(tmp_path: Path) -> None:
    rows = build_rows(load_inventory(inventory(tmp_path)), "herne", STATS)
    text = to_text(rows, tenant="herne", tenant_name="Stadt Herne", days=30)
    lines = text.splitlines()
    assert lines[0] == "Uplinks of Stadt Herne (herne), last 30 days"
    assert "down median" in lines[2] and set(lines[3]) <= {"-", " "}
    park = next(line for line in lines if line.startswith("gs-park"))
    assert "47.5" in park and "0.95" in park and "18.2" in park
    lte = next(line for line in lines if line.startswith("fs-lte"))
    assert lte.split()[-1] == "-"
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed[1]["site"] == "gs-park" and parsed[1]["down_p50"] == "47.50"
    assert parsed[1]["down_ratio"] == "0.95" and parsed[0]["down_p50"] == ""
    assert parsed[2]["name"] == "Gymnasium Ost" and parsed[0]["name"] == "Förderschule"


def _prom_answer(url: str) -> Any:
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["query"][0]
    if "probe_throughput" in q and "quantile_over_time(0.5" in q:
        return {"status": "success", "data": {"result": [
            {"metric": {"site": "gs-park", "direction": "down"}, "value": [0, "47.5"]},
            {"metric": {"site": "gs-park", "direction": "up"}, "value": [0, "9.5"]}]}}
    if "count_over_time" in q:
        return {"status": "success", "data": {"result": [
            {"metric": {"site": "gs-park", "direction": "down"}, "value": [0, "60"]}]}}
    if "probe_icmp_loss_pct" in q:
        assert 'target_kind!~"gateway|lan"' in q and 'tenant="herne"' in q and "[720h]" in q
        return {"status": "success", "data": {"result": [
            {"metric": {"site": "gs-park"}, "value": [0, "0.4"]},
            {"metric": {"site": "gy-ost"}, "value": [0, "NaN"]}]}}
    return {"status": "success", "data": {"result": []}}


def test_prom_backend_reads_the_vectors() -> None:
    stats = PromQueryBackend("http://db", fetch=_prom_answer).fetch("herne", 30)
    assert stats["gs-park"].down_p50 == 47.5 and stats["gs-park"].up_p50 == 9.5
    assert stats["gs-park"].down_tests == 60 and stats["gs-park"].loss_pct == 0.4
    assert "gy-ost" not in stats  # NaN: no samples, no value
    with pytest.raises(QueryError, match="query failed"):
        PromQueryBackend("http://db", fetch=lambda u: {"status": "error"}).fetch("herne", 30)
    with pytest.raises(QueryError, match="not a tenant id"):
        PromQueryBackend("http://db", fetch=_prom_answer).fetch('x"}or{', 30)


def _influx_answer(url: str) -> Any:
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["q"][0]
    if "probe_throughput" in q:
        return {"results": [{"series": [
            {"name": "probe_throughput", "tags": {"site": "gs-park", "direction": "down"},
             "columns": ["time", "p50", "p10", "tests"], "values": [[0, 47.5, 40.0, 60]]}]}]}
    if "probe_icmp" in q:
        assert "\"target_kind\" !~ /^(gateway|lan)$/" in q
        return {"results": [{"series": [
            {"name": "probe_icmp", "tags": {"site": "gs-park"},
             "columns": ["time", "loss", "rtt"], "values": [[0, 0.4, 18.25]]}]}]}
    return {"results": [{"statement_id": 0}]}


def test_influxql_backend_reads_the_series() -> None:
    stats = InfluxQLBackend("http://db", fetch=_influx_answer).fetch("herne", 30)
    park = stats["gs-park"]
    assert (park.down_p50, park.down_p10, park.down_tests) == (47.5, 40.0, 60)
    assert (park.loss_pct, park.rtt_ms) == (0.4, 18.25)
    with pytest.raises(QueryError, match="InfluxQL: database not found"):
        InfluxQLBackend("http://db", fetch=lambda u: {"results": [
            {"error": "database not found"}]}).fetch("herne", 30)
