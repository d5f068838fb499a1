"""Fakes for the agent's unit tests: a clock that only moves when told, and sources."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType

import aiomqtt

from agent.spool import SpooledBatch
from schoolnet.inventory import Site, load_site
from schoolnet.wire import Point

NS = 1_000_000_000
#: A fixed wall-clock start: 2027-01-15 08:00:00 UTC (a school day, in lessons).
START_NS = 1_800_000_000 * NS


class FakeClock:
    """Time stands still until :meth:`advance`; sleepers wake when their time has come.

    Implements the agent's ``Clock`` protocol. Tests wait for the code under test to
    reach its next sleep (:meth:`wait_sleepers`) and then move time, so schedules and
    timeouts are checked without real waiting.
    """

    def __init__(self, start_ns: int = START_NS) -> None:
        self.now_ns = start_ns
        self.mono = 1000.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed: asyncio.Event | None = None

    def time_ns(self) -> int:
        """Fake wall-clock ns."""
        return self.now_ns

    def monotonic(self) -> float:
        """Fake monotonic seconds."""
        return self.mono

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def sleep(self, seconds: float) -> None:
        """Block until the clock was advanced by ``seconds``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.mono + max(0.0, seconds), fut)
        self.sleepers.append(entry)
        self._event().set()
        try:
            if seconds <= 0:
                return
            await fut
        finally:
            if entry in self.sleepers:
                self.sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper that is due."""
        self.mono += seconds
        self.now_ns += round(seconds * NS)
        for deadline, fut in list(self.sleepers):
            if deadline <= self.mono + 1e-9 and not fut.done():
                fut.set_result(None)

    def pending(self) -> list[float]:
        """Remaining seconds of each pending sleeper."""
        return sorted(d - self.mono for d, f in self.sleepers if not f.done())

    async def wait_until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        """Let the loop run until ``cond()`` holds; fail after ``timeout`` real seconds."""
        deadline = time.monotonic() + timeout
        while not cond():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("condition not reached in time")
            self._event().clear()
            # Re-check on every scheduler pass: sleepers and queues change without
            # telling us, and one pass of the loop is cheap.
            waiter = asyncio.ensure_future(self._event().wait())
            await asyncio.wait({waiter}, timeout=min(remaining, 0.01))
            waiter.cancel()

    async def wait_sleepers(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` sleepers are pending (the code under test went idle)."""
        await self.wait_until(lambda: len(self.pending()) >= n, timeout)


class CountingSource:
    """Returns one valid ``device`` point per gather, ``uptime_s`` counting up."""

    def __init__(self, name: str, device: str = "sw-1") -> None:
        self.name = name
        self.device = device
        self.calls = 0
        self.closed = False

    async def close(self) -> None:
        """Sources may have resources to let go of at shutdown."""
        self.closed = True

    async def collect(self, now_ns: int) -> list[Point]:
        """One point."""
        self.calls += 1
        return [Point("device", {"device": self.device, "role": "switch", "vendor": "x"},
                      {"reachable": True, "uptime_s": self.calls}, now_ns)]


class FailingSource:
    """Raises on every gather."""

    def __init__(self, name: str = "broken") -> None:
        self.name = name
        self.calls = 0

    async def collect(self, now_ns: int) -> list[Point]:
        """Fail."""
        self.calls += 1
        raise OSError("device unreachable")


class HangingSource:
    """Never returns (until cancelled)."""

    def __init__(self, name: str = "hung") -> None:
        self.name = name
        self.cancelled = 0

    async def collect(self, now_ns: int) -> list[Point]:
        """Hang."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return []


class FakeBroker:
    """Records what fake connections publish; ``up`` decides whether connecting works.

    ``fail_after`` makes the next connection break after that many publishes of one
    window (the rest of the window gets no PUBACK), as a broker that goes away would.
    """

    def __init__(self) -> None:
        self.up = True
        self.fail_after: int | None = None
        self.connects = 0
        self.statuses: list[tuple[str, str]] = []
        self.batches: list[SpooledBatch] = []


class FakePublisher:
    """Stands in for agent.publisher.Publisher: acknowledges every publish at once."""

    def __init__(self, site: Site, broker: FakeBroker) -> None:
        self.site = site
        self.broker = broker

    async def __aenter__(self) -> FakePublisher:
        if not self.broker.up:
            raise aiomqtt.MqttError("[Errno 111] Connection refused")
        self.broker.connects += 1
        await self.publish_status("online")
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def publish_status(self, state: str, reason: str = "") -> None:
        self.broker.statuses.append((state, reason))

    async def publish_window(self, batches: Sequence[SpooledBatch],
                             pace: Callable[[], Awaitable[None]]) -> tuple[list[int], int]:
        acked: list[int] = []
        for b in batches:
            await pace()
            if self.broker.fail_after is not None and len(acked) == self.broker.fail_after:
                self.broker.fail_after = None
                return acked, len(batches) - len(acked)
            self.broker.batches.append(b)
            acked.append(b.seq)
        return acked, 0

    async def wait_for(self, event: asyncio.Event) -> None:
        await event.wait()


def write_site(root: Path, *, tenant: str = "t1", site: str = "s1", port: int = 1883,
               extra_broker: str = "", poll: float = 60.0) -> Path:
    """Write a minimal tenant + site config below ``root``; returns the site file."""
    tdir = root / tenant
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "tenant.yaml").write_text(f"tenant: {tenant}\nname: Tenant {tenant}\n")
    path = tdir / f"{site}.yaml"
    path.write_text(
        f"site: {site}\nname: Site {site}\n"
        f"agent:\n  poll_interval_s: {poll}\n  spool_dir: {root / 'spool'}\n"
        f"  broker:\n    host: 127.0.0.1\n    port: {port}\n{extra_broker}"
    )
    return path


def make_site(root: Path, *, tenant: str = "t1", site: str = "s1", port: int = 1883,
              poll: float = 60.0) -> Site:
    """A loaded :class:`Site` from :func:`write_site`."""
    return load_site(write_site(root, tenant=tenant, site=site, port=port, poll=poll))
