"""Rate math between polls: wraps, resets, gaps, first poll (agent/snmp/rates.py)."""

from __future__ import annotations

import pytest

from agent.snmp.rates import (
    Counter,
    RateSpec,
    RateTracker,
    RowSample,
    counter_delta,
    round_rate,
    row_rates,
    uptime_reset,
)

S = 1_000_000_000  # ns per second
M32 = 2**32
M64 = 2**64

OCTETS = (RateSpec("in_octets", "in_bps", 8.0, link_checked=True),)
ERRORS = (RateSpec("in_errors", "in_errors_ps"),)
BOTH = OCTETS + ERRORS


@pytest.mark.parametrize(
    ("prev", "cur", "bits", "want"),
    [
        pytest.param(100, 350, 64, 250, id="grows"),
        pytest.param(100, 100, 32, 0, id="unchanged"),
        pytest.param(M32 - 10, 5, 32, 15, id="32-bit wrap"),
        pytest.param(M32 - 1, 0, 32, 1, id="32-bit wrap to zero"),
        pytest.param(M64 - 1000, 24, 64, 1024, id="64-bit wrap"),
        pytest.param(1000, 500, 32, None, id="32-bit small step back is a reset"),
        pytest.param(3_000_000_000, 10, 32, 1_294_967_306, id="32-bit big step back is a wrap"),
        pytest.param(2**40, 10, 64, None, id="64-bit back is a reset"),
        pytest.param(M32 // 2, 0, 32, None, id="exactly half the range back is a reset"),
    ],
)
def test_counter_delta(prev: int, cur: int, bits: int, want: int | None) -> None:
    assert counter_delta(prev, cur, bits) == want


@pytest.mark.parametrize(
    ("prev_ticks", "cur_ticks", "elapsed_s", "want"),
    [
        pytest.param(360_000, 366_000, 60.0, False, id="advances with the clock"),
        pytest.param(360_000, 360_000, 60.0, False, id="frozen uptime (static recording)"),
        pytest.param(360_000, 1_500, 60.0, True, id="went back: rebooted"),
        pytest.param(M32 - 3_000, 3_000, 60.0, False, id="own 2^32 wrap after 497 days"),
        pytest.param(M32 - 3_000, 3_000, 10.0, True, id="wrap too large for the time: reboot"),
        pytest.param(360_000, 400_000, 7_200.0, True, id="up 4000 s after a 2 h gap: rebooted"),
        pytest.param(360_000, 1_080_000, 7_200.0, False, id="up long enough for the gap"),
    ],
)
def test_uptime_reset(prev_ticks: int, cur_ticks: int, elapsed_s: float, want: bool) -> None:
    assert uptime_reset(prev_ticks, cur_ticks, elapsed_s) is want


def sample(t_s: float, octets: int | None = None, errors: int | None = None, *, bits: int = 64,
           source: str = "ifHCInOctets", disc: int | None = None,
           speed_bps: float | None = 1e9) -> RowSample:
    counters = {}
    if octets is not None:
        counters["in_octets"] = Counter(octets, bits, source)
    if errors is not None:
        counters["in_errors"] = Counter(errors, 32, "ifInErrors")
    return RowSample(round(t_s * S), counters, disc, speed_bps)


@pytest.mark.parametrize(
    ("prev", "cur", "specs", "want_rates", "want_reason"),
    [
        pytest.param(None, sample(60, 1000), OCTETS, {}, "first", id="first poll: no rate"),
        pytest.param(sample(0, 0, 0), sample(60, 7_500_000, 6), BOTH,
                     {"in_bps": 1e6, "in_errors_ps": 0.1}, "", id="steady traffic"),
        pytest.param(sample(0, M32 - 1_000, bits=32, source="ifInOctets"),
                     sample(10, 1_499_000, bits=32, source="ifInOctets"), OCTETS,
                     {"in_bps": 1.2e6}, "", id="32-bit wrap"),
        pytest.param(sample(0, M64 - 500), sample(1, 500), OCTETS, {"in_bps": 8000.0}, "",
                     id="64-bit wrap"),
        pytest.param(sample(0, 10**12), sample(60, 10**6), OCTETS, {}, "reset",
                     id="64-bit counter back: reset"),
        pytest.param(sample(0, 5000, bits=32, source="ifInOctets"),
                     sample(60, 100, bits=32, source="ifInOctets"), OCTETS, {}, "reset",
                     id="32-bit counter slightly back: reset"),
        pytest.param(sample(0, 1000, 0, disc=0), sample(60, 2000, 0, disc=12345), BOTH, {},
                     "discontinuity", id="ifCounterDiscontinuityTime changed"),
        pytest.param(sample(0, 1000, disc=None), sample(60, 2000, disc=77), OCTETS,
                     {"in_bps": 8000 / 60}, "", id="discontinuity appears: not a change"),
        pytest.param(sample(0, 0, speed_bps=100e6), sample(1, 30_000_000, speed_bps=100e6),
                     OCTETS, {}, "implausible", id="over 2x link speed"),
        pytest.param(sample(0, 0, speed_bps=100e6), sample(1, 24_000_000, speed_bps=100e6),
                     OCTETS, {"in_bps": 192e6}, "", id="under 2x link speed"),
        pytest.param(sample(0, 0, speed_bps=None), sample(1, 2 * 10**12, speed_bps=None),
                     OCTETS, {}, "implausible", id="over 10 Tbit/s with unknown speed"),
        pytest.param(sample(0, 0, speed_bps=0.0), sample(1, 10**12, speed_bps=0.0),
                     OCTETS, {"in_bps": 8e12}, "", id="speed 0 counts as unknown"),
        pytest.param(sample(0, 0), sample(0, 100), OCTETS, {}, "time", id="same timestamp"),
        pytest.param(sample(60, 0), sample(0, 100), OCTETS, {}, "time", id="clock went back"),
        pytest.param(sample(0, 1000, bits=32, source="ifInOctets"), sample(60, 900_000), OCTETS,
                     {}, "", id="source switched HC: new baseline, no rate"),
        pytest.param(sample(0, 1000, 5), sample(60, None, 11), BOTH, {"in_errors_ps": 0.1}, "",
                     id="a counter missing this poll: the others still rate"),
        pytest.param(sample(0, 0, 0), sample(86_400, 86_400 * 1_250_000, 0), BOTH,
                     {"in_bps": 1e7, "in_errors_ps": 0.0}, "",
                     id="long gap with 64-bit counters: the average, no spike"),
    ],
)
def test_row_rates(prev: RowSample | None, cur: RowSample, specs: tuple[RateSpec, ...],
                   want_rates: dict[str, float], want_reason: str) -> None:
    got = row_rates(prev, cur, specs)
    assert got.reason == want_reason
    # Rates are rounded (round_rate): 400 B in 24 s is 133.333 bit/s.
    assert dict(got.rates) == pytest.approx(want_rates, rel=1e-3, abs=5e-4)
    assert all(type(v) is float for v in got.rates.values())
    assert all(v == round_rate(v) for v in got.rates.values())


@pytest.mark.parametrize(("rate", "want"), [
    (133.33333333, 133.333), (1.0004, 1.0), (0.0, 0.0), (12345678.98765, 12345678.988),
    (1 / 3600, 0.0002778),  # one error an hour: not rounded away
    (1 / 60, 0.01667), (0.9999999, 1.0), (2.5e-9, 2.5e-9)])
def test_rates_are_rounded_for_the_wire(rate: float, want: float) -> None:
    assert round_rate(rate) == want


def test_one_error_in_an_hour_long_gap_is_a_small_rate_not_zero() -> None:
    got = row_rates(sample(0, 1000, 5), sample(3600, 1000, 6), BOTH)
    assert got.rates["in_errors_ps"] == 0.0002778 and got.rates["in_bps"] == 0.0


def test_row_rates_device_reset_suppresses_everything() -> None:
    got = row_rates(sample(0, 0), sample(60, 1000), OCTETS, device_reset=True)
    assert got.rates == {} and got.reason == "device_reset"


def test_tracker_reboot_drops_all_baselines() -> None:
    """A reboot seen in sysUpTime: no rate this poll, and normal rates the poll after."""
    tracker = RateTracker()
    assert tracker.device_poll(360_000, 0) is False
    assert tracker.table("if", {"1": sample(0, 10**9)}, OCTETS)["1"].reason == "first"
    assert tracker.device_poll(366_000, 60 * S) is False
    assert tracker.table("if", {"1": sample(60, 10**9 + 750_000)}, OCTETS)["1"].rates == {
        "in_bps": pytest.approx(1e5)}
    # Rebooted: uptime back to 30 s, counters restarted near zero.
    assert tracker.device_poll(3_000, 120 * S) is True
    assert tracker.table("if", {"1": sample(120, 4_000)}, OCTETS)["1"].rates == {}
    assert tracker.device_poll(9_000, 180 * S) is False
    assert tracker.table("if", {"1": sample(180, 754_000)}, OCTETS)["1"].rates == {
        "in_bps": pytest.approx(1e5)}


def test_tracker_reboot_also_resets_a_table_that_failed_that_poll() -> None:
    tracker = RateTracker()
    tracker.device_poll(360_000, 0)
    tracker.table("if", {"1": sample(0, 10**12)}, OCTETS)
    assert tracker.device_poll(1_000, 60 * S) is True  # the table read fails this poll
    tracker.device_poll(7_000, 120 * S)
    # Counters after the reboot are larger than nothing: without the dropped baseline
    # this would be a (wrong) delta against the pre-reboot value.
    assert tracker.table("if", {"1": sample(120, 5 * 10**11)}, OCTETS)["1"].reason == "first"


def test_tracker_failed_table_keeps_its_baseline_across_a_gap() -> None:
    """A table that could not be read keeps its baseline: the next rate spans the gap."""
    tracker = RateTracker()
    tracker.device_poll(None, 0)
    tracker.table("if", {"1": sample(0, 0)}, OCTETS)
    tracker.device_poll(None, 60 * S)  # device did not answer: table() not called
    got = tracker.table("if", {"1": sample(120, 1_500_000)}, OCTETS)["1"]
    assert got.rates == {"in_bps": pytest.approx(1e5)}


def test_tracker_forgets_rows_that_disappear() -> None:
    tracker = RateTracker()
    tracker.table("if", {"1": sample(0, 0), "2": sample(0, 0)}, OCTETS)
    tracker.table("if", {"1": sample(60, 600)}, OCTETS)
    assert tracker.table("if", {"2": sample(120, 1200)}, OCTETS)["2"].reason == "first"


def test_tracker_unknown_uptime_is_no_reset() -> None:
    tracker = RateTracker()
    assert tracker.device_poll(None, 0) is False
    assert tracker.device_poll(100, 60 * S) is False  # first uptime seen: nothing to compare
