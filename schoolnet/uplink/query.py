"""The uplink report's query layer: a few aggregate questions, one class per query API.

Every backend answers :meth:`UplinkStatsBackend.fetch` with per-site :class:`SiteStats`
for one tenant over the last ``days``. The questions (field names as in
docs/data-model.md):

| statistic | from |
| --- | --- |
| median and 10th percentile of throughput, per direction | ``probe_throughput`` ``rate_mbps`` |
| number of tests with a result, per direction | ``probe_throughput`` ``rate_mbps`` (count) |
| mean ICMP loss | ``probe_icmp`` ``loss_pct``, external targets (``target_kind`` not gateway/lan) |
| median RTT | ``probe_icmp`` ``rtt_avg_ms``, external targets |
| 95th percentile of utilization, in and out | ``uplink`` ``util_in_pct``, ``util_out_pct`` |

- :class:`PromQueryBackend`: Prometheus-style instant queries (``GET /api/v1/query``,
  MetricsQL/PromQL), as VictoriaMetrics serves them for the line protocol the collector
  writes (field ``f`` of measurement ``m`` is the series ``m_f``). Quantiles are
  ``quantile_over_time`` (linear interpolation between samples).
- :class:`InfluxQLBackend`: InfluxQL over ``GET /query`` (InfluxDB 1.x, or 2.x/3.x with
  their v1 compatibility API). ``PERCENTILE`` is InfluxDB's nearest rank.

Stdlib HTTP only; a database that does not answer raises :class:`QueryError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from schoolnet.wire import ID_RE

#: Probe targets inside the site (they say nothing about the uplink).
LOCAL_KINDS = ("gateway", "lan")


class QueryError(Exception):
    """The database could not be asked, or answered with an error."""


@dataclass
class SiteStats:
    """What the database knows about one site's uplink over the report window."""

    down_p50: float | None = None
    down_p10: float | None = None
    down_tests: int = 0
    up_p50: float | None = None
    up_p10: float | None = None
    up_tests: int = 0
    loss_pct: float | None = None
    rtt_ms: float | None = None
    util_in_p95: float | None = None
    util_out_p95: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


class UplinkStatsBackend(Protocol):
    """A database that can answer the report's questions."""

    def fetch(self, tenant: str, days: float) -> dict[str, SiteStats]:
        """Per-site statistics of ``tenant`` over the last ``days``."""
        ...


Fetcher = Callable[[str], Any]


