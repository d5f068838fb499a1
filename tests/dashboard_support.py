"""Reading the committed dashboards as Grafana would: files, queries, substitutions.

Shared by the lint test (tests/unit/test_dashboards.py) and the query test against a
real InfluxDB (tests/integration/test_dashboards_influxdb.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "dashboards"
PROVISIONING_DIR = ROOT / "dashboards" / "provisioning"


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard, for every committed dashboard."""
    return {p.name: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(DASHBOARD_DIR.glob("*.json"))}


@dataclass(frozen=True)
class PanelQuery:
    """One query Grafana runs for a dashboard: a panel target or an annotation."""

    dashboard: str
    panel_id: int  # 0 for annotations
    title: str
    ref_id: str
    influxql: str
    interval: str | None  # the panel's minimum interval
    #: Columns that must have values; None: every column the query names. An
    #: annotation needs its text; its tags may be empty (``entity`` of a site outage).
    required: tuple[str, ...] | None = None

    @property
    def where(self) -> str:
        """For failure messages."""
        return f"{self.dashboard} panel {self.panel_id} {self.title!r} query {self.ref_id}"


def panel_queries(name: str, doc: Mapping[str, Any]) -> Iterator[PanelQuery]:
    """Every panel target and annotation query of one dashboard."""
    for p in doc["panels"]:
        for t in p.get("targets", []):
            yield PanelQuery(name, p["id"], p["title"], t["refId"], t["query"],
                             p.get("interval"))
    for a in doc["annotations"]["list"]:
        if not a.get("builtIn"):
            yield PanelQuery(name, 0, f"annotation {a['name']}", "Anno", a["target"]["query"],
                             None, (a["target"]["textColumn"],))


# -- a small reader of the InfluxQL the dashboards use ----------------------------------

#: String literals, and regex literals (only after =~ / !~: elsewhere / divides).
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|(?<=~)\s*/(?:[^/\\]|\\.)+/")


def _mask_strings(q: str) -> str:
    """The query with string and regex literals blanked (same length), for scanning."""
    return _STRINGS.sub(lambda m: "_" * len(m.group()), q)


def _top_level(q: str) -> str:
    """The query with every parenthesised part blanked: only the outermost statement."""
    masked = _mask_strings(q)
    out, depth = [], 0
    for ch in masked:
        if ch == "(":
            depth += 1
        out.append(ch if depth == 0 else "_")
        if ch == ")":
            depth -= 1
    return "".join(out)


def outer_columns(q: str) -> list[str]:
    """The ``AS "name"`` aliases of the outermost SELECT: the columns a panel shows."""
    top = _top_level(q)
    m = re.match(r"\s*SELECT\s(.*?)\sFROM\s", top, re.S | re.I)
    if not m:
        return []
    select = q[m.start(1):m.end(1)]
    items = _split_commas(select, _top_level(q)[m.start(1):m.end(1)])
    out = []
    for item in items:
        a = re.search(r'\sAS\s+"([^"]+)"\s*$', item, re.I)
        out.append(a.group(1) if a else "")
    return out


def _split_commas(text: str, masked: str) -> list[str]:
    parts, start = [], 0
    for i, ch in enumerate(masked):
        if ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def outer_group_tags(q: str) -> list[str]:
    """Tag keys of the outermost GROUP BY (``time(...)`` left out)."""
    top = _top_level(q)
    m = re.search(r"\sGROUP BY\s(.*?)(?:\sfill\(|\sORDER BY\s|\sLIMIT\s|$)", top, re.S | re.I)
    if not m:
        return []
    return re.findall(r'"([^"]+)"', q[m.start(1):m.end(1)])


def top_tags(q: str) -> list[str]:
    """Tag keys named in an outer ``top(field, tag, ..., N)``: columns of the result."""
    m = re.match(r'\s*SELECT\s+top\(("[^"]+"(?:\s*,\s*"[^"]+")*)\s*,\s*\d+\)', q, re.I)
    return re.findall(r'"([^"]+)"', m.group(1))[1:] if m else []


# -- what Grafana does to a query before sending it -------------------------------------

_NICE_S = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds of a Grafana/InfluxQL duration such as ``5m``."""
    m = re.fullmatch(r"(\d+)([smhd])", text)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: int) -> str:
    """The shortest InfluxQL duration literal for ``seconds``."""
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def grafana_interval(range_s: int, min_interval: str | None, max_points: int = 1000) -> str:
    """``$__interval``: range / data points, rounded up to a round value, at least the
    panel's (or the datasource's 1m) minimum interval."""
    want = max(range_s / max_points, parse_duration(min_interval or "1m"))
    return format_duration(next((n for n in _NICE_S if n >= want), _NICE_S[-1]))


def regex_escape(value: str) -> str:
    """How Grafana escapes a variable value for a regex (``/^$site$/``)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(), value)


def regex_value(values: list[str] | None) -> str:
    """A variable's regex form: one value, several ``(a|b)``, or All (``None``): ``.*``."""
    if values is None:
        return ".*"
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(q: str, *, from_ms: int, to_ms: int, interval: str,
               variables: Mapping[str, str]) -> str:
    """The query text Grafana sends: ``$timeFilter``, ``$__interval``, variables."""
    out = q.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    out = out.replace("$__interval", interval)
    for name in sorted(variables, key=len, reverse=True):
        out = out.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    return out
