"""Everything the demo runs, started in order and stopped in reverse, each by its PID.

:class:`DemoStack` owns the servers (Mosquitto, VictoriaMetrics, one snmpsim per
simulator group) and the schoolnet programs (the collector and one agent per school).
The programs run as subprocesses through their own CLIs, exactly as in production, so
the demo depends on their command lines and nothing else.

Start order follows the pipeline from the sink up: database, broker and simulators
(in parallel: snmpsim indexing its recordings is the slow part), then the collector
(ready when its HTTP endpoint answers), then the agents. Stop order is the reverse:
agents first, so their last batches still reach a running collector, then the
collector, then the servers, each group with a deadline after which it is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from schoolnet.demo.city import SimCity, WrittenCity, write_city
from schoolnet.sim.servers import ManagedProcess, Mosquitto, Snmpsim, VictoriaMetrics, free_port


def schoolnet_command() -> list[str]:
    """How to run the ``schoolnet`` CLI of this very installation."""
    script = Path(sys.executable).with_name("schoolnet")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from schoolnet.cli import main; sys.exit(main())"]


class SchoolnetProcess(ManagedProcess):
    """One schoolnet program (agent or collector) run as a subprocess through its CLI.

    ``ready_url``, when given, must answer HTTP (any status) before the program counts
    as started; without it the program is started once it is running.
    """

    def __init__(self, workdir: Path, name: str, args: list[str], *,
                 ready_url: str | None = None) -> None:
        self.name = name
        super().__init__(workdir)
        self.args = args
        self.ready_url = ready_url

    def command(self) -> list[str]:
        """``schoolnet <args>``."""
        return [*schoolnet_command(), *self.args]

    def env(self) -> dict[str, str]:
        """Unbuffered output, so the log file shows what happened up to a crash."""
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def is_ready(self) -> bool:
        """The HTTP endpoint answers (if there is one)."""
        if self.ready_url is None:
            return True
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answered; 503 only means "not healthy yet"

    @property
    def exit_code(self) -> int | None:
        """The exit code if our process ended on its own, else None."""
        return None if self.proc is None else self.proc.poll()


def stop_group(procs: Iterable[ManagedProcess], timeout: float,
               hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM every running process of a group at once; SIGKILL what outlives
    ``timeout``, or everything still running as soon as ``hurry()`` turns true."""
    group = [p for p in procs if p.proc is not None]
    for p in group:
        if p.proc is not None and p.proc.poll() is None:
            # Only one SIGTERM: our programs take a second signal as "skip the flush".
            p.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in group:
        proc = p.proc
        assert proc is not None
        while proc.poll() is None and time.monotonic() < deadline and not hurry():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        p.proc = None


def collector_config(*, broker: Mosquitto, db: VictoriaMetrics, inventory_dir: Path,
                     http_port: int, state_dir: Path) -> str:
    """The collector's YAML config for the demo (see collector/example-config.yaml)."""
    return (
        "# Written by schoolnet demo: everything on loopback.\n"
        "mqtt:\n"
        f"  host: {broker.host}\n"
        f"  port: {broker.port}\n"
        "  client_id: schoolnet-demo-collector\n"
        "influx:\n"
        f"  url: {db.url}\n"
        "  bucket: schoolnet\n"
        "  flush_interval_s: 0.5\n"
        f"inventory: {inventory_dir}\n"
        "http:\n"
        "  host: 127.0.0.1\n"
        f"  port: {http_port}\n"
        f"state_dir: {state_dir}\n"
    )


