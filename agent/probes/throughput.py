"""Throughput tests against the NOC's iperf3 server (``probe_throughput``).

Debian's ``iperf3`` does the measuring (``-J``: one JSON document per run); the agent
plans, caps, runs and reads it:

* **down** is ``iperf3 -R`` (the NOC sends, the school receives), **up** the plain
  direction; one after the other, never both at once.
* **Caps.** The duration is iperf3's own ``-t`` (at most 60 s by config, plus one omitted
  second of TCP slow start) with a hard wall-clock kill behind it. Bytes: iperf3 cannot
  combine ``-t`` with ``-n``, so the agent paces iperf3 at ``rate_cap_ratio`` x the
  contracted rate (``-b``) and shortens the test until ``rate x time`` fits in
  ``max_mbyte``. A line that is faster than its contract therefore reads as at most
  ``rate_cap_ratio`` x contract — the question is whether it reaches the contract.
* **When.** :class:`ThroughputSource` is polled every minute by its ``RunningSource``;
  it runs tests only when :class:`~agent.probes.schedule.ThroughputSchedule` says a slot
  is due (never in lesson hours). ``schoolnet agent probe --throughput`` calls
  :meth:`ThroughputSource.run_now`.

A result carries the contracted rate and ``ratio_to_contract`` = measured / contracted.
TCP goodput is ~95 % of the line rate (Ethernet, IP and TCP headers), so a line that
delivers its contract reads about 0.95.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from agent.probes.schedule import ThroughputSchedule
from schoolnet.inventory import Uplink
from schoolnet.probeconfig import ThroughputSettings
from schoolnet.wire import FieldValue, Point

log = logging.getLogger(__name__)

#: Seconds of TCP slow start iperf3 runs first and leaves out of the result (``-O``).
OMIT_S: Final = 1
#: Beyond the planned time: iperf3's own connect and result exchange, then we kill it.
KILL_GRACE_S: Final = 5.0


@dataclass(frozen=True)
class TestPlan:
    """One direction's iperf3 run, after the caps."""

    direction: str
    duration_s: int
    rate_cap_bps: int
    #: The byte cap made the test shorter (or slower) than configured.
    capped: bool

    @property
    def max_bytes(self) -> int:
        """Upper bound of the bytes this test moves (omitted second included)."""
        return self.rate_cap_bps * (self.duration_s + OMIT_S) // 8


def plan_test(settings: ThroughputSettings, direction: str, contract_mbit: float) -> TestPlan:
    """Duration and pacing for one direction so that duration and bytes stay capped."""
    rate = round(settings.rate_cap_ratio * contract_mbit * 1e6)
    budget_bits = settings.max_mbyte * 1e6 * 8
    duration = int(settings.duration_s)
    capped = False
    if rate * (duration + OMIT_S) > budget_bits:
        capped = True
        duration = max(1, int(budget_bits / rate) - OMIT_S)
        if rate * (duration + OMIT_S) > budget_bits:  # even 1 s is too much: slow down
            rate = int(budget_bits / (duration + OMIT_S))
    return TestPlan(direction, duration, rate, capped)


def iperf3_command(server: str, port: int, plan: TestPlan, connect_timeout_s: float,
                   binary: str = "iperf3") -> list[str]:
    """The iperf3 client command line of one planned test."""
    cmd = [binary, "-c", server, "-p", str(port), "-J", "-t", str(plan.duration_s),
           "-O", str(OMIT_S), "-b", str(plan.rate_cap_bps),
           "--connect-timeout", str(int(connect_timeout_s * 1000))]
    if plan.direction == "down":
        cmd.append("-R")
    return cmd


@dataclass(frozen=True)
class Iperf3Result:
    """What one iperf3 run measured (receiver side), or why it did not."""

    ok: bool
    bits_per_second: float | None = None
    bytes: int = 0
    seconds: float = 0.0
    retransmits: int | None = None
    error: str = ""

    @property
    def retryable(self) -> bool:
        """Nothing was measured (server busy, unreachable): worth another try later."""
        return not self.ok and self.bytes == 0


def _obj(val: Any) -> dict[str, Any]:
    return val if isinstance(val, dict) else {}


def parse_iperf3(text: str) -> Iperf3Result:
    """Read ``iperf3 -J`` output (pure): the receiver's rate, bytes and retransmits."""
    try:
        doc: Any = json.loads(text)
    except ValueError:
        return Iperf3Result(False, error=f"iperf3 printed no JSON: {text[:120]!r}")
    if not isinstance(doc, dict):
        return Iperf3Result(False, error="iperf3 JSON is not an object")
    end = _obj(doc.get("end"))
    received = _obj(end.get("sum_received"))
    sent = _obj(end.get("sum_sent"))
    bps = received.get("bits_per_second")
    nbytes = int(received.get("bytes") or 0)
    retrans = sent.get("retransmits")
    if doc.get("error"):
        return Iperf3Result(False, bytes=nbytes, error=str(doc["error"])[:200])
    if not isinstance(bps, int | float) or nbytes <= 0:
        return Iperf3Result(False, bytes=nbytes, error="iperf3 reported no received data")
    return Iperf3Result(True, float(bps), nbytes, float(received.get("seconds") or 0.0),
                        int(retrans) if isinstance(retrans, int) else None)


