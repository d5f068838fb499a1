"""The collector's self-metrics, rendered in the Prometheus text format (version 0.0.4).

A small registry instead of ``prometheus_client``: the collector needs counters and
gauges with labels and one histogram, all updated from one event loop thread, and
keeping the dependency list short matters more than the features we would not use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

LabelValues = tuple[str, ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


@dataclass
class _Family:
    name: str
    help: str
    kind: str  # counter | gauge | histogram
    labelnames: tuple[str, ...] = ()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


@dataclass
class Counter(_Family):
    """A monotonically increasing count, optionally per label values."""

    values: dict[LabelValues, float] = field(default_factory=dict)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the series with these label values."""
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        """The current value of one series (0 if never incremented)."""
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        """Text-format lines of this family."""
        out = self.header()
        if not self.labelnames and not self.values:
            out.append(f"{self.name} 0")
        for labels, v in sorted(self.values.items()):
            out.append(f"{self.name}{_labels(self.labelnames, labels)} {_fmt(v)}")
        return out


@dataclass
class Gauge(_Family):
    """A value that goes up and down; either set, or read from a callback at render."""

    values: dict[LabelValues, float] = field(default_factory=dict)
    read: Callable[[], Iterable[tuple[LabelValues, float]]] | None = None

    def set(self, value: float, *labels: str) -> None:
        """Set the series with these label values."""
        self.values[labels] = value

    def render(self) -> list[str]:
        """Text-format lines of this family."""
        out = self.header()
        items = dict(self.values)
        if self.read is not None:
            items.update(self.read())
        for labels, v in sorted(items.items()):
            out.append(f"{self.name}{_labels(self.labelnames, labels)} {_fmt(v)}")
        return out


@dataclass
class Histogram(_Family):
    """Observations counted into cumulative buckets (no labels: one series)."""

    buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.total += value
        self.n += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def render(self) -> list[str]:
        """Text-format lines of this family."""
        out = self.header()
        for bound, c in zip(self.buckets, self.counts, strict=True):
            out.append(f'{self.name}_bucket{{le="{_fmt(bound)}"}} {c}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.n}')
        out.append(f"{self.name}_sum {_fmt(self.total)}")
        out.append(f"{self.name}_count {self.n}")
        return out


class Registry:
    """All metric families of one process, rendered together for ``/metrics``."""

    def __init__(self) -> None:
        self._families: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """Create and register a counter."""
        c = Counter(name, help, "counter", tuple(labelnames))
        self._families.append(c)
        return c

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = (),
              read: Callable[[], Iterable[tuple[LabelValues, float]]] | None = None) -> Gauge:
        """Create and register a gauge (``read`` supplies values at render time)."""
        g = Gauge(name, help, "gauge", tuple(labelnames), read=read)
        self._families.append(g)
        return g

    def histogram(self, name: str, help: str,
                  buckets: tuple[float, ...] | None = None) -> Histogram:
        """Create and register a histogram."""
        h = Histogram(name, help, "histogram")
        if buckets is not None:
            h.buckets = buckets
            h.__post_init__()
        self._families.append(h)
        return h

    def render(self) -> str:
        """The whole exposition, text format 0.0.4."""
        lines: list[str] = []
        for fam in self._families:
            lines.extend(fam.render())
        return "\n".join(lines) + "\n"


class CollectorMetrics:
    """Every self-metric of the collector, in one place (listed in docs/collector.md)."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        p = "schoolnet_collector_"
        self.received = r.counter(p + "messages_received_total",
                                  "MQTT messages received, by topic kind.", ["kind"])
        self.accepted = r.counter(p + "messages_accepted_total",
                                  "Messages that passed validation (points written or status).")
        self.dropped = r.counter(p + "messages_dropped_total",
                                 "Messages dropped, by reason (see docs/collector.md).", ["reason"])
        self.points = r.counter(p + "points_received_total", "Points in accepted messages.")
        self.dropped_points = r.counter(p + "points_dropped_total",
                                        "Points dropped from accepted messages, by reason "
                                        "(series_budget).", ["reason"])
        self.series = r.gauge(p + "site_series", "Distinct series (measurement + tag set) "
                              "seen per site in the current window.", ["tenant", "site"])
        self.duplicates = r.counter(p + "seq_duplicates_total",
                                    "Batches skipped because their seq was seen before.",
                                    ["tenant", "site"])
        self.gaps = r.gauge(p + "seq_gaps", "Seqs below the highest seen that have not "
                            "arrived, per site.", ["tenant", "site"])
        self.written = r.counter(p + "points_written_total", "Points written to the database.")
        self.rejected_lines = r.counter(p + "points_rejected_total",
                                        "Points the database refused (4xx), isolated and dropped.")
        self.write_errors = r.counter(p + "write_errors_total",
                                      "Failed write requests, by kind.", ["kind"])
        self.write_seconds = r.histogram(p + "write_duration_seconds",
                                         "Duration of successful write requests.")
        self.buffer_lines = r.gauge(p + "buffer_lines", "Lines waiting to be written.")
        self.buffer_full = r.counter(p + "buffer_full_total",
                                     "Times intake had to wait because the buffer was full.")
        self.settling_lines = r.gauge(p + "settling_lines", "Lines written but not yet known "
                                      "durable in the database (influx.durable_after_s).")
        self.rewritten_lines = r.counter(p + "rewritten_lines_total", "Lines written again "
                                         "because the database may have lost them (restart).")
        self.db_restarts = r.gauge(p + "database_restarts", "Database restarts seen since "
                                   "start (its incarnation changed).")
        self.spool_bytes = r.gauge(p + "spool_bytes", "Bytes stored in the collector's "
                                   "disk spool (compressed lines not yet durable elsewhere).")
        self.spool_segments = r.gauge(p + "spool_segments", "Segments in the disk spool.")
        self.spool_errors = r.counter(p + "spool_errors_total",
                                      "Failed attempts to store chunks in the disk spool.")
        self.unacked = r.gauge(p + "unacked_messages",
                               "Messages received but not yet acknowledged to the broker.")
        self.mqtt_connected = r.gauge(p + "mqtt_connected", "1 while connected to the broker.")
        self.mqtt_connects = r.counter(p + "mqtt_connects_total", "Successful broker connections.")
