"""The ``schoolnet`` command: a thin click layer over plain functions.

Subcommands live with their programs (``agent``, ``collector``) and are mounted here;
each command only parses options and calls a function that does the work.
"""

from __future__ import annotations

import sys

import click

from schoolnet import __version__
from schoolnet.configfile import ConfigError
from schoolnet.inventory import load_inventory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="schoolnet")
def main() -> None:
    """schoolnet: monitoring for school networks.

    The agent runs on the box at each school site, the collector in the NOC; both
    read the YAML inventory in site-configs/.
    """


@main.group()
def config() -> None:
    """Check the site inventory (site-configs/); suggest parent: entries from LLDP."""


@config.command("check")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--no-secrets", is_flag=True,
              help="Check secret references ({env: ...}, {file: ...}) without reading them.")
def config_check(directory: str, no_secrets: bool) -> None:
    """Check every tenant and site file below DIRECTORY; report every error, exit 1 if any."""
    try:
        inv = load_inventory(directory, resolve_secrets=not no_secrets)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        click.echo(f"{len(exc.issues)} error(s)", err=True)
        sys.exit(1)
    devices = sum(len(s.devices) for s in inv)
    click.echo(f"ok: {len(inv.tenants)} tenant(s), {len(inv.sites)} site(s), {devices} device(s)")


@main.command("ansible-inventory")
@click.option("--site-configs", "site_configs", required=True,
              type=click.Path(exists=True, file_okay=False),
              envvar="SCHOOLNET_SITE_CONFIGS", show_envvar=True,
              help="The site-configs/ directory: one Ansible host per site.")
@click.option("--list", "list_", is_flag=True,
              help="Print every group and host (the default; Ansible's script plugin asks so).")
@click.option("--host", "host", metavar="HOST",
              help="Print the variables of one host (always in --list's _meta too).")
def ansible_inventory_command(site_configs: str, list_: bool, host: str | None) -> None:
    """The school sites as an Ansible inventory (JSON), derived from site-configs/.

    Exit 1 with every error as file:line: field: message if the site configs are broken,
    or if HOST is not a site.
    """
    import json

    from schoolnet.ansible_inventory import build_inventory

    try:
        inv = build_inventory(site_configs)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        click.echo(f"{len(exc.issues)} error(s)", err=True)
        sys.exit(1)
    if host is not None and not list_:
        hostvars = inv["_meta"]["hostvars"]
        if host not in hostvars:
            click.echo(f"no site {host!r} (hosts are named <site>.<tenant>)", err=True)
            sys.exit(1)
        inv = hostvars[host]
    click.echo(json.dumps(inv, indent=2, sort_keys=True))


def _mount() -> None:
    """Attach the program subgroups; each lives with its program."""
    from agent.cli import agent
    from collector.cli import collector
    from collector.outages.cli import maintenance, outages_command
    from collector.statuscli import status_command
    from schoolnet.brokerconfig import broker_config_command
    from schoolnet.demo.cli import demo

    main.add_command(agent)
    main.add_command(collector)
    main.add_command(demo)
    main.add_command(outages_command)
    main.add_command(maintenance)
    main.add_command(status_command)
    main.add_command(broker_config_command)

    from schoolnet.topology_cli import suggest_parents_command, topology_command

    main.add_command(topology_command)
    config.add_command(suggest_parents_command)

    from schoolnet.uplink.cli import uplink

    main.add_command(uplink)


try:
    _mount()
except ImportError as exc:  # pragma: no cover - only while a program is being built
    print(f"schoolnet: part of the CLI is unavailable: {exc}", file=sys.stderr)
