"""Every dashboard query, run against a real InfluxDB loaded with what the pipeline writes.

InfluxDB is Debian's 1.6 (InfluxQL and the v1 ``/write``), started on free loopback
ports. It is loaded with the last hour of a simulated school authority produced by the
real pipeline code (tests/dashboard_city.py: SNMP poller, agent self-health, routing,
wire encoding, the collector's Validator and its outage engine): an open outage of each
kind the story has, a degraded uplink, a silent site, a maintenance window.

Then every panel query and annotation of every dashboard runs as Grafana would send it
(``$timeFilter`` from the dashboard's default time range, ``$__interval``, variables at
"All", the school dashboard once per school) and must return series carrying every
column the panel shows, each with at least one value: a misspelt field or tag in
InfluxQL is not an error, it is an empty result, and that is what this catches.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schoolnet.sim.servers import InfluxDB1
from tests.dashboard_city import GE, GS, GY, CityRun, simulate
from tests.dashboard_support import (
    PanelQuery,
    grafana_interval,
    load_dashboards,
    outer_columns,
    outer_group_tags,
    panel_queries,
    parse_duration,
    regex_value,
    substitute,
    top_tags,
)

pytestmark = pytest.mark.integration

BOARDS = load_dashboards()
TENANT = "herne"
SITES = (GE, GS, GY)


@dataclass
class Loaded:
    """The database with the city in it, and when the query test looks at it."""

    db: InfluxDB1
    run: CityRun
    now_ms: int


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """InfluxDB 1.6 with the simulated city's last hour (and a day of throughput tests)."""
    work = tmp_path_factory.mktemp("dashboards")
    end = time.time() // 60 * 60
    run = simulate(work / "city", end)
    with InfluxDB1(work / "influxdb") as db:
        # /write refuses a batch with a bad line (400) and the launcher raises: a field
        # type conflict in the pipeline's output would stop the test here.
        for i in range(0, len(run.lines), 5000):
            db.write(run.lines[i:i + 5000])
        yield Loaded(db, run, int(time.time() * 1000))


def _time_range(doc: dict[str, Any], now_ms: int) -> tuple[int, int, int]:
    """(from_ms, to_ms, range_s) of a dashboard's default time range (``now-6h``)."""
    range_s = parse_duration(doc["time"]["from"].removeprefix("now-"))
    return now_ms - range_s * 1000, now_ms, range_s


def _run(loaded: Loaded, name: str, q: PanelQuery,
         variables: dict[str, str]) -> list[dict[str, Any]]:
    from_ms, to_ms, range_s = _time_range(BOARDS[name], loaded.now_ms)
    text = substitute(q.influxql, from_ms=from_ms, to_ms=to_ms,
                      interval=grafana_interval(range_s, q.interval), variables=variables)
    (result,) = loaded.db.query(text)
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def _problems(q: PanelQuery, series: list[dict[str, Any]]) -> list[str]:
    """What is missing from a query's answer: series, columns, values, group tags."""
    if not series:
        return [f"{q.where}: no series"]
    out = []
    want = outer_columns(q.influxql) + top_tags(q.influxql)
    for col in want:
        present = [s for s in series if col in s["columns"]]
        if not present:
            out.append(f"{q.where}: no column {col!r}")
            continue
        if (q.required is None or col in q.required) and not any(
                row[s["columns"].index(col)] is not None
                for s in present for row in s["values"]):
            out.append(f"{q.where}: column {col!r} has no value")
    for tag in outer_group_tags(q.influxql):
        if not all(tag in s.get("tags", {}) for s in series):
            out.append(f"{q.where}: series without the group tag {tag!r}")
    return out


def _all_sites() -> dict[str, str]:
    return {"tenant": regex_value(None), "site": regex_value(None)}


def _one_site(site: str) -> dict[str, str]:
    return {"tenant": regex_value([TENANT]), "site": regex_value([site])}


def _selections(name: str) -> list[dict[str, str]]:
    """How the query test sets a dashboard's variables."""
    site_var = next(v for v in BOARDS[name]["templating"]["list"] if v["name"] == "site")
    if site_var["multi"]:
        return [_all_sites()]
    return [_one_site(s) for s in SITES]  # the school dashboard: every school