Runner = Callable[[list[str], float], Awaitable[tuple[int, str]]]


async def run_process(cmd: list[str], hard_timeout_s: float) -> tuple[int, str]:
    """Run ``cmd``; kill it after ``hard_timeout_s`` (or when cancelled). (rc, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), hard_timeout_s)
    except TimeoutError:
        return -1, json.dumps({"error": f"killed after the hard limit of {hard_timeout_s:g} s"})
    finally:
        if proc.returncode is None:  # timed out or cancelled: this process is ours to end
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
    text = out.decode("utf-8", "replace")
    if not text.strip():
        text = json.dumps({"error": err.decode("utf-8", "replace").strip()[:200] or
                           f"iperf3 exited with {proc.returncode}"})
    return proc.returncode or 0, text


class ThroughputSource:
    """``probe:throughput``: scheduled iperf3 tests, down and up, against the NOC."""

    name = "probe:throughput"
    #: Polled every minute: most polls find no slot due and return nothing.
    interval_s = 60.0

    def __init__(self, settings: ThroughputSettings, uplink: Uplink,
                 schedule: ThroughputSchedule, *, runner: Runner = run_process,
                 binary: str | None = None) -> None:
        self.settings = settings
        self.uplink = uplink
        self.schedule = schedule
        self.runner = runner
        self.binary = binary or shutil.which("iperf3") or "iperf3"
        per_test = settings.duration_s + OMIT_S + settings.connect_timeout_s + KILL_GRACE_S
        #: Bound for one gather (RunningSource): every direction's hard limit.
        self.timeout_s = len(settings.directions) * per_test + 5.0
        self.runs = 0

    def _contract(self, direction: str) -> float:
        return self.uplink.down_mbit if direction == "down" else self.uplink.up_mbit

    async def collect(self, now_ns: int) -> list[Point]:
        """Run the tests if a slot is due at ``now_ns``; else nothing."""
        slot = self.schedule.due(now_ns / 1e9)
        if slot is None:
            return []
        points, retry = await self._run(now_ns, scheduled=True)
        self.schedule.record(slot, finished=not retry)
        return points

    async def run_now(self, now_ns: int) -> list[Point]:
        """Run the tests now, whatever the schedule says (the manual ``probe`` command)."""
        points, _ = await self._run(now_ns, scheduled=False)
        return points

    async def _run(self, now_ns: int, *, scheduled: bool) -> tuple[list[Point], bool]:
        self.runs += 1
        points: list[Point] = []
        retry = False
        for direction in self.settings.directions:
            contract = self._contract(direction)
            plan = plan_test(self.settings, direction, contract)
            cmd = iperf3_command(self.settings.server, self.settings.port, plan,
                                 self.settings.connect_timeout_s, self.binary)
            hard = plan.duration_s + OMIT_S + self.settings.connect_timeout_s + KILL_GRACE_S
            try:
                _, text = await self.runner(cmd, hard)
            except OSError as exc:  # iperf3 missing or not executable
                text = json.dumps({"error": f"cannot run {cmd[0]}: {exc.strerror or exc}"})
            result = parse_iperf3(text)
            retry = retry or result.retryable
            points.append(self._point(result, plan, contract, now_ns, scheduled))
            if result.retryable:
                break  # the server is busy or away: the other direction would be too
        log.info("throughput test (%s): %s", "scheduled" if scheduled else "manual",
                 ", ".join(f"{p.tags['direction']} {p.fields.get('rate_mbps', 'failed')}"
                           for p in points))
        return points, retry

    def _point(self, r: Iperf3Result, plan: TestPlan, contract: float, now_ns: int,
               scheduled: bool) -> Point:
        fields: dict[str, FieldValue] = {
            "ok": 1 if r.ok else 0,
            "contract_mbps": float(contract),
            "planned_s": float(plan.duration_s),
            "rate_cap_mbps": plan.rate_cap_bps / 1e6,
            "capped": 1 if plan.capped else 0,
            "scheduled": 1 if scheduled else 0,
            "bytes": r.bytes,
        }
        if r.ok and r.bits_per_second is not None:
            rate = r.bits_per_second / 1e6
            fields.update(rate_mbps=rate, ratio_to_contract=rate / contract,
                          duration_s=r.seconds)
            if r.retransmits is not None:
                fields["retransmits"] = r.retransmits
        else:
            # No ratio on a failed test: a test that could not run says nothing about
            # the line's speed (a dead uplink is the ICMP probe's finding).
            fields["error"] = r.error
        target = self.settings.server
        return Point("probe_throughput", {"target": target, "direction": plan.direction},
                     fields, now_ns)
