"""Builders for the parts of Grafana's dashboard JSON model the schoolnet dashboards use.

Small on purpose: a panel is a plain dict made by :func:`panel` (or one of the kind
helpers), :func:`dashboard` lays panels out on Grafana's 24-column grid and adds the
variables, annotations and links. Every query is raw InfluxQL (``rawQuery``), bound to
the ``$DS`` datasource variable, so one file works against InfluxDB 1.8+, 2.x (DBRP
mapping) and 3.x, whichever datasource the installation provisions.

Colours follow one rule: **red means act**. Green is fine, orange is worth a look,
blue is maintenance (someone is already on it), grey is "no data yet".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Json = dict[str, Any]

#: Every panel, target, variable and annotation uses this datasource reference.
DATASOURCE: Final[Mapping[str, str]] = {"type": "influxdb", "uid": "${DS}"}
#: Grafana 10.4 / 11 dashboard schema (older Grafana migrates newer files poorly).
SCHEMA_VERSION: Final = 39
#: All schoolnet dashboards carry this tag; the dashboard links list them by it.
TAG: Final = "schoolnet"

GREEN: Final = "green"
ORANGE: Final = "orange"
RED: Final = "red"
BLUE: Final = "blue"
GREY: Final = "#8e8e8e"


@dataclass(frozen=True, kw_only=True)
class Query:
    """One InfluxQL query of a panel.

    ``influxql`` may use Grafana's ``$timeFilter`` and ``$__interval`` and the
    dashboard's variables. Every column the panel shows is named with ``AS "name"``:
    the query test reads the expected columns from those aliases. ``table`` asks for
    Grafana's table format (tags become columns); ``alias`` names time series
    (``$tag_site``, ``$col``).
    """

    influxql: str
    alias: str = ""
    table: bool = False

    def target(self, ref_id: str) -> Json:
        """The Grafana target (query) object."""
        t: Json = {
            "refId": ref_id,
            "datasource": dict(DATASOURCE),
            "query": self.influxql,
            "rawQuery": True,
            "resultFormat": "table" if self.table else "time_series",
        }
        if self.alias:
            t["alias"] = self.alias
        return t


def thresholds(*steps: tuple[str, float | None]) -> Json:
    """Absolute threshold steps; the first step's value is None (the base colour)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def higher_is_worse(warn: float, act: float) -> Json:
    """Green below ``warn``, orange from ``warn``, red (act) from ``act``."""
    return thresholds((GREEN, None), (ORANGE, warn), (RED, act))


def lower_is_worse(act: float, warn: float) -> Json:
    """Red (act) below ``act``, orange below ``warn``, green from ``warn``."""
    return thresholds((RED, None), (ORANGE, act), (GREEN, warn))


#: For values that are neither good nor bad (traffic, counts of events).
NEUTRAL: Final = thresholds((GREEN, None))


def value_mappings(states: Mapping[int | str, tuple[str, str]], *,
                   null: tuple[str, str] | None = None) -> list[Json]:
    """Grafana value mappings: raw value -> (text, colour); ``null`` for missing values."""
    options = {str(k): {"text": text, "color": color, "index": i}
               for i, (k, (text, color)) in enumerate(states.items())}
    out: list[Json] = [{"type": "value", "options": options}]
    if null is not None:
        out.append({"type": "special", "options": {
            "match": "null", "result": {"text": null[0], "color": null[1],
                                        "index": len(options)}}})
    return out


def override(field: str, **props: Any) -> Json:
    """Field overrides for the column or series named ``field``.

    ``props`` are Grafana property ids with ``_`` for ``.``: ``unit``, ``displayName``,
    ``thresholds``, ``mappings``, ``custom_cellOptions``, ``custom_width``, ...
    """
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": k.replace("_", "."), "value": v} for k, v in props.items()],
    }


def colored_cell(mode: str = "color-background") -> Json:
    """Table cell options that colour the cell by thresholds or value mappings."""
    return {"type": mode}


def gauge_cell() -> Json:
    """Table cell options that draw the value as a bar."""
    return {"type": "gauge", "mode": "basic"}


# -- transformations --------------------------------------------------------------------

def merge() -> Json:
    """Merge the frames of all queries (and all series) into one table."""
    return {"id": "merge", "options": {}}


def exclude(*fields: str) -> Json:
    """Hide columns (each frame), e.g. ``Time`` before merging rows of several queries."""
    return {"id": "organize", "options": {"excludeByName": {f: True for f in fields},
                                          "indexByName": {}, "renameByName": {}}}


def rename(names: Mapping[str, str]) -> Json:
    """Rename columns."""
    return {"id": "organize", "options": {"excludeByName": {}, "indexByName": {},
                                          "renameByName": dict(names)}}


