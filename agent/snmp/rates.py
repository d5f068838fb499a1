"""Per-second rates from SNMP counters between two polls: wraps, resets and gaps.

Pure logic, no I/O, no clock: every input (values, timestamps, uptimes) is passed in,
so each rule is a row in a table-driven test (tests/unit/test_snmp_rates.py).

The rules, in the order they are applied to one table row (an interface):

* **First poll** of a row (or a row whose counter came from another column last time,
  e.g. ``ifHCInOctets`` then ``ifInOctets``): no rate, the value becomes the baseline.
* **Device reset**: ``sysUpTime`` went backwards (other than its own 2^32 wrap after
  497 days), or the device has been up for less time than has passed since the last
  poll (it rebooted during a gap). Every row of the device: no rate this poll.
* **Discontinuity**: ``ifCounterDiscontinuityTime`` changed (counters were reset or the
  interface was re-created). That row: no rate.
* **Wrap or reset**: a counter that went down wrapped once if the wrapped increase is
  below half its range (a 32-bit octet counter near 2^32 → small), otherwise it was
  reset (a 64-bit counter never wraps in practice). A reset: that row, no rate.
* **Implausible**: a bit rate above twice the link speed, or above 10 Tbit/s when the
  speed is unknown, is a reset the other rules missed. That row: no rate.

"No rate" always means the raw counters still go out and the new values become the
baseline, so a reboot or a long gap costs one missing rate point, never a spike. The
time base is the difference of the two polls' timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

#: Rates of 1/s and more are rounded to this many decimals (of bit/s, packets/s, ...);
#: smaller ones keep RATE_DIGITS significant digits (one error an hour is 0.0002778/s).
RATE_DECIMALS: Final = 3
RATE_DIGITS: Final = 4
#: A bit rate above this many times the link speed is not traffic.
MAX_RATE_FACTOR: Final = 2.0
#: Ceiling for a bit rate when the link speed is unknown (10 Tbit/s).
UNKNOWN_SPEED_MAX_BPS: Final = 10e12
#: sysUpTime is TimeTicks: hundredths of a second in 32 bits.
TICKS_PER_S: Final = 100
UPTIME_MODULUS: Final = 2**32
#: Clock slack between our polls and the device's uptime (request latency, rounding).
UPTIME_SLACK_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Counter:
    """One raw counter value: its width and the column it came from."""

    value: int
    bits: int  # 32 or 64
    source: str = ""


@dataclass(frozen=True, slots=True)
class RateSpec:
    """A rate field computed from a counter field: ``rate = delta * scale / seconds``.

    ``link_checked`` rates are bit rates compared against the row's link speed.
    """

    counter: str
    rate: str
    scale: float = 1.0
    link_checked: bool = False


@dataclass(frozen=True, slots=True)
class RowSample:
    """What one poll saw of one row: time, counters, and the reset markers."""

    time_ns: int
    counters: Mapping[str, Counter]
    discontinuity: int | None = None  # ifCounterDiscontinuityTime, ticks
    speed_bps: float | None = None  # link speed, for the plausibility check


@dataclass(frozen=True, slots=True)
class RateResult:
    """The rates of one row, or why there are none (``reason``, "" when computed)."""

    rates: Mapping[str, float]
    reason: str = ""


def counter_delta(prev: int, cur: int, bits: int) -> int | None:
    """How much a ``bits``-wide counter grew from ``prev`` to ``cur``; None for a reset.

    A decrease is one wrap when the wrapped increase is below half the counter's range;
    a larger "increase" is a counter that was reset (or a device that rebooted).
    """
    if cur >= prev:
        return cur - prev
    modulus = 1 << bits
    wrapped = cur + modulus - prev
    if 0 <= wrapped < modulus // 2:
        return wrapped
    return None


def uptime_reset(prev_ticks: int, cur_ticks: int, elapsed_s: float) -> bool:
    """Whether the device restarted between two polls ``elapsed_s`` apart."""
    if cur_ticks < prev_ticks:
        # sysUpTime itself wraps after 2^32 ticks (497 days): that is not a reboot if
        # the wrapped advance matches the time that passed.
        wrapped_s = (cur_ticks + UPTIME_MODULUS - prev_ticks) / TICKS_PER_S
        return not wrapped_s <= elapsed_s * 1.1 + UPTIME_SLACK_S
    # Up for less time than since the last poll: it rebooted during the gap (this
    # catches a reboot even when the new uptime has grown past the old one).
    return cur_ticks / TICKS_PER_S + UPTIME_SLACK_S < elapsed_s


def round_rate(rate: float) -> float:
    """``rate`` rounded for the wire: 3 decimals from 1/s up, else 4 significant digits.

    A thousandth of a bit (or packet) per second is far below any counter's resolution;
    the rounding keeps payloads short and lets the collector write most values without
    the slow shortest-repr path (schoolnet/_speedups.c). Small rates (errors, discards
    after a gap) keep their relative precision instead of rounding to 0.
    """
    if rate == 0 or abs(rate) >= 1:
        return round(rate, RATE_DECIMALS)
    return float(f"{rate:.{RATE_DIGITS}g}")


def row_rates(
    prev: RowSample | None,
    cur: RowSample,
    specs: Sequence[RateSpec],
    *,
    device_reset: bool = False,
) -> RateResult:
    """The rates of one row between ``prev`` and ``cur`` (see the module rules)."""
    if prev is None:
        return RateResult({}, "first")
    if device_reset:
        return RateResult({}, "device_reset")
    elapsed_s = (cur.time_ns - prev.time_ns) / 1e9
    if elapsed_s <= 0:
        return RateResult({}, "time")
    if (prev.discontinuity is not None and cur.discontinuity is not None
            and prev.discontinuity != cur.discontinuity):
        return RateResult({}, "discontinuity")
    rates: dict[str, float] = {}
    speed = cur.speed_bps if cur.speed_bps and cur.speed_bps > 0 else None
    ceiling = speed * MAX_RATE_FACTOR if speed else UNKNOWN_SPEED_MAX_BPS
    for spec in specs:
        now = cur.counters.get(spec.counter)
        before = prev.counters.get(spec.counter)
        if now is None or before is None or now.source != before.source or now.bits != before.bits:
            continue  # no common baseline for this counter: skip it, not the row
        delta = counter_delta(before.value, now.value, now.bits)
        if delta is None:
            return RateResult({}, "reset")
        rate = delta * spec.scale / elapsed_s
        if spec.link_checked and rate > ceiling:
            return RateResult({}, "implausible")
        rates[spec.rate] = round_rate(float(rate))
    return RateResult(rates)


class RateTracker:
    """The baselines of one device: its uptime and the last sample of every row.

    :meth:`device_poll` is called once per poll with the uptime (if read), then
    :meth:`table` once per table that was read; a table that failed is not passed, so
    its baselines survive until the next successful read (a longer time base, no spike).
    """

    def __init__(self) -> None:
        self._uptime: tuple[int, int] | None = None  # (ticks, time_ns)
        self._rows: dict[str, dict[str, RowSample]] = {}

    def device_poll(self, uptime_ticks: int | None, time_ns: int) -> bool:
        """Record this poll's sysUpTime; True when the device restarted since the last.

        A restart drops every baseline, also of tables that fail to be read this poll,
        so the next successful read of each starts afresh.
        """
        if uptime_ticks is None:
            return False
        reset = False
        if self._uptime is not None:
            prev_ticks, prev_ns = self._uptime
            reset = uptime_reset(prev_ticks, uptime_ticks, (time_ns - prev_ns) / 1e9)
        self._uptime = (uptime_ticks, time_ns)
        if reset:
            self._rows.clear()
        return reset

    def table(
        self, name: str, samples: Mapping[str, RowSample], specs: Sequence[RateSpec]
    ) -> dict[str, RateResult]:
        """Rates for every row of table ``name``; the samples become the new baselines.

        Rows absent from ``samples`` (interfaces that disappeared) are forgotten.
        """
        before = self._rows.get(name, {})
        out = {key: row_rates(before.get(key), sample, specs) for key, sample in samples.items()}
        self._rows[name] = dict(samples)
        return out
