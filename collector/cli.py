"""``schoolnet collector``: a thin click layer over :func:`collector.app.run`."""

from __future__ import annotations

import logging
import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def collector() -> None:
    """The central collector: MQTT -> validation -> InfluxDB, with /healthz and /metrics.

    It subscribes to every site's topics on the broker with a persistent QoS 1 session,
    checks each message against the wire contract and the inventory (site-configs/),
    and writes the points as line protocol to InfluxDB (1.8+, 2.x, 3.x) or a
    compatible database. A message is acknowledged to the broker only after its points
    are written, so a database outage delays data but does not lose it.
    """


@collector.command("run")
@click.option("--config", "-c", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Collector config file (see collector/example-config.yaml).")
@click.option("--http-port", type=int, default=None,
              help="Override http.port (0 picks a free port; the log names it).")
@click.option("--shutdown-timeout", type=float, default=10.0, show_default=True,
              help="Seconds to flush buffered points on SIGTERM/Ctrl-C before exiting.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def run_command(config_path: str, http_port: int | None, shutdown_timeout: float,
                log_level: str) -> None:
    """Run the collector until SIGTERM or Ctrl-C (a second one exits at once).

    Exit codes: 0 clean stop, 2 config or inventory errors (each printed as
    file:line: field: message), 3 could not start, 4 forced exit.
    """
    from collector.app import run

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run(config_path, http_port=http_port, shutdown_timeout_s=shutdown_timeout))
