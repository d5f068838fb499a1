"""``schoolnet status``: what a running collector knows, from its ``/api/status``.

A thin client: one GET, a table per site (state, last seen, messages, points, drops and
the seq bookkeeping that proves nothing was lost: highest seq, gaps, duplicates) and a
line about the collector itself (broker, database, buffer, spool). ``--json`` prints
the document as the collector sent it.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click

DEFAULT_URL = "http://127.0.0.1:9310"


def fetch_status(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET ``<url>/api/status``; raises OSError or ValueError with a readable message."""
    target = url.rstrip("/") + "/api/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise OSError(f"{target}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"{target}: {exc.reason}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sites"), list):
        raise ValueError(f"{target}: not a collector status document")
    return doc


def _ago(ns: object, now: float) -> str:
    if not isinstance(ns, int):
        return "never"
    s = max(0.0, now - ns / 1e9)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def collector_line(c: dict[str, Any]) -> str:
    """One line about the collector itself."""
    parts = ["mqtt connected" if c.get("mqtt_connected") else
             f"mqtt NOT connected ({c.get('mqtt_error') or '?'})"]
    parts.append(f"writes FAILING ({c.get('write_error', '')[:80]})" if c.get("writes_failing")
                 else "writes ok")
    parts.append(f"{c.get('buffer_lines', 0)} line(s) to write")
    if c.get("settling_lines"):
        parts.append(f"{c['settling_lines']} written, not yet durable")
    spool = c.get("spool")
    if isinstance(spool, dict):
        parts.append(f"spool {_size(spool.get('bytes', 0))} of {_size(spool.get('max_bytes', 0))}")
        if spool.get("lost_lines"):
            parts.append(f"{spool['lost_lines']} line(s) lost to a damaged spool")
    if c.get("database_restarts"):
        parts.append(f"{c['database_restarts']} database restart(s) seen")
    return ", ".join(parts)


def site_rows(sites: list[dict[str, Any]], now: float) -> list[list[str]]:
    """Table rows, header first."""
    rows = [["TENANT", "SITE", "STATE", "LAST SEEN", "MESSAGES", "POINTS", "DROPPED",
             "SEQ", "GAPS", "DUPLICATES"]]
    for s in sites:
        rows.append([str(s.get("tenant", "")), str(s.get("site", "")), str(s.get("state", "")),
                     _ago(s.get("last_seen_ns"), now), str(s.get("messages", 0)),
                     str(s.get("points", 0)), str(s.get("dropped", 0)),
                     str(s.get("seq_highest", -1)), str(s.get("seq_gaps", 0)),
                     str(s.get("seq_duplicates", 0))])
    return rows


def render(doc: dict[str, Any], *, now: float | None = None, tenant: str | None = None) -> str:
    """The human-readable status: the collector line and the site table."""
    now = time.time() if now is None else now
    sites = [s for s in doc["sites"] if tenant is None or s.get("tenant") == tenant]
    rows = site_rows(sites, now)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    gaps = sum(int(s.get("seq_gaps", 0)) for s in sites)
    dups = sum(int(s.get("seq_duplicates", 0)) for s in sites)
    summary = (f"{len(sites)} site(s); {gaps} seq(s) missing"
               + (" (data not arrived or lost)" if gaps else "")
               + f"; {dups} duplicate(s) skipped")
    return "\n".join([f"collector: {collector_line(doc.get('collector') or {})}", "",
                      *table, "", summary]) + "\n"


@click.command("status")
@click.option("--collector", "url", default=DEFAULT_URL, show_default=True,
              help="Base URL of the collector's HTTP endpoint.")
@click.option("--tenant", default=None, help="Only this tenant's sites.")
@click.option("--json", "as_json", is_flag=True, help="Print /api/status as JSON.")
def status_command(url: str, tenant: str | None, as_json: bool) -> None:
    """Per-site state and seq bookkeeping (gaps, duplicates) from a running collector.

    Exit codes: 0 ok, 1 the collector did not answer.
    """
    try:
        doc = fetch_status(url)
    except (OSError, ValueError) as exc:
        click.echo(f"schoolnet status: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(doc, indent=1, sort_keys=True))
    else:
        click.echo(render(doc, tenant=tenant), nl=False)
