"""``schoolnet demo`` as a plain function: ``run(...) -> exit code``.

Lifecycle (uvicorn's server.py shape): start the stack; SIGINT/SIGTERM only set
``should_exit`` (a second one sets ``force_exit``); the main loop refreshes the overview
every ~2 s and checks the flag; then the stack is stopped in order, each process by its
PID within a deadline (a forced exit kills them at once). Nothing it started outlives it.

With ``duration`` the demo runs headless for that long and then checks what reached the
database: exit 0 only if every device of every school has a point saying it answered.
Devices still missing at that moment get a grace period (:func:`check_grace_s`) before
the check fails.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from schoolnet.configfile import ConfigError
from schoolnet.demo.city import SimCity, default_city
from schoolnet.demo.overview import Snapshot, gather, gather_schools, render_lines, render_screen
from schoolnet.demo.stack import DemoStack

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # --duration: some school's data did not reach the database
# 2 is click's exit code for a usage error.
EXIT_STARTUP = 3  # a server or program did not start

REFRESH_S = 2.0
#: Without a terminal, print the overview this often (a log does not need 2 s steps).
LINE_REFRESH_S = 10.0
STOP_TIMEOUT_S = 10.0


@dataclass
class ExitFlags:
    """Set by signal handlers, read by the main loop (handlers do nothing else)."""

    should_exit: bool = False
    force_exit: bool = False
    signals: list[int] = field(default_factory=list)

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        """First signal: stop cleanly; second: stop now."""
        self.signals.append(signum)
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def check_complete(stack: DemoStack) -> list[str]:
    """Why the run is not a success: schools whose devices did not all report reachable."""
    stack.db.flush()
    reasons = []
    for st in gather_schools(stack.db.url, stack.written.inventory):
        if st.missing():
            reasons.append(f"{st.site.id}: no data in the database from "
                           f"{', '.join(st.missing())}")
        if st.down():
            reasons.append(f"{st.site.id}: last point says unreachable: {', '.join(st.down())}")
    return reasons


def _header(stack: DemoStack, started: float, duration: float | None) -> list[str]:
    city = stack.city
    devices = sum(len(s.devices) for s in city.schools)
    elapsed = time.monotonic() - started
    when = f"running {elapsed:.0f} s" + (f" of {duration:.0f} s" if duration else "")
    return [
        f"schoolnet demo — {city.tenant_name} ({city.tenant}): {len(city.schools)} schools, "
        f"{devices} simulated devices — {when}",
        f"database {stack.db.url} · broker {stack.broker.host}:{stack.broker.port} · "
        f"collector {stack.collector_url}/api/status",
        f"run directory {stack.workdir} · Ctrl-C stops everything",
    ]


def run(*, workdir: str | Path | None = None, duration: float | None = None,
        poll_interval_s: float = 10.0, city: SimCity | None = None,
        out: TextIO | None = None, interactive: bool | None = None) -> int:
    """Run the demo until Ctrl-C (or for ``duration`` seconds); returns the exit code.

    ``workdir`` keeps the run directory (configs, logs, data); by default a fresh
    temporary one is used and removed at the end, unless something failed.
    """
    out = out or sys.stdout
    screen = out.isatty() if interactive is None else interactive
    screen = screen and duration is None
    keep = workdir is not None
    run_dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="schoolnet-demo-"))
    flags = ExitFlags()
    # SIGHUP too: a closed terminal must not orphan the servers and programs.
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, flags.handle) for s in handled}

    def say(msg: str) -> None:
        out.write(f"demo: {msg}\n")
        out.flush()

    try:
        try:
            stack = DemoStack(run_dir, city or default_city(), poll_interval_s=poll_interval_s)
        except ImportError as exc:
            say(f"cannot build the simulated city: {exc} "
                "(the demo needs the 'sim' extra: pip install 'schoolnet-monitor[sim]')")
            return EXIT_STARTUP
        except (OSError, ConfigError) as exc:
            say(f"cannot build the simulated city: {exc}")
            return EXIT_STARTUP
        say(f"run directory {run_dir}")
        try:
            stack.start(progress=say, should_stop=lambda: flags.should_exit)
        except FileNotFoundError as exc:
            say(f"could not start: {exc} (./scripts/setup installs the servers)")
            return EXIT_STARTUP
        except (OSError, RuntimeError, TimeoutError) as exc:
            keep = True
            say(f"could not start: {exc}")
            say(f"logs are in {run_dir}")
            return EXIT_STARTUP
        # For whoever wants to verify that nothing outlives the demo (the tests do).
        (run_dir / "pids.json").write_text(json.dumps(stack.pids(), indent=1))
        code = EXIT_CHECK_FAILED  # also when the loop raises: keep the logs
        try:
            code = _main_loop(stack, flags, duration, poll_interval_s, screen, out, say)
        finally:
            keep = keep or code != EXIT_OK
            if screen:
                out.write("\n")
            say("stopping agents, collector, servers" + (" (forced)" if flags.force_exit else ""))
            stack.stop(STOP_TIMEOUT_S, hurry=lambda: flags.force_exit)
            left = stack.pids()
            say(f"still running: {left}" if left else "stopped; nothing left running")
        if code != EXIT_OK:
            say(f"logs are in {run_dir}")
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def _main_loop(stack: DemoStack, flags: ExitFlags, duration: float | None,
               poll_interval_s: float, screen: bool, out: TextIO,
               say: Callable[[str], None]) -> int:
    started = time.monotonic()
    end = started + duration if duration is not None else None
    if screen:
        out.write("\x1b[2J")  # clear once; each frame then redraws in place
    else:
        say(f"all started; polling every {poll_interval_s:g} s"
            + (f", running for {duration:g} s" if duration else "; Ctrl-C stops"))
    next_lines = 0.0
    reasons: list[str] = []
    while not flags.should_exit:
        dead = stack.dead()
        snap: Snapshot = gather(stack.db.url, stack.collector_url, stack.written.inventory,
                                problems=dead)
        if screen:
            out.write(render_screen(snap, _header(stack, started, duration)))
            out.flush()
        elif time.monotonic() >= next_lines:
            out.write(render_lines(snap))
            out.flush()
            next_lines = time.monotonic() + LINE_REFRESH_S
        if dead and duration is not None:
            for msg in dead:
                say(msg)
            return EXIT_CHECK_FAILED
        if end is not None and time.monotonic() >= end:
            # The check is a condition with a deadline, not a snapshot at `end`: on a
            # loaded machine the first polls may land a little later than planned.
            reasons = check_complete(stack)
            if not reasons or time.monotonic() >= end + check_grace_s(poll_interval_s):
                break
        _sleep_until(time.monotonic() + REFRESH_S, flags,
                     end if end is not None and time.monotonic() < end else None)
    if flags.should_exit:
        say("interrupted")
        return EXIT_OK if duration is None else EXIT_CHECK_FAILED
    for msg in reasons:
        say(f"check failed: {msg}")
    if not reasons:
        say("check passed: every device of every school reached the database")
    return EXIT_CHECK_FAILED if reasons else EXIT_OK


def check_grace_s(poll_interval_s: float) -> float:
    """How long after ``--duration`` the check may keep waiting for missing devices."""
    return max(60.0, 6 * poll_interval_s)


def _sleep_until(deadline: float, flags: ExitFlags, end: float | None) -> None:
    """Sleep in short steps so a signal or the end of the run is acted on promptly."""
    if end is not None:
        deadline = min(deadline, end)
    while not flags.should_exit and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
