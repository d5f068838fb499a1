"""``schoolnet uplink report``: a thin click layer over :mod:`schoolnet.uplink.report`."""

from __future__ import annotations

import sys

import click

from schoolnet.configfile import ConfigError

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DATABASE = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def uplink() -> None:
    """What the schools' uplinks deliver compared with their contracts."""


@uplink.command("report")
@click.option("--tenant", required=True, help="Tenant (school authority) id.")
@click.option("--days", type=click.FloatRange(min=1, max=3660), default=30.0,
              show_default=True, help="Report window: the last N days.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a text table.")
@click.option("-c", "--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Collector config: supplies the inventory and the database (influx.url, "
                   "influx.bucket, influx.token).")
@click.option("--inventory", type=click.Path(exists=True, file_okay=False),
              help="site-configs/ directory (overrides the collector config's).")
@click.option("--url", help="Database base URL (overrides influx.url), e.g. "
                            "http://127.0.0.1:8428 for VictoriaMetrics.")
@click.option("--api", type=click.Choice(["prom", "influxql"]), default="prom",
              show_default=True,
              help="Query API: prom = /api/v1/query (VictoriaMetrics, the demo); "
                   "influxql = /query (InfluxDB 1.x, or 2.x/3.x v1 compatibility).")
@click.option("--database", help="InfluxQL database (default: influx.bucket, or schoolnet).")
def report_command(tenant: str, days: float, as_csv: bool, config_path: str | None,
                   inventory: str | None, url: str | None, api: str,
                   database: str | None) -> None:
    """Per site: contracted vs measured throughput (median, p10) down and up, loss, latency.

    Exit codes: 0 ok, 2 bad options or config, 3 the database could not be asked.
    """
    sys.exit(run(tenant=tenant, days=days, as_csv=as_csv, config_path=config_path,
                 inventory_dir=inventory, url=url, api=api, database=database))


def run(*, tenant: str, days: float = 30.0, as_csv: bool = False,
        config_path: str | None = None, inventory_dir: str | None = None,
        url: str | None = None, api: str = "prom", database: str | None = None) -> int:
    """The report as a plain function; prints it and returns the exit code."""
    from schoolnet.inventory import load_inventory
    from schoolnet.uplink.query import (
        InfluxQLBackend,
        PromQueryBackend,
        QueryError,
        UplinkStatsBackend,
    )
    from schoolnet.uplink.report import report, to_csv, to_text

    token: str | None = None
    try:
        if config_path is not None:
            from collector.config import load_config

            cfg = load_config(config_path, resolve_secrets=True)
            inventory_dir = inventory_dir or cfg.inventory
            url = url or cfg.influx.url
            database = database or cfg.influx.bucket.split("/")[0]
            token = cfg.influx.token.reveal() if cfg.influx.token else None
        if inventory_dir is None or url is None:
            click.echo("give -c collector.yaml, or --inventory and --url", err=True)
            return EXIT_CONFIG
        inv = load_inventory(inventory_dir, resolve_secrets=False)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        return EXIT_CONFIG
    t = inv.tenants.get(tenant)
    if t is None:
        click.echo(f"no tenant {tenant!r} in {inventory_dir}", err=True)
        return EXIT_CONFIG
    backend: UplinkStatsBackend = (
        PromQueryBackend(url, token=token) if api == "prom"
        else InfluxQLBackend(url, database=database or "schoolnet", token=token))
    try:
        rows = report(backend, inv, tenant, days)
    except QueryError as exc:
        click.echo(f"cannot query the database: {exc}", err=True)
        return EXIT_DATABASE
    click.echo(to_csv(rows) if as_csv else to_text(rows, tenant=tenant, tenant_name=t.name,
                                                   days=days), nl=False)
    return EXIT_OK
