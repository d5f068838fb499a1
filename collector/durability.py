"""When is a write durable? For databases that acknowledge before their data is on disk.

InfluxDB (1.8, 2.x, 3.x) answers a write only after its WAL has the points, so a 204
means durable. VictoriaMetrics answers 204 as soon as the rows are in memory: it turns
them into searchable in-memory parts every second and persists those every 5 s, so a
SIGKILL, an OOM kill or a power cut loses the last ~6 s of acknowledged writes (its
docs, ``lib/storage/partition.go``: ``rawRowsFlushInterval``/
``inmemoryPartsFlushInterval``; measured with the Debian package 1.79.5: a SIGKILL
after 12 s of writes every 0.5 s kept the first 6 s, lost the last 6 s). A collector
that forgot what it wrote would lose exactly those seconds whenever the database dies.

So the writer keeps every written line (in its buffer, on disk with the spool) until
the line is provably durable, and writes it again when the database may have lost it:

* ``durable_after_s`` (``influx.durable_after_s``): how long the database needs to make
  an acknowledged write durable. 0 for InfluxDB; for VictoriaMetrics 30 (6 s plus a
  wide margin for a loaded disk).
* The *incarnation* of the database process (VictoriaMetrics and anything else with a
  Prometheus ``process_start_time_seconds`` on ``/metrics``) is probed about once a
  second. If the incarnation seen now is the one seen before a line was written, the
  process that acknowledged the line is still alive; once it has been alive for
  ``durable_after_s`` after the write, the line is durable and is released. If the
  incarnation changed, the database restarted, and every line not yet released is
  written again (replays are harmless: same series and timestamp; VictoriaMetrics needs
  ``-dedup.minScrapeInterval=1ms`` to keep one sample per timestamp).
* Without an incarnation (the database does not tell), the writer falls back to time
  alone and writes everything unreleased again after any failed write request: a
  database that restarts between two successful writes, within ``durable_after_s``,
  could then still lose lines. The docs say so.

:class:`DurabilityWatch` is the pure decision logic (clock injected, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with the lines that are written but not yet known durable."""

    #: Release the lines written at or before this (monotonic) time; None: release none.
    release_before: float | None = None
    #: The database may have lost them: write every unreleased line again.
    rewind: bool = False


KEEP = Decision()


class DurabilityWatch:
    """Tracks the database's incarnation and turns probes into :class:`Decision` s."""

    def __init__(self, durable_after_s: float) -> None:
        self.durable_after_s = max(0.0, durable_after_s)
        #: Probe about every second, more often when the window is short.
        self.probe_interval_s = min(1.0, self.durable_after_s / 4) if self.durable_after_s else 0.0
        self.incarnation: str | None = None
        #: When the current incarnation was first seen; lines written before it were
        #: written to an unknown process.
        self.since: float | None = None
        #: False once the database said it has no incarnation (fall back to time).
        self.supported = True
        #: Database restarts seen (incarnation changes).
        self.restarts = 0
        self.last_probe: float | None = None

    @property
    def immediate(self) -> bool:
        """Whether an acknowledged write is durable at once (``durable_after_s`` 0)."""
        return self.durable_after_s == 0

    def needs_probe(self, now: float, *, settling: bool) -> bool:
        """Whether to probe now: before the first write, then about once a second."""
        if self.immediate or not self.supported:
            return False
        if self.incarnation is None:
            return True
        if not settling:
            return False
        return self.last_probe is None or now - self.last_probe >= self.probe_interval_s

    def observe(self, incarnation: str | None, now: float) -> Decision:
        """A probe answered at ``now`` with ``incarnation`` (None: the database has none)."""
        self.last_probe = now
        if self.immediate:
            return Decision(release_before=now)
        if incarnation is None:
            self.supported = False
            return self.tick(now)
        if incarnation != self.incarnation:
            first = self.incarnation is None
            self.incarnation, self.since = incarnation, now
            if not first:
                self.restarts += 1
            # Lines written before this probe went to a process that may be gone (or,
            # at the first probe, to one we never identified): write them again.
            return Decision(rewind=True)
        return Decision(release_before=now - self.durable_after_s)

    def tick(self, now: float) -> Decision:
        """Without probes (immediate, or no incarnation): release by time alone."""
        if self.immediate:
            return Decision(release_before=now)
        if self.supported:
            return KEEP
        return Decision(release_before=now - self.durable_after_s)

    def write_failed(self) -> bool:
        """A write request failed (retryable); True: rewind (only without incarnation).

        With an incarnation the next probe tells whether the database restarted; without
        one, a failed write is the only hint that it may have.
        """
        return not self.immediate and not self.supported