def sort_by(field: str, *, desc: bool) -> Json:
    """Sort the rows of a table by one column."""
    return {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": field, "desc": desc}]}}


def limit(rows: int) -> Json:
    """Keep the first ``rows`` rows (after sorting)."""
    return {"id": "limit", "options": {"limitField": rows}}


def series_to_rows(reducer: str = "lastNotNull") -> Json:
    """One row per series: its labels as columns and one reduced value (``Last *``)."""
    return {"id": "reduce", "options": {"reducers": [reducer], "mode": "seriesToRows",
                                        "labelsToFields": True, "includeTimeField": False}}


def group_max(by: Sequence[str], value: str) -> Json:
    """Group rows by ``by`` columns and keep the maximum of ``value`` (``<value> (max)``)."""
    fields: Json = {f: {"aggregations": [], "operation": "groupby"} for f in by}
    fields[value] = {"aggregations": ["max"], "operation": "aggregate"}
    return {"id": "groupBy", "options": {"fields": fields}}


# -- panels -----------------------------------------------------------------------------

def panel(kind: str, title: str, description: str, queries: Sequence[Query], *,
          unit: str, w: int, h: int, thresholds_: Json = NEUTRAL,
          mappings: Sequence[Json] = (), overrides: Sequence[Json] = (),
          options: Json | None = None, custom: Json | None = None,
          transformations: Sequence[Json] = (), interval: str | None = None,
          min_: float | None = None, max_: float | None = None,
          decimals: int | None = None, color_mode: str = "thresholds",
          links: Sequence[Json] = (), display_name: str | None = None) -> Json:
    """A panel without ``id`` and ``gridPos`` (:func:`dashboard` assigns them).

    ``w``/``h`` are grid units (24 columns wide). ``unit`` is required: every panel
    says what its numbers are.
    """
    defaults: Json = {"unit": unit, "thresholds": thresholds_, "mappings": list(mappings),
                      "color": {"mode": color_mode}}
    if custom:
        defaults["custom"] = custom
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if decimals is not None:
        defaults["decimals"] = decimals
    if links:
        defaults["links"] = list(links)
    if display_name is not None:
        defaults["displayName"] = display_name
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [q.target(chr(ord("A") + i)) for i, q in enumerate(queries)],
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": options or {},
        "_w": w,
        "_h": h,
    }
    if transformations:
        p["transformations"] = list(transformations)
    if interval:
        p["interval"] = interval
    return p


def stat(title: str, description: str, queries: Sequence[Query], *, unit: str,
         w: int = 6, h: int = 4, per_row: bool = False, text_mode: str = "value",
         **kw: Any) -> Json:
    """Big numbers, the background coloured by thresholds or mappings.

    ``per_row``: one tile per table row (after transformations), e.g. one per site.
    """
    options = {
        "reduceOptions": {"values": per_row, "calcs": ["lastNotNull"], "fields": ""},
        "colorMode": "background", "graphMode": "none", "textMode": text_mode,
        "orientation": "auto", "justifyMode": "center", "wideLayout": True,
        "showPercentChange": False,
    }
    return panel("stat", title, description, queries, unit=unit, w=w, h=h,
                 options=options, **kw)


def table(title: str, description: str, queries: Sequence[Query], *, unit: str,
          w: int = 12, h: int = 8, sort: tuple[str, bool] | None = None,
          transformations: Sequence[Json] = (), **kw: Any) -> Json:
    """A table; rows of every query and series are merged into one.

    ``sort`` is (column, descending).
    """
    trans = [*transformations]
    if not any(t["id"] == "merge" for t in trans):
        trans.insert(0, merge())
    if sort is not None:
        # Before a limit: the limit keeps the first rows of the sorted table.
        at = next((i for i, t in enumerate(trans) if t["id"] == "limit"), len(trans))
        trans.insert(at, sort_by(sort[0], desc=sort[1]))
    options = {"showHeader": True, "cellHeight": "sm",
               "footer": {"show": False, "reducer": ["sum"], "countRows": False}}
    return panel("table", title, description, queries, unit=unit, w=w, h=h,
                 options=options, transformations=trans, **kw)


