"""Scheduled throughput tests never run in lesson hours (time injected, nothing waits).

A fake iperf3 runner records when a test would have started; the schedule is driven
minute by minute across whole weeks, through the same ``collect(now_ns)`` the agent's
RunningSource calls, and once through a RunningSource on a fake clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from agent.probes.schedule import MAX_ATTEMPTS, ThroughputSchedule, site_offset_s
from agent.probes.throughput import ThroughputSource
from agent.running import Intake, RunningSource
from schoolnet.alerting import default_alerting
from schoolnet.calendars import SchoolCalendar, load_holiday_file, resolve_holiday_file
from schoolnet.inventory import Uplink
from schoolnet.probeconfig import ThroughputSettings
from tests.unit.agent_fakes import FakeClock

BERLIN = ZoneInfo("Europe/Berlin")
NRW = resolve_holiday_file("de-nw")
UPLINK = Uplink(kind="dsl", down_mbit=50.0, up_mbit=10.0, device="router", interface="WAN")
OK = json.dumps({"end": {"sum_received": {"bytes": 10**7, "seconds": 3.0,
                                          "bits_per_second": 47e6},
                         "sum_sent": {"retransmits": 0}}})
BUSY = json.dumps({"end": {}, "error": "the server is busy running a test. try again later"})


class FakeIperf:
    """Records each run's (simulated) start time; answers from a script of outputs."""

    def __init__(self, outputs: list[str] | None = None) -> None:
        self.outputs = outputs or []
        self.calls: list[tuple[float, list[str]]] = []
        self.now = 0.0

    async def __call__(self, cmd: list[str], hard_timeout_s: float) -> tuple[int, str]:
        self.calls.append((self.now, cmd))
        return 0, self.outputs.pop(0) if self.outputs else OK


def nrw_calendar() -> SchoolCalendar:
    """The default tenant calendar: NRW holidays, lessons 07:30-16:00 Mon-Fri."""
    return default_alerting().calendar()


def make(settings: ThroughputSettings, calendar: SchoolCalendar,
         runner: FakeIperf) -> ThroughputSource:
    test_s = 2 * (settings.duration_s + 1 + settings.connect_timeout_s)
    schedule = ThroughputSchedule(settings, calendar, site_key="herne/gs-park", test_s=test_s)
    return ThroughputSource(settings, UPLINK, schedule, runner=runner)


def drive(src: ThroughputSource, runner: FakeIperf, start: dt.datetime, days: float) -> None:
    """Call collect() once a minute (as the agent does) from ``start`` for ``days``."""
    t = start.timestamp()
    end = t + days * 86400

    async def loop() -> None:
        nonlocal t
        while t < end:
            runner.now = t
            await src.collect(int(t * 1e9))
            t += 60.0

    asyncio.run(loop())


def starts(runner: FakeIperf) -> list[float]:
    """Start time of each test slot (the first direction of each run)."""
    return [t for t, cmd in runner.calls if "-R" in cmd]


def test_two_weeks_of_ticks_run_twice_a_day_and_never_in_lessons() -> None:
    cal = nrw_calendar()
    settings = ThroughputSettings(server="198.51.100.20")
    runner = FakeIperf()
    src = make(settings, cal, runner)
    # 2027-01-11 (Mon) .. 2027-01-24 (Sun): school weeks with their weekends.
    drive(src, runner, dt.datetime(2027, 1, 11, tzinfo=BERLIN), days=14)
    assert len(runner.calls) == 14 * 2 * 2  # 2 slots a day, down and up each
    offset = site_offset_s("herne/gs-park", settings.spread_min)
    assert 0 <= offset < 30 * 60
    for t, _ in runner.calls:
        assert not cal.is_lesson_time(t), dt.datetime.fromtimestamp(t, BERLIN)
        assert not cal.is_lesson_time(t + src.schedule.test_s)
    for t in starts(runner):
        local = dt.datetime.fromtimestamp(t - offset, BERLIN)
        # The first agent tick at or after the site's start time: within a minute.
        assert (local.hour, local.minute) in ((6, 30), (17, 0)), local


