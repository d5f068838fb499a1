"""``schoolnet outages`` and ``schoolnet maintenance``: thin click layers over the store.

Both read the collector's config (for ``state_dir`` and the inventory) and work on the
state database directly, so they answer while the collector is down too; a running
collector picks up maintenance windows and ``outages forget-ap`` requests added here
within a tick (a stopped one at its next start).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from collector.outages.mailfmt import duration, finding, what
from collector.outages.model import Outage
from collector.outages.store import FILE_NAME, OutageStore
from schoolnet.alerting import parse_local_datetime
from schoolnet.configfile import ConfigError
from schoolnet.inventory import Inventory


def _load(config_path: str) -> tuple[OutageStore, Inventory]:
    from collector.config import load_config
    from schoolnet.inventory import load_inventory

    try:
        cfg = load_config(config_path, resolve_secrets=False)
        inv = load_inventory(cfg.inventory, resolve_secrets=False)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        sys.exit(2)
    return OutageStore(Path(cfg.state_dir) / FILE_NAME), inv


def _local(ts: float, zone: str = "Europe/Berlin") -> str:
    return dt.datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def outage_rows(outages: list[Outage], now: float, *, with_affected: bool) -> list[dict[str, Any]]:
    """Table rows: roots (and, if asked, affected ones), each with its affected count."""
    rows = []
    for o in sorted(outages, key=lambda o: o.id):
        if o.root is not None and not with_affected:
            continue
        state = "open" if o.is_open else "resolved"
        if o.root is not None:
            state = f"affected by #{o.root}" if o.is_open else "affected (over)"
        rows.append({"id": o.id, "state": state + (" flapping" if o.flapping else ""),
                     "since": _local(o.started), "for": duration((o.closed or now) - o.started,
                                                                  "en"),
                     "tenant": o.tenant, "site": o.site, "what": what(o, "en"),
                     "finding": finding(o.detail, "en"), "affected": len(o.affected_ids),
                     "mailed": o.notified})
    return rows


@click.group("outages", invoke_without_command=True)
@click.option("--config", "-c", "config_path", default=None,
              type=click.Path(exists=True, dir_okay=False), help="The collector's config file.")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--hours", type=float, default=24.0, show_default=True,
              help="Also list outages resolved within this many hours.")
@click.option("--all", "with_affected", is_flag=True,
              help="List affected outages one by one too (normally only counted).")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def outages_command(ctx: click.Context, config_path: str | None, tenant: str | None,
                    hours: float, with_affected: bool, as_json: bool) -> None:
    """Open and recent outages, with how many outages each root cause covered.

    Subcommands: ``aps`` (APs behind WLAN controllers), ``forget-ap``.
    """
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        raise click.UsageError("Missing option '--config' / '-c'.")
    store, _ = _load(config_path)
    now = time.time()
    rows = outage_rows(store.outages(since=now - hours * 3600, tenant=tenant), now,
                       with_affected=with_affected)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo("no outages")
        return
    cols = ["id", "state", "since", "for", "tenant", "site", "what", "affected", "finding"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())


def _span(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhd])\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 90m, 2h or 1d")
    return float(m.group(1)) * {"m": 60, "h": 3600, "d": 86400}[m.group(2)]


@click.group("maintenance")
def maintenance() -> None:
    """Maintenance windows: outages in them are recorded, mail follows the tenant's policy."""


