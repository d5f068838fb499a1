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
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def run_command(site_config: str, spool_dir: str | None, once: bool, replay_rate: float,
                flush_timeout: float, verbose: bool) -> None:
    """Run the agent for one site until SIGINT/SIGTERM (a second signal skips the flush).

    Exit codes: 0 ok, 1 unexpected error, 3 cannot start (bad site config, unusable
    spool directory, bad TLS settings), 4 --once could not deliver everything.
    """
    from agent.app import run

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run(site_config, spool_dir=spool_dir, once=once, replay_rate=replay_rate,
                 flush_timeout_s=flush_timeout))


if __name__ == "__main__":  # python -m agent.cli: the agent without the other programs
    agent()