def test_every_panel_query_returns_the_columns_its_panel_shows(loaded: Loaded) -> None:
    problems: list[str] = []
    runs = 0
    for name, doc in BOARDS.items():
        for variables in _selections(name):
            for q in panel_queries(name, doc):
                problems += _problems(q, _run(loaded, name, q, variables))
                runs += 1
    queries = sum(1 for name, doc in BOARDS.items() for _ in panel_queries(name, doc))
    print(f"{queries} queries of {len(BOARDS)} dashboards, {runs} runs")
    assert queries >= 40
    assert not problems, "\n".join(problems)


def test_a_narrower_selection_is_valid_influxql_too(loaded: Loaded) -> None:
    """Two schools picked in the multi-select: Grafana's ``(a|b)`` regex form."""
    variables = {"tenant": regex_value([TENANT]), "site": regex_value([GS, GE])}
    for name, doc in BOARDS.items():
        for q in panel_queries(name, doc):
            for s in _run(loaded, name, q, variables):
                assert s.get("tags", {}).get("site", GS) in (GS, GE), q.where


def test_variables_offer_every_tenant_and_school(loaded: Loaded) -> None:
    for name, doc in BOARDS.items():
        found: dict[str, set[str]] = {}
        for v in doc["templating"]["list"][1:]:
            q = substitute(v["query"], from_ms=0, to_ms=0, interval="1m",
                           variables={"tenant": regex_value(None)})
            (result,) = loaded.db.query(q)
            found[v["name"]] = {row[1] for s in result["series"] for row in s["values"]}
        assert found == {"tenant": {TENANT}, "site": set(SITES)}, name


def _panel(name: str, title: str) -> dict[str, Any]:
    return next(p for p in BOARDS[name]["panels"] if p["title"] == title)