@maintenance.command("add")
@click.option("--config", "-c", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--tenant", required=True)
@click.option("--site", "sites", multiple=True, help="A site id (repeat); none: every site.")
@click.option("--start", default="now", show_default=True,
              help='Local time "YYYY-MM-DD HH:MM" in the tenant\'s time zone, or "now".')
@click.option("--end", default=None, help="Local end time; or give --for.")
@click.option("--for", "length", default=None, help="Length instead of --end: 90m, 2h, 1d.")
@click.option("--reason", default="", help="Shown in listings.")
def maintenance_add(config_path: str, tenant: str, sites: tuple[str, ...], start: str,
                    end: str | None, length: str | None, reason: str) -> None:
    """Add a maintenance window; prints its id."""
    store, inv = _load(config_path)
    t = inv.tenants.get(tenant)
    if t is None:
        raise click.BadParameter(f"no tenant {tenant!r} in the inventory", param_hint="--tenant")
    for s in sites:
        if (tenant, s) not in inv.sites:
            raise click.BadParameter(f"no site {s!r} of {tenant}", param_hint="--site")
    zone = t.alerting.timezone
    t0 = time.time() if start == "now" else parse_local_datetime(start, zone)
    if t0 is None:
        raise click.BadParameter(f"{start!r} is not a date and time", param_hint="--start")
    if (end is None) == (length is None):
        raise click.UsageError("give exactly one of --end and --for")
    t1 = t0 + _span(length) if length is not None else parse_local_datetime(end, zone)
    if t1 is None or t1 <= t0:
        raise click.BadParameter("must be a date and time after the start", param_hint="--end")
    wid = store.add_window(tenant, sites, t0, t1, reason, time.time())
    click.echo(f"{wid}: {tenant} {','.join(sites) or '(all sites)'} "
               f"{_local(t0, zone)} - {_local(t1, zone)} {reason}".rstrip())


@maintenance.command("list")
@click.option("--config", "-c", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--tenant", default=None)
def maintenance_list(config_path: str, tenant: str | None) -> None:
    """Windows from tenant.yaml (id config:N) and from this CLI (numbers)."""
    store, inv = _load(config_path)
    rows: list[tuple[str, Any]] = [(t.id, w) for t in inv.tenants.values()
                                   for w in t.alerting.maintenance]
    rows += store.windows()
    now = time.time()
    shown = 0
    for tid, w in sorted(rows, key=lambda r: r[1].start):
        if tenant and tid != tenant:
            continue
        shown += 1
        state = "active" if w.start <= now < w.end else ("over" if w.end <= now else "planned")
        click.echo(f"{w.id:>9}  {state:<7}  {tid}  {','.join(w.sites) or '(all sites)'}  "
                   f"{_local(w.start)} - {_local(w.end)}  {w.reason}".rstrip())
    if not shown:
        click.echo("no maintenance windows")


@maintenance.command("remove")
@click.option("--config", "-c", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False))
@click.argument("window_id", type=int)
def maintenance_remove(config_path: str, window_id: int) -> None:
    """Remove a window added by this CLI (windows in tenant.yaml are edited there)."""
    store, _ = _load(config_path)
    if not store.remove_window(window_id):
        click.echo(f"no maintenance window {window_id}", err=True)
        sys.exit(1)
    click.echo(f"removed {window_id}")


def ap_rows(store: OutageStore, tenant: str | None) -> list[dict[str, Any]]:
    """One row per learned AP: its controller, state, last known clients, last seen."""
    aps = store.learned_aps(tenant)
    keys = [f"{a['tenant']}/{a['site']}/ap/{a['name']}" for a in aps]
    states = store.load_entity_states(keys)
    pending = set(store.forget_requests())
    rows = []
    for key, a in zip(keys, aps, strict=True):
        st = states.get(key, {})
        state = "down" if st.get("bad") else ("suspect" if st.get("suspect") else "up")
        if key in pending:
            state += " (forget requested)"
        rows.append({"key": key, "tenant": a["tenant"], "site": a["site"],
                     "controller": a["controller"], "ap": a["name"], "mac": a.get("mac", ""),
                     "state": state, "clients": a.get("clients"),
                     "last_up": _local(float(a.get("last_up", 0.0)))})
    return rows


@outages_command.command("aps")
@click.option("--config", "-c", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def outages_aps(config_path: str, tenant: str | None, as_json: bool) -> None:
    """APs behind WLAN controllers: expected vs up per controller, and each AP."""
    store, _ = _load(config_path)
    rows = ap_rows(store, tenant)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo("no access points learned from controllers")
        return
    per: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        per.setdefault((r["tenant"], r["site"], r["controller"]), []).append(r)
    for (t, s, ctl), members in per.items():
        up = sum(1 for r in members if r["state"].startswith("up"))
        click.echo(f"{t}/{s} controller {ctl}: {len(members)} expected, {up} up")
        for r in members:
            click.echo(f"  {r['ap']:<24} {r['state']:<8} clients {r['clients']!s:<4} "
                       f"last up {r['last_up']}  {r['mac']}".rstrip())


@outages_command.command("forget-ap")
@click.option("--config", "-c", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False))
@click.argument("ap_key")
def outages_forget_ap(config_path: str, ap_key: str) -> None:
    """Stop expecting an AP now (TENANT/SITE/NAME, as `outages aps --json` shows as key).

    Its open outage resolves. It is learned again if its controller reports it up.
    """
    store, _ = _load(config_path)
    parts = ap_key.split("/")
    key = ap_key if len(parts) >= 4 and parts[2] == "ap" else "/".join(
        [*parts[:2], "ap", *parts[2:]])
    known = {f"{a['tenant']}/{a['site']}/ap/{a['name']}" for a in store.learned_aps()}
    if key not in known:
        click.echo(f"no learned access point {ap_key!r} (see: schoolnet outages aps)", err=True)
        sys.exit(1)
    store.request_forget(key, time.time())
    click.echo(f"forget requested: {key} (a running collector applies it within a tick, "
               "a stopped one at its next start)")
