"""Rows, text and CSV of the uplink report (pure), and :func:`run`.

One row per site of the tenant (from the inventory, so a site without any measurement
shows up as such instead of silently missing): contracted down/up, measured median and
10th percentile of the throughput tests, the median as a share of the contract, the
number of tests, mean ICMP loss, median RTT, and the 95th percentile of utilization.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from schoolnet.inventory import Inventory
from schoolnet.uplink.query import SiteStats, UplinkStatsBackend

#: (column key, heading, decimals) in report order.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("site", "site", 0),
    ("name", "name", 0),
    ("kind", "kind", 0),
    ("down_contract", "down contract Mbit/s", 0),
    ("down_p50", "down median", 1),
    ("down_p10", "down p10", 1),
    ("down_ratio", "down median/contract", 2),
    ("down_tests", "down tests", 0),
    ("up_contract", "up contract Mbit/s", 0),
    ("up_p50", "up median", 1),
    ("up_p10", "up p10", 1),
    ("up_ratio", "up median/contract", 2),
    ("up_tests", "up tests", 0),
    ("loss_pct", "loss %", 2),
    ("rtt_ms", "latency median ms", 1),
    ("util_in_p95", "util in p95 %", 0),
    ("util_out_p95", "util out p95 %", 0),
)


@dataclass(frozen=True)
class ReportRow:
    """One site's line: values by column key (None: no data)."""

    values: dict[str, str | float | int | None]

    def get(self, key: str) -> str | float | int | None:
        """The value of column ``key``."""
        return self.values.get(key)


def _ratio(measured: float | None, contract: float | None) -> float | None:
    if measured is None or not contract:
        return None
    return measured / contract


def build_rows(inventory: Inventory, tenant: str,
               stats: dict[str, SiteStats]) -> list[ReportRow]:
    """One row per inventory site of ``tenant`` (sorted by id), measured values joined."""
    rows = []
    for site in sorted((s for s in inventory if s.tenant == tenant), key=lambda s: s.id):
        st = stats.get(site.id, SiteStats())
        up = site.uplink
        down_c = up.down_mbit if up else None
        up_c = up.up_mbit if up else None
        rows.append(ReportRow({
            "site": site.id, "name": site.name, "kind": up.kind if up else "",
            "down_contract": down_c, "down_p50": st.down_p50, "down_p10": st.down_p10,
            "down_ratio": _ratio(st.down_p50, down_c), "down_tests": st.down_tests,
            "up_contract": up_c, "up_p50": st.up_p50, "up_p10": st.up_p10,
            "up_ratio": _ratio(st.up_p50, up_c), "up_tests": st.up_tests,
            "loss_pct": st.loss_pct, "rtt_ms": st.rtt_ms,
            "util_in_p95": st.util_in_p95, "util_out_p95": st.util_out_p95,
        }))
    return rows


def _cell(value: str | float | int | None, decimals: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def to_csv(rows: Iterable[ReportRow]) -> str:
    """CSV with a header line; empty cells where there is no data; dot decimals."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([key for key, _, _ in COLUMNS])
    for r in rows:
        w.writerow(["" if r.get(k) is None else
                    (f"{r.get(k):.{max(d, 2)}f}" if isinstance(r.get(k), float) else r.get(k))
                    for k, _, d in COLUMNS])
    return buf.getvalue()


def to_text(rows: list[ReportRow], *, tenant: str, tenant_name: str, days: float) -> str:
    """A fixed-width table with a title line and a legend."""
    head = [h for _, h, _ in COLUMNS]
    body = [[_cell(r.get(k), d) for k, _, d in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    numeric = [i >= 3 for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

    out = [f"Uplinks of {tenant_name} ({tenant}), last {days:g} days", "",
           line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    out += ["", "median/p10: of the scheduled and manual iperf3 tests (TCP goodput, ~95 % of "
            "the line rate when the contract is met); loss and latency: ICMP to the external "
            "targets; '-': no data."]
    return "\n".join(out) + "\n"


def report(backend: UplinkStatsBackend, inventory: Inventory, tenant: str,
           days: float) -> list[ReportRow]:
    """Ask the database, join with the inventory."""
    return build_rows(inventory, tenant, backend.fetch(tenant, days))
