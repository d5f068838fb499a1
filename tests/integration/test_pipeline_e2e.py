"""End to end on real servers: snmpsim devices -> agents -> Mosquitto -> collector ->
VictoriaMetrics, for the demo's three-school city.

Everything runs as in production: the agents and the collector are subprocesses started
through their CLIs (by :class:`~schoolnet.demo.stack.DemoStack`, the demo's own stack).
One access point is served by a second snmpsim process, so stopping that process by
its PID makes exactly one device stop answering. Every wait is a condition with a
deadline; nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schoolnet.demo.city import default_city, on_simulator
from schoolnet.demo.recordings import IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS, recording_value
from schoolnet.demo.stack import DemoStack, schoolnet_command
from schoolnet.sim.servers import read_recording, snmpsim_data_file, wait_for
from tests.conftest import loopback_address

pytestmark = pytest.mark.integration

TENANT = "herne"
FLAKY = ("gs-sodingen", "ap-flur")  # served by its own snmpsim, stopped in the last test
#: The poll interval of the test city. Long enough that the timing jitter of one poll
#: on a busy 2-core machine stays well inside the 2% rate tolerance.
POLL_S = 10.0
#: Generous deadlines: a poll cycle plus SNMP timeouts plus batching, several times.
DATA_DEADLINE_S = 60.0


@pytest.fixture(scope="class")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    """The demo's city on real servers, with one AP on its own simulator."""
    city = on_simulator(default_city(), *FLAKY, simulator="flaky")
    s = DemoStack(tmp_path_factory.mktemp("e2e"), city, poll_interval_s=POLL_S,
                  next_address=loopback_address)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        assert s.pids() == {}, "the stack left processes running"


def series(stack: DemoStack, selector: str) -> list[dict[str, Any]]:
    """Raw samples of every series matching ``selector`` (tenant of this test only)."""
    return stack.db.export(selector.replace("{", f'{{tenant="{TENANT}",', 1))


def device_series(stack: DemoStack) -> dict[tuple[str, str], dict[str, Any]]:
    """The ``device_reachable`` series by (site, device)."""
    return {(s["metric"]["site"], s["metric"]["device"]): s
            for s in series(stack, '{__name__="device_reachable"}')}


def wait_for_series(stack: DemoStack, selector: str, what: str) -> list[dict[str, Any]]:
    """Wait until ``selector`` matches at least one series with a sample; return them."""
    found: list[dict[str, Any]] = []

    def check() -> bool:
        found[:] = series(stack, selector)
        return bool(found)

    wait_for(check, DATA_DEADLINE_S, what, interval=0.5)
    return found


def assert_alive(stack: DemoStack) -> None:
    """Fail with the logs' location if a program or server died on its own."""
    assert stack.dead() == []


