"""``schoolnet demo``: a thin click layer over :func:`schoolnet.demo.runner.run`."""

from __future__ import annotations

import sys

import click


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Run directory to create and keep (configs, logs, data). "
                   "Default: a fresh temporary directory, removed at the end.")
@click.option("--duration", type=click.FloatRange(min=1), default=None,
              help="Run headless for this many seconds, then stop and exit 0 only if every "
                   "device of every school reached the database; devices still missing then "
                   "get up to max(60 s, 6 poll intervals) more (a smoke check).")
@click.option("--poll-interval", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds between SNMP polls of each simulated device.")
def demo(workdir: str | None, duration: float | None, poll_interval: float) -> None:
    """A simulated city of schools, end to end, on loopback only.

    Starts Mosquitto, VictoriaMetrics, snmpsim (real device recordings, each device
    on its own 127.x address), the collector and one agent per school, and shows a
    live overview: per school the devices up, uplink traffic against the contract and
    the age of the last data. Ctrl-C stops everything it started.

    Exit codes: 0 ok, 1 --duration check failed, 3 could not start.
    """
    from schoolnet.demo.runner import run

    sys.exit(run(workdir=workdir, duration=duration, poll_interval_s=poll_interval))
