"""Lint of the committed Grafana dashboards and provisioning files (no servers).

The query test against a real InfluxDB is tests/integration/test_dashboards_influxdb.py;
this one checks what can be checked by reading: the JSON is what the generator makes,
ids are unique, every panel uses the ``$DS`` variable, no tenant or site is written
into a query, every panel has a unit, and every column a panel refers to exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.boards import DASHBOARDS
from dashboards.build import generated, main, stale
from schoolnet.demo.city import default_city
from tests.dashboard_support import (
    PROVISIONING_DIR,
    ROOT,
    load_dashboards,
    outer_columns,
    outer_group_tags,
    panel_queries,
    top_tags,
)

DS = {"type": "influxdb", "uid": "${DS}"}
BOARDS = load_dashboards()
QUERIES = [q for name, doc in BOARDS.items() for q in panel_queries(name, doc)]
#: InfluxQL that InfluxDB 3 does not have (docs: InfluxQL feature support) or that
#: writes (a dashboard must never change the database).
UNPORTABLE = re.compile(r"\b(SLIMIT|SOFFSET|INTEGRAL|SAMPLE|HOLT_WINTERS\w*|INTO|DROP|DELETE|"
                        r"CREATE|ALTER|GRANT|KILL)\b", re.I)


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(name, p) for name, doc in BOARDS.items() for p in doc["panels"]]


def test_committed_json_is_what_the_generator_makes() -> None:
    assert set(BOARDS) == {f"{n}.json" for n in DASHBOARDS}
    assert stale() == [], "run: .venv/bin/python -m dashboards.build"


def test_check_mode_names_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "wlan.json").write_text("{}\n")
    (tmp_path / "old.json").write_text("{}\n")
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "wlan.json" in err and "old.json" in err and "noc-overview" not in err


def test_generation_is_deterministic() -> None:
    assert generated() == generated()


def test_dashboards_have_unique_uids_titles_and_panel_ids() -> None:
    uids = [d["uid"] for d in BOARDS.values()]
    titles = [d["title"] for d in BOARDS.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for name, doc in BOARDS.items():
        ids = [p["id"] for p in doc["panels"]]
        assert len(set(ids)) == len(ids), name
        assert all(isinstance(i, int) and i > 0 for i in ids), name
        titles = [p["title"] for p in doc["panels"]]
        assert all(titles) and len(set(titles)) == len(titles), name


def test_panels_fit_the_grid_without_overlapping() -> None:
    for name, doc in BOARDS.items():
        cells: set[tuple[int, int]] = set()
        for p in doc["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, (name, p["title"])
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, (name, p["title"])
            cells |= mine


def test_every_panel_target_annotation_and_variable_uses_the_datasource_variable() -> None:
    for name, p in _panels():
        assert p["datasource"] == DS, (name, p["title"])
        assert p["targets"], (name, p["title"])
        for t in p["targets"]:
            assert t["datasource"] == DS and t["rawQuery"] is True, (name, p["title"])
            assert t["resultFormat"] in ("time_series", "table"), (name, p["title"])
    for name, doc in BOARDS.items():
        variables = doc["templating"]["list"]
        assert variables[0] == {**variables[0], "name": "DS", "type": "datasource",
                                "query": "influxdb"}, name
        for v in variables[1:]:
            assert v["datasource"] == DS, (name, v["name"])
        for a in doc["annotations"]["list"]:
            if not a.get("builtIn"):
                assert a["datasource"] == DS, (name, a["name"])


def test_no_tenant_or_site_is_hard_coded() -> None:
    city = default_city()
    inventory_ids = {city.tenant, *(s.id for s in city.schools)}
    for cfg in (ROOT / "site-configs").rglob("*.yaml"):
        doc = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
        inventory_ids |= {doc[k] for k in ("tenant", "site") if isinstance(doc.get(k), str)}
    for name, doc in BOARDS.items():
        text = str(doc)
        for ident in inventory_ids:
            assert not re.search(rf"\b{re.escape(ident)}\b", text), (name, ident)
    for q in QUERIES:
        if q.influxql.startswith("SHOW"):
            continue
        # Every query of every panel is filtered by the variables, and only by them.
        assert '"tenant" =~ /^$tenant$/' in q.influxql, q.where
        assert '"site" =~ /^$site$/' in q.influxql, q.where
        assert not re.search(r'"(tenant|site)"\s*(=|!=|=~|!~)\s*[\'/](?!\^\$)', q.influxql), q.where


def test_every_panel_states_its_unit() -> None:
    for name, p in _panels():
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert isinstance(unit, str) and unit, (name, p["title"])
        for o in p["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"], (name, p["title"])


def test_queries_name_every_column_and_stay_portable() -> None:
    for q in QUERIES:
        assert not UNPORTABLE.search(q.influxql), q.where
        cols = outer_columns(q.influxql)
        assert cols and all(cols), f"{q.where}: every selected value needs AS \"name\""
        assert "$timeFilter" in q.influxql or "now() -" in q.influxql, q.where
        if "GROUP BY time(" in q.influxql:
            assert "time($__interval)" in q.influxql, q.where


def test_overrides_and_sorting_refer_to_columns_the_queries_return() -> None:
    for name, p in _panels():
        known = {"Time"}
        for t in p["targets"]:
            known |= {*outer_columns(t["query"]), *outer_group_tags(t["query"]),
                      *top_tags(t["query"])}
        for tr in p.get("transformations", []):
            opts = tr["options"]
            known |= set(opts.get("renameByName", {}).values())
            if tr["id"] == "groupBy":
                known |= {f"{f} ({agg})" for f, spec in opts["fields"].items()
                          for agg in spec.get("aggregations", [])}
        for o in p["fieldConfig"]["overrides"]:
            field = o["matcher"]["options"]
            assert field in known, (name, p["title"], field)
        for tr in p.get("transformations", []):
            for s in tr["options"].get("sort", []):
                assert s["field"] in known, (name, p["title"], s["field"])


def test_thresholds_and_mappings_are_well_formed() -> None:
    for name, p in _panels():
        d = p["fieldConfig"]["defaults"]
        steps = d["thresholds"]["steps"]
        assert steps[0]["value"] is None, (name, p["title"])
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values), (name, p["title"])
        for m in d["mappings"]:
            assert m["type"] in ("value", "special"), (name, p["title"])


def test_red_means_act_in_the_site_state_grid() -> None:
    noc = BOARDS["noc-overview.json"]
    grid = next(p for p in noc["panels"] if p["title"] == "Site state")
    states = grid["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {v["text"]: v["color"] for v in states.values()} == {
        "UP": "green", "DEGRADED": "orange", "DOWN": "red", "MAINTENANCE": "blue"}


def test_provisioning_files_point_at_the_dashboards() -> None:
    ds = yaml.safe_load((PROVISIONING_DIR / "datasources" / "schoolnet.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL"
    assert source["url"] == "${SCHOOLNET_INFLUX_URL}"
    dash = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "schoolnet.yaml").read_text())
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_topology_panel_shows_current_links_and_marks_unknown_neighbours() -> None:
    school = BOARDS["school-detail.json"]
    panel = next(p for p in school["panels"] if p["title"] == "Topology (LLDP)")
    (target,) = panel["targets"]
    q = target["query"]
    assert target["resultFormat"] == "table" and 'FROM "topology"' in q
    # Links whose latest point says they disappeared are not shown.
    assert 'last("present")' in q and q.index('"present" = 1') > q.index(")")
    assert outer_group_tags(q) == ["device", "ifname", "neighbour", "neighbour_port"]
    known = next(o for o in panel["fieldConfig"]["overrides"]
                 if o["matcher"]["options"] == "known")
    props = {p["id"]: p["value"] for p in known["properties"]}
    assert props["custom.cellOptions"] == {"type": "color-background"}
    assert props["mappings"][0]["options"]["0"] == {"text": "not in inventory",
                                                   "color": "orange", "index": 1}
