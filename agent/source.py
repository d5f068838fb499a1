"""The source interface: a source only collects; everything shared lives in the wrapper.

A *source* (an SNMP device poller, an uplink probe, the agent's self-health) implements
:class:`Source`. The agent wraps each one in a ``RunningSource`` (agent/running.py) that
owns the schedule, jitter, timeout, common tags and self-metrics — the Telegraf
``RunningInput`` idea — so no source re-implements timing, tagging or error counting.
"""

from __future__ import annotations

from typing import Any, Protocol

from schoolnet.wire import Point


class Source(Protocol):
    """Something the agent gathers points from on a schedule."""

    #: Stable, unique name within the agent (``snmp:core-sw``, ``probe:icmp``).
    name: str

    async def collect(self, now_ns: int) -> list[Point]:
        """Gather once and return the points, stamped at or near ``now_ns``.

        Raise on a failure of the whole gather; partial failures (one SNMP table)
        are reported as points (``snmp_error``), not exceptions.
        """
        ...


class SourceWrapper:
    """Base of a source that wraps another (adds points to its polls, taps them).

    It takes the wrapped source's name, closes it on :meth:`close`, and passes every
    other attribute through (``stats``, ``device``, ``detection`` of an SNMP poller), so
    the runtime and the tests see the wrapped source. Subclasses define ``collect``.
    """

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.name = inner.name

    async def close(self) -> None:
        """Close the wrapped source (it may hold the site's SNMP engine)."""
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