def http_get_json(url: str, *, timeout_s: float = 30.0, token: str | None = None) -> Any:
    """GET ``url`` and parse JSON; raises :class:`QueryError`."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode("utf-8", "replace")
        raise QueryError(f"{url.split('?')[0]}: HTTP {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise QueryError(f"{url.split('?')[0]}: {exc}") from None


def _check_tenant(tenant: str) -> None:
    # Tenant ids are restricted to [a-z0-9_-], so they never need quoting in a query;
    # checked here anyway because the value is pasted into one.
    if not ID_RE.match(tenant):
        raise QueryError(f"{tenant!r} is not a tenant id")


def _apply(stats: dict[str, SiteStats], site: str | None, attr: str, value: Any) -> None:
    if not site or value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        return
    if number != number:  # NaN: no samples
        return
    s = stats.setdefault(site, SiteStats())
    setattr(s, attr, int(number) if attr.endswith("_tests") else number)


class PromQueryBackend:
    """Instant queries against ``<url>/api/v1/query`` (VictoriaMetrics, Prometheus)."""

    def __init__(self, url: str, *, timeout_s: float = 30.0, token: str | None = None,
                 fetch: Fetcher | None = None) -> None:
        self.url = url.rstrip("/")
        self._get = fetch or (lambda u: http_get_json(u, timeout_s=timeout_s, token=token))

    def vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """The instant vector of ``expr`` now: (labels, value) per series."""
        doc = self._get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        if not isinstance(doc, dict) or doc.get("status") != "success":
            raise QueryError(f"query failed: {str(doc)[:300]}")
        out = []
        for item in doc.get("data", {}).get("result", []):
            try:
                out.append((dict(item["metric"]), float(item["value"][1])))
            except (KeyError, IndexError, TypeError, ValueError):
                continue
        return out

    def fetch(self, tenant: str, days: float) -> dict[str, SiteStats]:
        """Per-site statistics (see the module doc)."""
        _check_tenant(tenant)
        w = f"{max(1, round(days * 24))}h"
        tp = f'probe_throughput_rate_mbps{{tenant="{tenant}"}}[{w}]'
        ext = f'tenant="{tenant}",target_kind!~"{"|".join(LOCAL_KINDS)}"'
        stats: dict[str, SiteStats] = {}
        per_direction = (
            (f"max by (site, direction) (quantile_over_time(0.5, {tp}))", "p50"),
            (f"max by (site, direction) (quantile_over_time(0.1, {tp}))", "p10"),
            (f"sum by (site, direction) (count_over_time({tp}))", "tests"),
        )
        for expr, suffix in per_direction:
            for labels, value in self.vector(expr):
                direction = labels.get("direction")
                if direction in ("down", "up"):
                    _apply(stats, labels.get("site"), f"{direction}_{suffix}", value)
        per_site = (
            (f"avg by (site) (avg_over_time(probe_icmp_loss_pct{{{ext}}}[{w}]))", "loss_pct"),
            (f"avg by (site) (quantile_over_time(0.5, probe_icmp_rtt_avg_ms{{{ext}}}[{w}]))",
             "rtt_ms"),
            (f'max by (site) (quantile_over_time(0.95, uplink_util_in_pct{{tenant="{tenant}"}}'
             f"[{w}]))", "util_in_p95"),
            (f'max by (site) (quantile_over_time(0.95, uplink_util_out_pct{{tenant="{tenant}"}}'
             f"[{w}]))", "util_out_p95"),
        )
        for expr, attr in per_site:
            for labels, value in self.vector(expr):
                _apply(stats, labels.get("site"), attr, value)
        return stats


class InfluxQLBackend:
    """InfluxQL over ``<url>/query`` (InfluxDB 1.x; 2.x/3.x through their v1 API)."""

    def __init__(self, url: str, *, database: str = "schoolnet", timeout_s: float = 30.0,
                 token: str | None = None, fetch: Fetcher | None = None) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self._get = fetch or (lambda u: http_get_json(u, timeout_s=timeout_s, token=token))

    def series(self, q: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """(tags, {column: first-row value}) per series of one InfluxQL statement."""
        params = urllib.parse.urlencode({"db": self.database, "q": q, "epoch": "s"})
        doc = self._get(f"{self.url}/query?{params}")
        out = []
        for result in (doc or {}).get("results", []):
            if "error" in result:
                raise QueryError(f"InfluxQL: {result['error']}")
            for s in result.get("series", []):
                if s.get("values"):
                    out.append((s.get("tags", {}), dict(zip(s["columns"], s["values"][0],
                                                            strict=False))))
        return out

    def fetch(self, tenant: str, days: float) -> dict[str, SiteStats]:
        """Per-site statistics (see the module doc)."""
        _check_tenant(tenant)
        where = f"\"tenant\" = '{tenant}' AND time > now() - {max(1, round(days * 24))}h"
        ext = f"{where} AND \"target_kind\" !~ /^({'|'.join(LOCAL_KINDS)})$/"
        stats: dict[str, SiteStats] = {}
        q = ('SELECT percentile("rate_mbps", 50) AS p50, percentile("rate_mbps", 10) AS p10, '
             f'count("rate_mbps") AS tests FROM "probe_throughput" WHERE {where} '
             'GROUP BY "site", "direction"')
        for tags, row in self.series(q):
            d = tags.get("direction")
            if d in ("down", "up"):
                for col in ("p50", "p10", "tests"):
                    _apply(stats, tags.get("site"), f"{d}_{col}", row.get(col))
        q = ('SELECT mean("loss_pct") AS loss, median("rtt_avg_ms") AS rtt FROM "probe_icmp" '
             f'WHERE {ext} GROUP BY "site"')
        for tags, row in self.series(q):
            _apply(stats, tags.get("site"), "loss_pct", row.get("loss"))
            _apply(stats, tags.get("site"), "rtt_ms", row.get("rtt"))
        q = ('SELECT percentile("util_in_pct", 95) AS util_in, percentile("util_out_pct", 95) '
             f'AS util_out FROM "uplink" WHERE {where} GROUP BY "site"')
        for tags, row in self.series(q):
            _apply(stats, tags.get("site"), "util_in_p95", row.get("util_in"))
            _apply(stats, tags.get("site"), "util_out_p95", row.get("util_out"))
        return stats
