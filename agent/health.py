"""The agent's self-health source: one ``agent`` point per poll interval.

The point has one tag, ``version`` (the agent's version), and these fields. Counters
count since the agent process started (dashboards use ``non_negative_difference``, so a
restart is no spike); gauges are the value at the time of the point.

=========================  ========  =====================================================
field                      unit      meaning
=========================  ========  =====================================================
uptime_s                   s         gauge: time since the agent started
sources                    count     gauge: running sources (this one included)
queue_depth                count     gauge: collections waiting between sources and spool
spool_batches              count     gauge: batches in the spool, not yet acknowledged
spool_bytes                bytes     gauge: stored (compressed) size of those batches
spool_oldest_age_s         s         gauge: age of the oldest unsent batch (0 if none)
mqtt_connected             bool      gauge: connected to the broker right now
gathers                    count     counter: gathers of all sources
gather_errors              count     counter: failed gathers of all sources, timeouts incl.
gather_timeouts            count     counter: gathers that hit their timeout
points                     count     counter: valid points handed to the queue
invalid_points             count     counter: points dropped for breaking the contract
published                  count     counter: batches the broker acknowledged (PUBACK)
publish_errors             count     counter: publishes without PUBACK (loss, timeout)
mqtt_connects              count     counter: successful connections
mqtt_errors                count     counter: failed connects and lost connections
dropped_batches            count     counter: batches deleted unsent by the spool bounds
dropped_points             count     counter: points lost in the agent: queue full, spool
                                     bounds, spool write errors, unencodable points
=========================  ========  =====================================================

``invalid_points`` are not in ``dropped_points``: they never entered the pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent.publisher import PublishStats
from agent.running import Intake, RunningSource
from agent.spool import SpoolStats
from schoolnet.wire import FieldValue, Point

NS = 1_000_000_000


@dataclass(frozen=True, kw_only=True)
class PipelineState:
    """Everything the ``agent`` point is computed from, read at one moment."""

    now_ns: int
    uptime_s: float
    intake: Intake
    spool: SpoolStats
    #: The spool's persisted drop counters when this agent started (spool counts are
    #: kept since the spool was created; the point reports since the agent started).
    spool_baseline: SpoolStats
    spool_write_errors_points: int
    runners: Sequence[RunningSource]
    publish: PublishStats


def health_fields(s: PipelineState) -> dict[str, FieldValue]:
    """The fields of the ``agent`` point (documented in the module docstring)."""
    stats = [r.stats for r in s.runners]
    oldest = s.spool.oldest_created_ns
    spool_dropped_points = s.spool.dropped_points - s.spool_baseline.dropped_points
    rejected = s.spool.rejected_points - s.spool_baseline.rejected_points
    return {
        "uptime_s": round(s.uptime_s, 3),
        "sources": len(s.runners),
        "queue_depth": s.intake.queue.qsize(),
        "spool_batches": s.spool.batches,
        "spool_bytes": s.spool.bytes,
        "spool_oldest_age_s": round(max(0, s.now_ns - oldest) / NS, 3) if oldest else 0.0,
        "mqtt_connected": s.publish.connected,
        "gathers": sum(x.gathers for x in stats),
        "gather_errors": sum(x.errors for x in stats),
        "gather_timeouts": sum(x.timeouts for x in stats),
        "points": sum(x.points for x in stats),
        "invalid_points": sum(x.invalid_points for x in stats),
        "published": s.publish.published,
        "publish_errors": s.publish.publish_errors,
        "mqtt_connects": s.publish.connects,
        "mqtt_errors": s.publish.connection_errors,
        "dropped_batches": s.spool.dropped_batches - s.spool_baseline.dropped_batches,
        "dropped_points": (s.intake.dropped_points + spool_dropped_points + rejected
                           + s.spool_write_errors_points),
    }


class AgentHealth:
    """A :class:`~agent.source.Source` that reports the agent's own pipeline.

    ``state`` reads the pipeline (a coroutine: asking the spool goes through a thread).
    """

    name = "agent"

    def __init__(self, version: str, state: Callable[[int], Awaitable[PipelineState]]) -> None:
        self.version = version
        self._state = state

    async def collect(self, now_ns: int) -> list[Point]:
        """One ``agent`` point."""
        state = await self._state(now_ns)
        return [Point("agent", {"version": self.version or "unknown"}, health_fields(state),
                      now_ns)]
