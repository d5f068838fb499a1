"""``schoolnet topology`` and ``schoolnet config suggest-parents``.

Thin click commands over :func:`run`, which reads a site's ``lldp`` points from the
database (the query layer of :mod:`schoolnet.uplink.query`) or polls the site's devices
once with the agent's poller (``--poll``), and hands them to the pure
:mod:`agent.snmp.topology`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from schoolnet.configfile import ConfigError
from schoolnet.inventory import Site
from schoolnet.wire import ID_RE

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_SOURCE = 3

Row = tuple[Mapping[str, str], Mapping[str, Any]]


def rows_from_prom(url: str, tenant: str, site: str, hours: float,
                   fetch: Any = None) -> list[Row]:
    """The labels of the site's ``lldp_*`` series (VictoriaMetrics keeps a string field
    as a series of zeros: its tags survive, its value — the management address — not)."""
    from schoolnet.uplink.query import PromQueryBackend

    backend = PromQueryBackend(url, fetch=fetch)
    expr = (f'last_over_time({{__name__=~"lldp_.+",tenant="{tenant}",site="{site}"}}'
            f"[{max(1, round(hours * 60))}m])")
    return [(labels, {}) for labels, _ in backend.vector(expr)]


def rows_from_influxql(url: str, tenant: str, site: str, hours: float,
                       database: str = "schoolnet", fetch: Any = None) -> list[Row]:
    """The site's ``lldp`` series with their last field values (InfluxQL)."""
    from schoolnet.uplink.query import InfluxQLBackend

    backend = InfluxQLBackend(url, database=database, fetch=fetch)
    q = ('SELECT last(*) FROM "lldp" WHERE '
         f"\"tenant\" = '{tenant}' AND \"site\" = '{site}' AND "
         f"time > now() - {max(1, round(hours * 60))}m "
         'GROUP BY "device", "ifname", "remote_name", "remote_port"')
    return [(tags, {k.removeprefix("last_"): v for k, v in row.items()})
            for tags, row in backend.series(q)]


async def rows_from_poll(site: Site, client: Any = None) -> list[Row]:
    """Poll every device of ``site`` once with the ``lldp`` profile only."""
    from agent.snmp import SnmpDeviceSource, build_sources

    only_lldp = dataclasses.replace(site, devices=tuple(
        dataclasses.replace(d, profiles=("lldp",)) for d in site.devices))
    sources = [s for s in build_sources(only_lldp, client=client)
               if isinstance(s, SnmpDeviceSource)]
    try:
        now = time.time_ns()
        polls = await asyncio.gather(*(s.collect(now) for s in sources))
    finally:
        for s in sources:
            await s.close()
    return [(p.tags, p.fields) for points in polls for p in points if p.measurement == "lldp"]


def run(what: str, *, site_id: str, site_configs: str, tenant: str | None = None,
        url: str | None = None, api: str = "prom", database: str = "schoolnet",
        hours: float = 1.0, poll: bool = False, out: Any = None) -> int:
    """Print the tree (``what="tree"``) or the parent snippets (``"parents"``); exit code."""
    from agent.snmp.topology import build, observations_from_rows, render_suggestions, render_tree
    from schoolnet.inventory import load_inventory
    from schoolnet.uplink.query import QueryError

    def say(text: str) -> None:
        click.echo(text, file=out)

    if poll == (url is not None):
        click.echo("give either --url (read the database) or --poll", err=True)
        return EXIT_CONFIG
    try:
        inv = load_inventory(site_configs, resolve_secrets=poll)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        return EXIT_CONFIG
    found = [s for s in inv if s.id == site_id and (tenant is None or s.tenant == tenant)]
    if len(found) != 1:
        click.echo(f"site {site_id!r}: {'not found' if not found else 'ambiguous, give --tenant'}",
                   err=True)
        return EXIT_CONFIG
    site = found[0]
    if not (ID_RE.match(site.id) and ID_RE.match(site.tenant)):  # pasted into queries
        click.echo(f"site {site.id!r}: not a plain id", err=True)
        return EXIT_CONFIG
    try:
        if poll:
            rows = asyncio.run(rows_from_poll(site))
        elif api == "influxql":
            rows = rows_from_influxql(url or "", site.tenant, site.id, hours, database)
        else:
            rows = rows_from_prom(url or "", site.tenant, site.id, hours)
    except QueryError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_SOURCE
    if not rows:
        click.echo(f"no lldp points for {site.tenant}/{site.id} "
                   f"({'in this poll' if poll else f'in the last {hours:g} h'}); "
                   "do the devices use the lldp profile?", err=True)
    topo = build(observations_from_rows(rows), site.devices,
                 site.uplink.device if site.uplink else None)
    say(render_tree(topo) if what == "tree" else render_suggestions(topo))
    return EXIT_OK


def _source_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--site", "site_id", required=True, help="Site id."),
        click.option("--tenant", help="Tenant id (only if the site id is not unique)."),
        click.option("--site-configs", "site_configs", required=True,
                     type=click.Path(exists=True, file_okay=False),
                     envvar="SCHOOLNET_SITE_CONFIGS", show_envvar=True,
                     help="The site-configs/ directory."),
        click.option("--url", help="Database base URL, e.g. http://127.0.0.1:8428."),
        click.option("--api", type=click.Choice(["prom", "influxql"]), default="prom",
                     show_default=True,
                     help="prom = /api/v1/query (VictoriaMetrics); influxql = /query."),
        click.option("--database", default="schoolnet", show_default=True,
                     help="InfluxQL database."),
        click.option("--hours", type=click.FloatRange(min=0.02), default=1.0,
                     show_default=True, help="Use lldp points of the last N hours."),
        click.option("--poll", is_flag=True,
                     help="Poll the site's devices once (lldp profile) instead of the database."),
    ]):
        f = opt(f)
    return f


@click.command("topology")
@_source_options
def topology_command(**kw: Any) -> None:
    """The site's LLDP neighbour tree from the uplink device (or the parentless devices).

    Exit codes: 0 ok, 2 bad options or config, 3 the database could not be asked.
    """
    sys.exit(run("tree", **kw))


@click.command("suggest-parents")
@_source_options
def suggest_parents_command(**kw: Any) -> None:
    """`parent:` entries for the site's devices, from LLDP, as YAML to paste.

    Exit codes: 0 ok, 2 bad options or config, 3 the database could not be asked.
    """
    sys.exit(run("parents", **kw))