def timeseries(title: str, description: str, queries: Sequence[Query], *, unit: str,
               w: int = 12, h: int = 8, bars: bool = False, points: bool = False,
               threshold_lines: bool = False, stack: bool = False, legend: bool = True,
               **kw: Any) -> Json:
    """Lines over time (``bars``: bars; ``points``: single measurements as dots).

    ``legend=False`` for panels with hundreds of series (one per AP): the tooltip,
    sorted by value, names the busiest ones instead.
    """
    custom: Json = {
        "drawStyle": "bars" if bars else "points" if points else "line",
        "lineWidth": 1, "fillOpacity": 60 if bars else 8, "pointSize": 6,
        "showPoints": "always" if points else "never", "spanNulls": False,
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if threshold_lines else "off"},
    }
    options = {"legend": {"displayMode": "table" if legend else "hidden",
                          "placement": "right", "calcs": ["mean", "max", "lastNotNull"],
                          "showLegend": legend},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    kw.setdefault("color_mode", "palette-classic")
    return panel("timeseries", title, description, queries, unit=unit, w=w, h=h,
                 custom=custom, options=options, **kw)


def state_timeline(title: str, description: str, queries: Sequence[Query], *, unit: str,
                   w: int = 12, h: int = 8, **kw: Any) -> Json:
    """One band per series, coloured by mappings or thresholds over time."""
    options = {"mergeValues": True, "showValue": "never", "alignValue": "left",
               "rowHeight": 0.85, "legend": {"showLegend": False, "displayMode": "list",
                                             "placement": "bottom"},
               "tooltip": {"mode": "single", "sort": "none"}}
    custom = {"fillOpacity": 80, "lineWidth": 0}
    return panel("state-timeline", title, description, queries, unit=unit, w=w, h=h,
                 options=options, custom=custom, **kw)


def bargauge(title: str, description: str, queries: Sequence[Query], *, unit: str,
             w: int = 8, h: int = 8, **kw: Any) -> Json:
    """Horizontal bars, one per series, coloured by thresholds."""
    options = {"displayMode": "basic", "orientation": "horizontal", "showUnfilled": True,
               "valueMode": "color", "namePlacement": "auto", "sizing": "auto",
               "reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": ""}}
    return panel("bargauge", title, description, queries, unit=unit, w=w, h=h,
                 options=options, **kw)


# -- dashboard --------------------------------------------------------------------------

def datasource_variable() -> Json:
    """``$DS``: any InfluxDB datasource (InfluxQL); the provisioned one by default."""
    return {"type": "datasource", "name": "DS", "label": "Data source", "query": "influxdb",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
            "skipUrlSync": False}


def tag_variable(name: str, label: str, influxql: str, *, multi: bool) -> Json:
    """A variable from ``SHOW TAG VALUES``; ``multi`` also offers All (regex ``.*``)."""
    return {
        "type": "query", "name": name, "label": label,
        "datasource": dict(DATASOURCE), "query": influxql, "definition": influxql,
        "refresh": 2,  # on time range change: sites that appear are offered at once
        "multi": multi, "includeAll": multi, "allValue": ".*" if multi else None,
        "current": {}, "options": [], "sort": 1, "regex": "", "hide": 0,
        "skipUrlSync": False,
    }


def annotation(name: str, influxql: str, *, text: str, tags: str, color: str) -> Json:
    """Events from InfluxQL as annotations on every time-based panel of the dashboard.

    Written in both forms Grafana reads: ``target`` (Grafana 10+) and the older
    top-level ``query``/``textColumn``/``tagsColumn``.
    """
    return {
        "name": name, "enable": True, "hide": False, "iconColor": color,
        "datasource": dict(DATASOURCE),
        "target": {"refId": "Anno", "query": influxql, "rawQuery": True,
                   "fromAnnotations": True, "textEditor": True,
                   "textColumn": text, "tagsColumn": tags},
        "query": influxql, "textColumn": text, "tagsColumn": tags,
    }


def layout(panels: Iterable[Json]) -> list[Json]:
    """Give panels ids (1, 2, ...) and grid positions, left to right, row by row."""
    out: list[Json] = []
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p = dict(p)
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append({"id": i, **p, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x += w
        row_h = max(row_h, h)
    return out


def dashboard(*, uid: str, title: str, description: str, panels: Iterable[Json],
              variables: Sequence[Json], annotations: Sequence[Json] = (),
              time_from: str = "now-6h", refresh: str = "1m") -> Json:
    """A whole dashboard: variables (``$DS`` first), annotations, links, panels."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "timezone": "browser",
        "time": {"from": time_from, "to": "now"},
        "refresh": refresh,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "monday",
        "links": [{"title": "schoolnet", "type": "dashboards", "tags": [TAG],
                   "asDropdown": False, "includeVars": True, "keepTime": True,
                   "targetBlank": False, "icon": "external link", "tooltip": "",
                   "url": ""}],
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": [
            {"builtIn": 1, "name": "Annotations & Alerts", "type": "dashboard",
             "datasource": {"type": "grafana", "uid": "-- Grafana --"},
             "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)"},
            *annotations,
        ]},
        "panels": layout(panels),
    }