def _target_runs(loaded: Loaded, name: str, title: str,
                 variables: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    p = _panel(name, title)
    return [_run(loaded, name, PanelQuery(name, p["id"], title, t["refId"], t["query"],
                                          p.get("interval")), variables or _all_sites())
            for t in p["targets"]]


def _rows(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows: tags and columns of every series."""
    return [{**s.get("tags", {}), **dict(zip(s["columns"], row, strict=True))}
            for s in series for row in s["values"]]


def test_site_state_grid_shows_each_school_as_the_story_left_it(loaded: Loaded) -> None:
    """The grid's Grafana transformations, done by hand on the real query results:
    last value per series, then the maximum per site (see boards.noc_overview)."""
    worst: dict[str, int] = {}
    for series in _target_runs(loaded, "noc-overview.json", "Site state"):
        for s in series:
            values = [row[1] for row in s["values"] if row[1] is not None]
            site = s["tags"]["site"]
            worst[site] = max(worst.get(site, 0), int(values[-1]))
    # Maintenance (someone is on it) wins over the device outage behind it.
    assert worst == {GY: 3, GE: 2, GS: 1}


def test_open_outages_are_the_open_roots_with_their_affected_counts(loaded: Loaded) -> None:
    (series,) = _target_runs(loaded, "noc-overview.json", "Open outages")
    rows = {(r["site"], r["kind"], r["entity"]): r for r in _rows(series)}
    # The APs that leave their controllers (GY: drops out of the Cisco controller's
    # table at T-30; GE: the Aruba controller reports it down from T-40) are outage
    # entities of their own, learned from the controllers' tables.
    assert set(rows) == {(GY, "device", "sw-building-b"), (GE, "agent", ""),
                         (GS, "uplink_quality", ""), (GS, "uplink_throughput", ""),
                         (GS, "device", "ap-flur"), (GY, "ap", "erjiao_sw"),
                         (GE, "ap", "Test-H")}
    # The silent site's devices behind the lost connection have no data: affected, and
    # so are the four APs learned from its controller (Test-H, down on its own since T-40,
    # included: the site outage covers it too).
    learned = {re.search(r",ap=([^, ]+)", line).group(1)  # type: ignore[union-attr]
               for line in loaded.run.lines
               if line.startswith("ap,") and f"site={GE}" in line and " up=1i" in line}
    assert "Test-H" in learned and len(learned) > 1
    assert rows[(GE, "agent", "")]["affected"] == len(
        [d for d in loaded.run.written.city.school(GE).devices]) + len(learned)
    assert all(r["mailed"] == 1 for r in rows.values())
    # The uplink outage of T-45..T-40 (and the port it took down) resolved: history only.
    history = _rows(_target_runs(loaded, "outages.json", "Outage history")[0])
    assert {(r["site"], r["kind"], r["event"]) for r in history} >= {
        (GY, "uplink", "open"), (GY, "uplink", "resolve"), (GY, "interface", "affected")}


def test_the_degraded_uplink_tops_the_worst_uplinks(loaded: Loaded) -> None:
    icmp, _utilization = _target_runs(loaded, "noc-overview.json", "Worst uplinks now (15 min)")
    rows = sorted(_rows(icmp), key=lambda r: r["loss"], reverse=True)
    assert rows[0]["site"] == GS and rows[0]["loss"] == pytest.approx(8.0)
    assert rows[0]["latency"] > 150 > rows[1]["latency"]


def test_a_silent_site_shows_red_in_data_arriving(loaded: Loaded) -> None:
    (series,) = _target_runs(loaded, "noc-overview.json", "Data arriving per site")
    buckets = {s["tags"]["site"]: s["values"] for s in series}
    end_ms, bucket_ms = loaded.run.end * 1000, 5 * 60_000
    # Buckets that start after the silent site's last report (T-12) hold nothing...
    after = [n for t, n in buckets[GE] if t > end_ms - 12 * 60_000]
    assert len(after) >= 2 and set(after) == {0}
    # ... while every complete bucket of the others' hour of data holds points.
    for site in (GS, GY):
        full = [n for t, n in buckets[site]
                if end_ms - 55 * 60_000 <= t and t + bucket_ms <= end_ms]
        assert len(full) >= 10 and all(n > 0 for n in full), site


def test_uplink_traffic_is_drawn_against_the_contract(loaded: Loaded) -> None:
    (series,) = _target_runs(loaded, "school-detail.json", "Uplink traffic against the contract",
                             _one_site(GY))
    rows = [r for r in _rows(series) if r["download"] is not None]
    assert rows and all(r["contract_down"] == 400.0 for r in rows)
    # The demo router's WAN port moves at 240 Mbit/s down (schoolnet/demo/city.py).
    assert sum(r["download"] for r in rows) / len(rows) == pytest.approx(240.0, rel=0.02)


def test_the_datasource_header_of_the_provisioning_file_works_on_influxdb_1(
        loaded: Loaded) -> None:
    """``Authorization: Token <empty>`` (1.x without auth) must not be refused."""
    url = f"{loaded.db.url}/query?db={loaded.db.database}&q=SHOW+MEASUREMENTS"
    req = urllib.request.Request(url, headers={"Authorization": "Token "})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def test_influxdb_launcher_refuses_bad_lines_loudly(tmp_path: Path) -> None:
    with InfluxDB1(tmp_path) as db:
        assert db.pid is not None
        db.write(['m,site=a v=1i 1700000000000000000'])
        with pytest.raises(urllib.error.HTTPError):
            db.write(['m,site=a v="text" 1700000000000000001'])  # int field, now a string
        with pytest.raises(RuntimeError, match="error parsing query"):
            db.query("SELEC 1")
    assert not db.running


def test_access_points_up_against_those_known(loaded: Loaded) -> None:
    controller, polled = _target_runs(loaded, "noc-overview.json", "Access points up")
    ctl = {r["site"]: (r["aps_up"], r["aps_known"]) for r in _rows(controller)}
    # The Cisco controller's recording lists 226 joined APs; one drops off (T-30). The
    # Aruba controller's 4 APs: one goes down (T-40).
    assert ctl == {GY: (225, 226), GE: (3, 4)}
    assert {r["site"]: (r["aps_up"], r["aps_known"]) for r in _rows(polled)} == {GS: (1, 2)}
    (down,) = _target_runs(loaded, "wlan.json", "Access points not joined")
    assert [row[1] for s in down for row in s["values"]] == [2]
    down_state, unreachable = _target_runs(loaded, "wlan.json", "Access points down")
    assert [(r["site"], r["status"]) for r in _rows(down_state)] == [(GE, "down")]
    assert [(r["site"], r["device"]) for r in _rows(unreachable)] == [(GS, "ap-flur")]
    # Oldest first (the panel's sort): the AP that dropped off at T-30, then the silent
    # site's APs (T-12), then the rest (now).
    (seen,) = _target_runs(loaded, "wlan.json", "Access points, least recently seen")
    rows = sorted(_rows(seen), key=lambda r: r["time"])
    assert [r["site"] for r in rows[:5]] == [GY, GE, GE, GE, GE]
    minutes_ago = [round((loaded.run.end * 1000 - r["time"]) / 60_000) for r in rows]
    assert minutes_ago[:2] == [31, 12] and max(minutes_ago[5:]) == 0


def test_school_health_panels_show_the_hot_closet_and_the_bad_port(loaded: Loaded) -> None:
    (temps,) = _target_runs(loaded, "school-detail.json", "Temperatures", _one_site(GS))
    assert max(v for s in temps for _, v in s["values"] if v is not None) >= 66
    (errors,) = _target_runs(loaded, "school-detail.json", "Ports with errors", _one_site(GS))
    worst = max(_rows(errors), key=lambda r: r["errors"])
    assert worst["device"] == "sw" and worst["errors"] == pytest.approx(0.4, rel=0.05)
    (poe,) = _target_runs(loaded, "school-detail.json", "PoE budget used", _one_site(GS))
    used = [v for s in poe for _, v in s["values"] if v is not None]
    assert used and all(45 < v < 55 for v in used)  # 180-198 W of 370 W


def test_topology_panel_lists_each_schools_links(loaded: Loaded) -> None:
    """The agent's ``topology`` points (derived from the LLDP polls, tests/dashboard_city.py
    LLDP) as the school dashboard shows them: each link once, from the uplink side."""
    def links(site: str) -> dict[tuple[str, str, str, str], tuple[int, int, int]]:
        (series,) = _target_runs(loaded, "school-detail.json", "Topology (LLDP)",
                                 _one_site(site))
        return {(r["device"], r["ifname"], r["neighbour"], r["neighbour_port"]):
                (r["known"], r["depth"], r["parent_link"]) for r in _rows(series)}

    assert links(GY) == {
        # Only the core switch reports the router: the router's port is what it saw.
        ("router", "LAN", "core-sw", "Gi0/1"): (1, 1, 1),
        ("core-sw", "Gi0/2", "sw-building-b", "Gi1/0/1"): (1, 2, 1),
        ("core-sw", "Gi0/3", "wlc", "port 1"): (1, 2, 1),
        ("core-sw", "Gi0/10", "SEP00A0B1C2D3E4", "Port 1"): (0, 2, 0),
    }
    # The phone unplugged at T-20 is in the database, its last point saying it is gone.
    (gone,) = loaded.db.query(
        'SELECT "present" FROM "topology" WHERE "neighbour" = \'SEP00A0B1C2D3E5\'')
    present = [row[1] for row in gone["series"][0]["values"]]
    assert present[0] == 1 and present[-1] == 0
    assert links(GS) == {
        ("router", "LAN", "sw", "Gi1/0/1"): (1, 1, 1),
        ("sw", "Gi1/0/5", "ap-aula", "eth0"): (1, 2, 1),
        ("sw", "Gi1/0/6", "ap-flur", "eth0"): (1, 2, 1),
    }
    # The silent site's links were written before it went silent (T-12): still shown.
    ge = links(GE)
    assert {k: v for k, v in ge.items() if v[0] == 1} == {
        ("router", "LAN", "fw", "eth0"): (1, 1, 1),
        ("fw", "eth1", "core-sw", "A1"): (1, 2, 1),
        ("core-sw", "24", "sw-annex", "Gi1/0/1"): (1, 3, 1),
    }
    # The HPE recording's own neighbours (servers, a Nexus): not in the inventory.
    unknown = {(k[0], k[1], k[2]): v for k, v in ge.items() if v[0] == 0}
    assert ("core-sw", "17", "NWPU-CA-5548-01") in unknown and len(unknown) == 5
    assert set(unknown.values()) == {(0, 3, 0)}
