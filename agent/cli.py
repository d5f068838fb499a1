"""``schoolnet agent``: a thin click layer over :func:`agent.app.run`."""

from __future__ import annotations

import logging
import sys

import click

from agent.publisher import DEFAULT_RATE_PER_S


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def agent() -> None:
    """The site agent: polls the school's devices and probes its uplink, keeps the data
    in a disk spool and publishes it to the NOC's MQTT broker."""


@agent.command("run")
@click.option("--site-config", "site_config", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="The site's YAML file in site-configs/<tenant>/ (tenant.yaml beside it "
                   "supplies the defaults).")
@click.option("--spool-dir", type=click.Path(file_okay=False),
              help="Directory of the disk spool; overrides agent.spool_dir of the site. "
                   "Data not yet delivered survives restarts here.")
@click.option("--once", is_flag=True,
              help="Gather every source once, deliver, exit: 0 if everything reached the "
                   "broker, 4 if some data stays in the spool.")
@click.option("--replay-rate", type=click.FloatRange(min=0.1), default=DEFAULT_RATE_PER_S,
              show_default=True,
              help="Messages per second at most, so a site returning from an outage "
                   "replays its backlog without flooding the broker.")
@click.option("--flush-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to keep delivering the spool at shutdown before giving up "
                   "(the rest is sent after the next start).")
@click.option("--resend-window", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to keep acknowledged batches and send them again after a "
                   "reconnect (the broker acknowledges before it saves; 0: off).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def run_command(site_config: str, spool_dir: str | None, once: bool, replay_rate: float,
                flush_timeout: float, resend_window: float, verbose: bool) -> None:
    """Run the agent for one site until SIGINT/SIGTERM (a second signal skips the flush).

    Exit codes: 0 ok, 1 unexpected error, 3 cannot start (bad site config, unusable
    spool directory, bad TLS settings), 4 --once could not deliver everything.
    """
    from agent.app import run

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run(site_config, spool_dir=spool_dir, once=once, replay_rate=replay_rate,
                 flush_timeout_s=flush_timeout, resend_window_s=resend_window))


@agent.command("probe")
@click.option("--site-config", "site_config", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="The site's YAML file (its probes: section and the tenant's defaults).")
@click.option("--throughput", is_flag=True,
              help="Run one throughput test (iperf3 against the NOC, down and up) now "
                   "instead of the ICMP, service and DNS probes.")
@click.option("--force", is_flag=True,
              help="Run the throughput test even in the tenant's lesson hours.")
@click.option("--json", "as_json", is_flag=True, help="One JSON point per line.")
def probe_command(site_config: str, throughput: bool, force: bool, as_json: bool) -> None:
    """Run the site's uplink probes once, now, and print the results (docs/probes.md).

    Exit codes: 0 ran, 3 cannot start (bad config, no CAP_NET_RAW, no probes
    configured), 4 a throughput test in lesson hours without --force.
    """
    from agent.probes.manual import run

    sys.exit(run(site_config, throughput=throughput, force=force, as_json=as_json))


if __name__ == "__main__":  # python -m agent.cli: the agent without the other programs
    agent()


@agent.command("discover")
@click.option("--host", required=True, help="Device address (name or IP).")
@click.option("--port", type=int, default=161, show_default=True)
@click.option("--community", default=None, help="SNMPv2c community (default: public).")
@click.option("--user", default=None, help="SNMPv3 user (selects v3).")
@click.option("--auth-protocol", default="none", show_default=True,
              type=click.Choice(["none", "md5", "sha", "sha224", "sha256", "sha384", "sha512"]))
@click.option("--auth-key", default=None, envvar="SCHOOLNET_SNMP_AUTH_KEY",
              help="SNMPv3 auth key (or $SCHOOLNET_SNMP_AUTH_KEY).")
@click.option("--priv-protocol", default="none", show_default=True,
              type=click.Choice(["none", "des", "3des", "aes", "aes128", "aes192", "aes256"]))
@click.option("--priv-key", default=None, envvar="SCHOOLNET_SNMP_PRIV_KEY",
              help="SNMPv3 privacy key (or $SCHOOLNET_SNMP_PRIV_KEY).")
@click.option("--timeout", type=float, default=2.0, show_default=True)
def discover_command(host: str, port: int, community: str | None, user: str | None,
                     auth_protocol: str, auth_key: str | None, priv_protocol: str,
                     priv_key: str | None, timeout: float) -> None:
    """Ask one device for sysDescr/sysObjectID and print which profiles it would get."""
    import asyncio

    from agent.snmp.client import SnmpError
    from agent.snmp.discover import discover, report
    from schoolnet.configfile import Secret
    from schoolnet.inventory import SnmpCredentials

    if user:
        creds = SnmpCredentials(
            version="3", user=user, auth_protocol=auth_protocol,
            auth_key=Secret(auth_key) if auth_key else None, priv_protocol=priv_protocol,
            priv_key=Secret(priv_key) if priv_key else None, timeout_s=timeout, retries=1)
    else:
        creds = SnmpCredentials(version="2c", community=Secret(community or "public"),
                                timeout_s=timeout, retries=1)
    try:
        found = asyncio.run(discover(host, port, creds))
    except SnmpError as exc:
        click.echo(f"error: {host}:{port}: {exc.code}: {exc.message}", err=True)
        sys.exit(2)
    click.echo(report(host, port, found))