class DemoStack:
    """The demo's processes: servers, collector and agents of one simulated city."""

    def __init__(self, workdir: Path, city: SimCity, *, poll_interval_s: float = 10.0,
                 next_address: Callable[[], str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.workdir / "mosquitto")
        self.db = VictoriaMetrics(self.workdir / "victoria-metrics")
        self.written: WrittenCity = write_city(
            city, self.workdir / "site-configs", broker=(self.broker.host, self.broker.port),
            poll_interval_s=poll_interval_s, spool_root=self.workdir / "spool",
            next_address=next_address)
        self.simulators: dict[str, Snmpsim] = {
            name: Snmpsim(self.workdir / f"snmpsim-{name}", self.written.recordings(name),
                          self.written.listen(name))
            for name in self.written.simulators()
        }
        http_port = free_port("127.0.0.1")
        self.collector_url = f"http://127.0.0.1:{http_port}"
        cdir = self.workdir / "collector"
        cdir.mkdir(exist_ok=True)
        self.collector_config_path = cdir / "collector.yaml"
        self.collector_config_path.write_text(collector_config(
            broker=self.broker, db=self.db, inventory_dir=self.written.config_dir,
            http_port=http_port, state_dir=cdir / "state"))
        self.collector = SchoolnetProcess(
            cdir, "collector", ["collector", "run", "--config", str(self.collector_config_path)],
            ready_url=f"{self.collector_url}/healthz")
        self.agents: dict[str, SchoolnetProcess] = {}
        for school in city.schools:
            site_file = self.written.site_file(school.id)
            self.agents[school.id] = SchoolnetProcess(
                self.workdir / "agents", f"agent-{school.id}",
                ["agent", "run", "--site-config", str(site_file),
                 "--spool-dir", str(self.workdir / "spool" / school.id)])

    @property
    def city(self) -> SimCity:
        """The simulated city this stack runs."""
        return self.written.city

    def servers(self) -> list[ManagedProcess]:
        """Database, broker and simulators."""
        return [self.db, self.broker, *self.simulators.values()]

    def programs(self) -> list[SchoolnetProcess]:
        """Collector and agents."""
        return [self.collector, *self.agents.values()]

    def start(self, progress: Callable[[str], None] = lambda _msg: None,
              should_stop: Callable[[], bool] = lambda: False) -> None:
        """Start everything in pipeline order; on failure stop what was started and raise.

        ``should_stop`` is checked between steps, so a Ctrl-C during a slow start
        does not wait for the agents to come up first.
        """
        try:
            progress("starting VictoriaMetrics, Mosquitto and snmpsim "
                     f"({sum(len(s.recordings) for s in self.simulators.values())} recordings)")
            with ThreadPoolExecutor(max_workers=len(self.servers())) as pool:
                for fut in [pool.submit(s.start) for s in self.servers()]:
                    fut.result()
            if should_stop():
                return
            progress(f"starting the collector ({self.collector_url})")
            self.collector.start()
            for site, agent in self.agents.items():
                if should_stop():
                    return
                progress(f"starting the agent of {site}")
                agent.start()
        except BaseException:
            self.stop()
            raise

    def dead(self) -> list[str]:
        """Programs and servers that exited although nobody stopped them, with exit codes."""
        out = [f"{p.name} exited with code {p.exit_code} (log: {p.log_path})"
               for p in self.programs() if p.exit_code is not None]
        for s in self.servers():
            if s.proc is not None and s.proc.poll() is not None:
                out.append(f"{s.name} exited with code {s.proc.returncode} (log: {s.log_path})")
        return out

    def stop(self, timeout: float = 10.0, hurry: Callable[[], bool] = lambda: False) -> None:
        """Agents, then the collector, then the servers; each group within ``timeout``.

        ``hurry()`` turning true (a second Ctrl-C) kills whatever is still running.
        """
        stop_group(self.agents.values(), timeout, hurry)
        stop_group([self.collector], timeout, hurry)
        stop_group(self.servers(), timeout, hurry)

    def pids(self) -> dict[str, int]:
        """PIDs of every running process of the stack, by name."""
        return {p.name: p.pid for p in [*self.programs(), *self.servers()] if p.pid is not None}

    def remove(self) -> None:
        """Delete the run directory (only after stop())."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DemoStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DemoStack", "SchoolnetProcess", "collector_config", "schoolnet_command",
           "stop_group"]