def test_a_slot_in_lessons_is_skipped_on_school_days_and_run_on_free_days() -> None:
    # The loader refuses such a schedule; here the calendar is changed behind its back
    # (lessons from 06:00) to show the run-time guard on its own.
    cal = SchoolCalendar(lesson_start=dt.time(6, 0), lesson_end=dt.time(16, 0),
                         holidays=[load_holiday_file(NRW)])
    runner = FakeIperf()
    src = make(ThroughputSettings(server="198.51.100.20", spread_min=0), cal, runner)
    # Fri 2027-01-15 .. Mon 2027-01-18.
    drive(src, runner, dt.datetime(2027, 1, 15, tzinfo=BERLIN), days=4)
    local = [dt.datetime.fromtimestamp(t, BERLIN) for t in starts(runner)]
    assert [(d.day, d.hour) for d in local] == [(15, 17), (16, 6), (16, 17), (17, 6),
                                                (17, 17), (18, 17)]


def test_holidays_are_free_days() -> None:
    cal = nrw_calendar()
    runner = FakeIperf()
    src = make(ThroughputSettings(server="198.51.100.20", schedule=(dt.time(12, 0),),
                                  spread_min=0), cal, runner)
    # 2027-01-04 (Mon) is in the NRW Christmas holidays, 2027-01-11 (Mon) is not.
    drive(src, runner, dt.datetime(2027, 1, 4, tzinfo=BERLIN), days=1)
    drive(src, runner, dt.datetime(2027, 1, 11, tzinfo=BERLIN), days=1)
    assert cal.day_off(dt.date(2027, 1, 4)) is not None
    assert [dt.datetime.fromtimestamp(t, BERLIN).day for t in starts(runner)] == [4]


def test_a_busy_server_is_retried_within_the_window_then_given_up() -> None:
    runner = FakeIperf([BUSY, BUSY])  # busy twice, then fine
    settings = ThroughputSettings(server="198.51.100.20", schedule=(dt.time(6, 30),),
                                  spread_min=0, window_min=20)
    src = make(settings, nrw_calendar(), runner)
    drive(src, runner, dt.datetime(2027, 1, 11, 6, 0, tzinfo=BERLIN), days=0.1)
    minutes = [dt.datetime.fromtimestamp(t, BERLIN).minute for t, _ in runner.calls]
    # 06:30 busy (down only: up would be busy too), 06:31 busy, 06:32 down + up.
    assert minutes == [30, 31, 32, 32]

    always_busy = FakeIperf([BUSY] * 100)
    src = make(settings, nrw_calendar(), always_busy)
    drive(src, always_busy, dt.datetime(2027, 1, 11, 6, 0, tzinfo=BERLIN), days=1)
    assert len(always_busy.calls) == MAX_ATTEMPTS


def test_failed_tests_carry_no_ratio() -> None:
    runner = FakeIperf([BUSY])
    src = make(ThroughputSettings(server="198.51.100.20"), nrw_calendar(), runner)
    points = asyncio.run(src.run_now(1_800_000_000 * 10**9))
    assert len(points) == 1 and points[0].fields["ok"] == 0
    assert "ratio_to_contract" not in points[0].fields and "busy" in str(points[0].fields["error"])
    points = asyncio.run(src.run_now(1_800_000_000 * 10**9))
    assert [p.tags["direction"] for p in points] == ["down", "up"]
    assert points[0].fields["ratio_to_contract"] == pytest.approx(47 / 50)
    assert points[1].fields["ratio_to_contract"] == pytest.approx(4.7)
    assert points[0].fields["scheduled"] == 0


async def _through_running_source() -> list[float]:
    clock = FakeClock(int(dt.datetime(2027, 1, 11, 6, 0, tzinfo=BERLIN).timestamp() * 1e9))
    runner = FakeIperf()
    src = make(ThroughputSettings(server="198.51.100.20", schedule=(dt.time(6, 30),),
                                  spread_min=0), nrw_calendar(), runner)
    intake = Intake()
    rs = RunningSource(src, intake, interval_s=src.interval_s, timeout_s=src.timeout_s,
                       jitter_s=0, clock=clock)
    task = asyncio.create_task(rs.run())
    for _ in range(24 * 60):  # a whole day of agent ticks, on the fake clock
        await clock.wait_sleepers(1)
        clock.advance(60)
        runner.now = clock.time_ns() / 1e9
    rs.stop()
    clock.advance(60)
    await asyncio.wait_for(task, 5)
    assert intake.queue.qsize() == 1  # one gather with points: the 06:30 test
    return [t for t, _ in runner.calls]


def test_the_running_source_on_a_fake_clock_runs_the_slot_once() -> None:
    calls = asyncio.run(_through_running_source())
    local = [dt.datetime.fromtimestamp(t, BERLIN) for t in calls]
    assert [(d.hour, d.minute) for d in local] == [(6, 30), (6, 30)]