class TestPipeline:
    """One running city for these tests; it is stopped before the demo-command test."""

    def test_every_device_of_every_school_arrives_with_its_tags(self, stack: DemoStack) -> None:
        expected = {(site.id, d.name): d for site in stack.written.inventory for d in site.devices}
        assert len({site for site, _ in expected}) == 3
        got: dict[tuple[str, str], dict[str, Any]] = {}

        def all_there() -> bool:
            assert_alive(stack)
            got.update(device_series(stack))
            return set(expected) <= set(got)

        try:
            wait_for(all_there, DATA_DEADLINE_S, "every device of every school", interval=0.5)
        except TimeoutError:
            pytest.fail(f"no data from {sorted(set(expected) - set(got))}; logs in {stack.workdir}")
        for (site, name), dev in expected.items():
            labels = got[(site, name)]["metric"]
            assert labels["tenant"] == TENANT
            assert labels["site"] == site
            assert labels["device"] == name
            assert labels["role"] == dev.role
            assert labels["vendor"] == dev.vendor
        assert set(got) == set(expected), "data for devices that are not in the inventory"

    @pytest.mark.parametrize("ifindex", ["2", "3", "10101"])
    def test_interface_counters_equal_what_snmpsim_serves(
        self, stack: DemoStack, ifindex: str,
    ) -> None:
        # The Gymnasium's core switch plays the static cisco-c3560 recording.
        text = read_recording(snmpsim_data_file("network/switch/cisco-c3560"))
        sel = f'{{site="gy-pestalozzi",device="core-sw",ifindex="{ifindex}"}}'
        for fieldname, oid in (("in_octets", IF_HC_IN_OCTETS), ("out_octets", IF_HC_OUT_OCTETS)):
            tag, value = recording_value(text, f"{oid}.{ifindex}")
            assert tag == "70"  # Counter64, no variation: the same value on every poll
            found = wait_for_series(
                stack, sel.replace("{", f'{{__name__="interface_{fieldname}",'),
                f"interface_{fieldname} of core-sw ifIndex {ifindex}")
            assert len(found) == 1
            assert set(found[0]["values"]) == {int(value)}

    def test_in_bps_of_each_uplink_is_within_2_percent_of_the_simulated_rate(
        self, stack: DemoStack,
    ) -> None:
        for school in stack.city.schools:
            for fieldname, mbit in (("in_bps", school.traffic_in_mbit),
                                    ("out_bps", school.traffic_out_mbit)):
                sel = (f'{{__name__="interface_{fieldname}",site="{school.id}",'
                       f'device="router",ifname="WAN"}}')
                found = wait_for_series(stack, sel, f"{fieldname} of {school.id}'s uplink")
                assert len(found) == 1
                expected = mbit * 1_000_000
                for v in found[0]["values"]:
                    assert abs(v - expected) / expected < 0.02, (school.id, fieldname, v, expected)

    def test_a_device_that_stops_answering_becomes_unreachable_while_the_others_keep_arriving(
        self, stack: DemoStack,
    ) -> None:
        site, device = FLAKY
        wait_for(lambda: (site, device) in device_series(stack), DATA_DEADLINE_S,
                 f"first data from {site}/{device}", interval=0.5)
        flaky = stack.simulators["flaky"]
        assert flaky.pid is not None and flaky.pid != stack.simulators["main"].pid
        flaky.stop()
        stopped_ms = time.time() * 1000
        others = {(s.id, d.name) for s in stack.written.inventory for d in s.devices} - {FLAKY}

        def after_stop(s: dict[str, Any]) -> list[float]:
            return [v for v, t in zip(s["values"], s["timestamps"], strict=True) if t > stopped_ms]

        def flaky_down() -> bool:
            s = device_series(stack).get(FLAKY)
            return s is not None and 0 in after_stop(s)

        wait_for(flaky_down, DATA_DEADLINE_S, f"{site}/{device} to be reported unreachable",
                 interval=0.5)
        assert set(after_stop(device_series(stack)[FLAKY])) == {0}

        def others_arrive() -> bool:
            by_key = device_series(stack)
            return all(key in by_key and after_stop(by_key[key]) for key in others)

        wait_for(others_arrive, DATA_DEADLINE_S, "points from every other device after the stop",
                 interval=0.5)
        by_key = device_series(stack)
        for key in others:
            assert set(after_stop(by_key[key])) == {1}, key
        assert_alive(stack)


def _running(pid: int, started_as: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return started_as in cmdline  # a reused PID belongs to someone else


def test_demo_command_runs_headless_and_exits_0_leaving_nothing_running(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [*schoolnet_command(), "demo", "--duration", "12", "--poll-interval", "4",
         "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check passed" in proc.stdout
    # Not a terminal: the overview degrades to plain lines, one per school.
    for school in default_city().schools:
        assert f"{school.id}: agent " in proc.stdout
    pids = json.loads((workdir / "pids.json").read_text())
    assert len(pids) == 3 + 1 + 3  # db, broker, snmpsim; collector; three agents
    for name, pid in pids.items():
        # Every process of the demo has a path below its run directory in its command line.
        assert not _running(pid, str(workdir)), f"{name} ({pid}) still runs"


def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [*schoolnet_command(), "demo", "--poll-interval", "4", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # pids.json is written once everything has started.
        wait_for(lambda: (workdir / "pids.json").exists() or proc.poll() is not None, 120,
                 "the demo to start")
        assert proc.poll() is None, proc.communicate()[0]
        pids = json.loads((workdir / "pids.json").read_text())
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopped; nothing left running" in out
    for name, pid in pids.items():
        assert not _running(pid, str(workdir)), f"{name} ({pid}) still runs"
