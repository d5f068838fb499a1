"""The agent against a real Mosquitto: order, topics, seq, outages, restarts, last will.

Each test uses its own site id (so its own topics) and its own spool. Agents run
in-process (``Agent.serve``) where the test needs to look inside, and as a subprocess
through the CLI where the test kills them. Waits are conditions with deadlines; no
assertion is about how long something took.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiomqtt
import pytest

from agent.app import Agent
from agent.publisher import Backoff
from agent.spool import DiskSpool
from schoolnet.inventory import Site, load_site
from schoolnet.sim.servers import Mosquitto, free_port
from schoolnet.wire import Batch, Point, Status, decode_batch, decode_status, site_filter
from tests.unit.agent_fakes import CountingSource, write_site

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TENANT = "agent-it"
POLL_S = 0.05  # fast polls: many batches in a short test
DEADLINE_S = 30.0


def new_site_id() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class Recorder:
    """A subscriber like the collector's: QoS 1, optionally a persistent session."""

    def __init__(self, broker: Mosquitto, site: str, *, persistent: bool = False) -> None:
        self.broker = broker
        self.filter = site_filter(TENANT, site)
        self.persistent = persistent
        self.client_id = f"rec-{site}"
        self.messages: list[Received] = []
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Subscribe and record until cancelled, reconnecting when the broker is away."""
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port,
                                          identifier=self.client_id,
                                          clean_session=not self.persistent) as client:
                    await client.subscribe(self.filter, qos=1)
                    self.connected.set()
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        self.messages.append(Received(str(m.topic), m.payload, m.retain))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)  # retry interval while the broker is down

    def batches(self) -> list[tuple[str, Batch]]:
        return [(m.topic, decode_batch(m.payload)) for m in self.messages
                if not m.topic.endswith("/status")]

    def seqs(self) -> list[int]:
        return [b.seq for _, b in self.batches()]

    def statuses(self) -> list[Status]:
        return [decode_status(m.payload) for m in self.messages if m.topic.endswith("/status")]


async def until(cond: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Wait until ``cond()`` holds, checking every few ms; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def first_occurrences(seqs: list[int]) -> list[int]:
    """Seqs in arrival order without re-deliveries (QoS 1 is at-least-once)."""
    seen: set[int] = set()
    return [s for s in seqs if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]


def uptimes(rec: Recorder, device: str) -> list[int | float | bool | str]:
    """The counting source's values for ``device``, first delivery of each batch only."""
    seen: set[int] = set()
    out = []
    for _, b in rec.batches():
        if b.seq in seen:
            continue
        seen.add(b.seq)
        out += [p.fields["uptime_s"] for p in b.points
                if p.measurement == "device" and p.tags["device"] == device]
    return out


def make_agent(site: Site, spool: DiskSpool, *sources: CountingSource,
               flush_timeout_s: float = 10.0) -> Agent:
    return Agent(site, spool, sources=list(sources), install_signal_handlers=False,
                 flush_timeout_s=flush_timeout_s, replay_rate=2000,
                 backoff=Backoff(initial_s=0.05, max_s=0.3))


def test_batches_arrive_in_order_with_topics_seq_and_status(
    mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    sid = new_site_id()
    site = load_site(write_site(tmp_path, tenant=TENANT, site=sid, port=mosquitto.port,
                                poll=POLL_S))

    async def main() -> None:
        rec = Recorder(mosquitto, sid)
        recording = asyncio.create_task(rec.run())
        await asyncio.wait_for(rec.connected.wait(), DEADLINE_S)
        with DiskSpool.for_site(tmp_path / "spool", TENANT, sid) as spool:
            agent = make_agent(site, spool, CountingSource("sw", "sw-1"),
                               CountingSource("ap", "ap-1"))
            serving = asyncio.create_task(agent.serve())
            await until(lambda: len(uptimes(rec, "sw-1")) >= 10 and len(uptimes(rec, "ap-1")) >= 10,
                        "10 polls of each device")
            agent.handle_exit()
            assert await serving == 0
            sent = spool.stats()
            assert sent.batches == 0  # flushed at shutdown
            await until(lambda: len(set(rec.seqs())) == sent.next_seq
                        and any(s.state == "offline" for s in rec.statuses()),
                        "every batch and the offline status")
            epoch = spool.epoch
        recording.cancel()

        assert rec.seqs() == list(range(sent.next_seq))  # in order, none twice, none lost
        for topic, batch in rec.batches():
            assert (batch.site, batch.epoch) == (sid, epoch)
            devices = {p.tags.get("device") for p in batch.points}
            base = f"schoolnet/v1/{TENANT}/{sid}/metrics"
            assert topic == (f"{base}/{devices.pop()}" if devices != {None} else base)
        for device in ("sw-1", "ap-1"):
            values = uptimes(rec, device)
            assert values == list(range(1, len(values) + 1))
        assert any(p.measurement == "agent" for _, b in rec.batches() for p in b.points)
        states = [(s.state, s.reason) for s in rec.statuses()]
        assert states == [("online", ""), ("offline", "shutdown")]

    asyncio.run(main())


def test_broker_down_while_sources_produce_loses_nothing(tmp_path: Path) -> None:
    sid = new_site_id()
    broker = Mosquitto(tmp_path / "broker")  # our own: this test stops it
    broker.start()
    try:
        site = load_site(write_site(tmp_path, tenant=TENANT, site=sid, port=broker.port,
                                    poll=POLL_S))

        async def main() -> None:
            # A persistent session, like the collector's: what arrives while it is
            # reconnecting after the broker restart is queued for it, not lost.
            rec = Recorder(broker, sid, persistent=True)
            recording = asyncio.create_task(rec.run())
            await asyncio.wait_for(rec.connected.wait(), DEADLINE_S)
            sw = CountingSource("sw", "sw-1")
            with DiskSpool.for_site(tmp_path / "spool", TENANT, sid) as spool:
                agent = make_agent(site, spool, sw)
                serving = asyncio.create_task(agent.serve())
                await until(lambda: len(rec.seqs()) >= 5, "the first batches")

                await asyncio.to_thread(broker.stop)  # SIGTERM to its PID
                await until(lambda: not agent.forwarder.stats.connected, "the agent to notice")
                calls_at_stop = sw.calls
                await until(lambda: spool.stats().batches >= 20 and sw.calls >= calls_at_stop + 10,
                            "the spool to fill while the broker is down")
                assert agent.forwarder.stats.connection_errors >= 1

                await asyncio.to_thread(broker.start)  # same port, same persistence
                await until(lambda: spool.stats().batches < 5 and len(rec.seqs()) > 30,
                            "the backlog to be replayed")
                agent.handle_exit()
                assert await serving == 0
                final = spool.stats()
                assert final.batches == 0 and final.dropped_batches == 0
                await until(lambda: set(rec.seqs()) == set(range(final.next_seq)),
                            "every seq at the subscriber")
            recording.cancel()

            assert first_occurrences(rec.seqs()) == list(range(final.next_seq))
            values = uptimes(rec, "sw-1")
            assert values == list(range(1, sw.calls + 1))  # every poll, in order
            times = [p.time_ns for _, b in rec.batches() for p in b.points
                     if p.measurement == "device"]
            assert first_occurrences(times) == sorted(set(times))  # measured-at kept

        asyncio.run(main())
    finally:
        broker.stop()


def test_agent_restart_continues_seq_and_delivers_what_the_first_run_kept(
    mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    sid = new_site_id()
    site = load_site(write_site(tmp_path, tenant=TENANT, site=sid, port=mosquitto.port,
                                poll=POLL_S))
    # First run: the broker is unreachable (a port nobody listens on).
    cut_off = replace(site, agent=replace(site.agent, broker=replace(site.agent.broker,
                                                                     port=free_port())))
    sw = CountingSource("sw", "sw-1")  # one device across both runs

    async def main() -> None:
        with DiskSpool.for_site(tmp_path / "spool", TENANT, sid) as spool:
            epoch = spool.epoch
            first = make_agent(cut_off, spool, sw, flush_timeout_s=0.1)
            serving = asyncio.create_task(first.serve())
            await until(lambda: spool.stats().batches >= 10, "batches kept while cut off")
            first.handle_exit()
            assert await serving == 0
            kept = spool.stats()
            assert kept.batches == kept.next_seq >= 10  # nothing sent, nothing lost

        rec = Recorder(mosquitto, sid)
        recording = asyncio.create_task(rec.run())
        await asyncio.wait_for(rec.connected.wait(), DEADLINE_S)
        with DiskSpool.for_site(tmp_path / "spool", TENANT, sid) as spool:  # a new instance
            assert spool.epoch == epoch
            second = make_agent(site, spool, sw)
            serving = asyncio.create_task(second.serve())
            await until(lambda: len(rec.seqs()) >= kept.next_seq + 5, "old and new batches")
            second.handle_exit()
            assert await serving == 0
            final = spool.stats()
            await until(lambda: len(set(rec.seqs())) == final.next_seq, "every seq")
        recording.cancel()

        assert rec.seqs() == list(range(final.next_seq))
        assert {b.epoch for _, b in rec.batches()} == {epoch}
        assert uptimes(rec, "sw-1") == list(range(1, sw.calls + 1))

    asyncio.run(main())


def _start_agent(site_file: Path, spool_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--site-config", str(site_file),
             "--spool-dir", str(spool_dir), "--flush-timeout", "5"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def test_killed_agent_gets_offline_by_last_will_and_restarts_without_gaps(
    mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    sid = new_site_id()
    site_file = write_site(tmp_path, tenant=TENANT, site=sid, port=mosquitto.port, poll=0.1)
    log = tmp_path / "agent.log"
    procs: list[subprocess.Popen[bytes]] = []

    async def main() -> None:
        rec = Recorder(mosquitto, sid)
        recording = asyncio.create_task(rec.run())
        await asyncio.wait_for(rec.connected.wait(), DEADLINE_S)

        def states() -> list[tuple[str, str]]:
            return [(s.state, s.reason) for s in rec.statuses()]

        procs.append(_start_agent(site_file, tmp_path / "spool", log))
        await until(lambda: states() == [("online", "")] and len(rec.seqs()) >= 3,
                    "the first agent online and publishing")
        os.kill(procs[0].pid, signal.SIGKILL)
        assert await asyncio.to_thread(procs[0].wait, 10) == -signal.SIGKILL
        await until(lambda: states() == [("online", ""), ("offline", "lost")],
                    "the broker to publish the last will")

        seen = max(rec.seqs())
        procs.append(_start_agent(site_file, tmp_path / "spool", log))
        await until(lambda: len(states()) == 3 and max(rec.seqs()) >= seen + 3,
                    "the second agent online and publishing")
        procs[1].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(procs[1].wait, 30) == 0
        await until(lambda: states()[-1] == ("offline", "shutdown"), "the offline status")
        recording.cancel()

        # SIGKILL lost nothing: what was in the spool but unacknowledged was re-sent.
        seqs = rec.seqs()
        assert set(seqs) == set(range(max(seqs) + 1))
        assert len({b.epoch for _, b in rec.batches()}) == 1

        # A subscriber arriving later gets the retained status: offline, shutdown.
        late = Recorder(mosquitto, sid)
        late.client_id += "-late"
        late_task = asyncio.create_task(late.run())
        await until(lambda: bool(late.statuses()), "the retained status")
        late_task.cancel()
        assert late.messages[0].retain
        assert (late.statuses()[0].state, late.statuses()[0].reason) == ("offline", "shutdown")

    try:
        asyncio.run(main())
    except BaseException:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


class ScaledClock:
    """The agent's clock, ``factor`` times faster than real time, from a chosen wall time.

    Lets a real agent live through hours of 60-second polls in seconds: schedules,
    backoff and the replay rate all run on it; MQTT keepalives stay real.
    """

    def __init__(self, factor: float, start_wall_ns: int) -> None:
        self.factor = factor
        self._real0 = time.monotonic()
        self._wall0 = start_wall_ns

    def _elapsed_s(self) -> float:
        return (time.monotonic() - self._real0) * self.factor

    def time_ns(self) -> int:
        return self._wall0 + int(self._elapsed_s() * 1e9)

    def monotonic(self) -> float:
        return 1_000_000.0 + self._elapsed_s()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)


HOUR_NS = 3600 * 10**9
MINUTE_NS = 60 * 10**9


class StampingSource(CountingSource):
    """A counting source that remembers the time of every point it measured."""

    def __init__(self, name: str, device: str) -> None:
        super().__init__(name, device)
        self.stamps: list[int] = []

    async def collect(self, now_ns: int) -> list[Point]:
        points = await super().collect(now_ns)
        self.stamps += [p.time_ns for p in points]
        return points


def test_a_two_hour_broker_outage_with_an_agent_restart_in_between_loses_nothing(
    tmp_path: Path,
) -> None:
    """Two hours of 60 s polls while the broker is away, the agent restarted after one
    hour; when the broker is back, everything arrives in seq order with the times it
    was measured at. Simulated time: 600x (two hours take 12 s)."""
    sid = new_site_id()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        site = load_site(write_site(tmp_path, tenant=TENANT, site=sid, port=broker.port,
                                    poll=60.0))
        # Start three hours in the past, so the points stay within the contract's
        # window of the real clock (the subscriber decodes them against it).
        clock = ScaledClock(600, time.time_ns() - 3 * HOUR_NS)
        devices = [StampingSource("sw", "core-sw"), StampingSource("ap1", "ap-1"),
                   StampingSource("ap2", "ap-2")]

        def agent(spool: DiskSpool) -> Agent:
            return Agent(site, spool, sources=list(devices), install_signal_handlers=False,
                         clock=clock, flush_timeout_s=60, replay_rate=50)

        async def until_sim(t_ns: int) -> None:
            await until(lambda: clock.time_ns() >= t_ns, "simulated time to pass", timeout=60)

        async def main() -> None:
            rec = Recorder(broker, sid, persistent=True)
            recording = asyncio.create_task(rec.run())
            await asyncio.wait_for(rec.connected.wait(), DEADLINE_S)
            spool_dir = tmp_path / "spool"
            with DiskSpool.for_site(spool_dir, TENANT, sid) as spool:
                first = agent(spool)
                serving = asyncio.create_task(first.serve())
                await until(lambda: all(len(uptimes(rec, d.device)) >= 3 for d in devices),
                            "three live polls of every device")
                await asyncio.to_thread(broker.stop)
                outage_start = clock.time_ns()
                await until_sim(outage_start + HOUR_NS)
                first.handle_exit()  # the flush fails: the broker is away
                assert await serving == 0
                assert spool.stats().batches >= 3 * 55  # an hour of polls kept
            with DiskSpool.for_site(spool_dir, TENANT, sid) as spool:  # the restarted agent
                second = agent(spool)
                serving = asyncio.create_task(second.serve())
                await until_sim(outage_start + 2 * HOUR_NS)
                kept = spool.stats()
                await asyncio.to_thread(broker.start)
                outage_end = clock.time_ns()
                await until(lambda: spool.stats().batches <= 2
                            and len(set(rec.seqs())) >= kept.next_seq, "the backlog replayed")
                await until_sim(clock.time_ns() + 3 * MINUTE_NS)  # and live polls after it
                second.handle_exit()
                assert await serving == 0
                final = spool.stats()
            await until(lambda: set(rec.seqs()) >= set(range(final.next_seq)), "every seq")
            recording.cancel()

            # Two hours of three devices and the agent itself: 4 batches per poll.
            assert kept.batches >= 4 * 115 and kept.dropped_batches == 0
            assert first_occurrences(rec.seqs()) == list(range(final.next_seq))  # in order
            for d in devices:
                assert uptimes(rec, d.device) == list(range(1, d.calls + 1))  # every poll
                seen: set[int] = set()
                stamps = []
                for _, b in rec.batches():
                    if b.seq not in seen:
                        seen.add(b.seq)
                        stamps += [p.time_ns for p in b.points
                                   if p.measurement == "device" and p.tags["device"] == d.device]
                # The times they were measured at, not delivered at; a poll a minute.
                assert stamps == d.stamps
                during = [t for t in stamps if outage_start <= t < outage_end]
                assert len(during) >= 115, len(during)
                gaps = [b - a for a, b in itertools.pairwise(during)]
                assert all(0 < g < 3 * MINUTE_NS for g in gaps)  # increasing, none missed
                assert abs(sum(gaps) / len(gaps) - MINUTE_NS) < 2 * 10**9

        asyncio.run(main())
    finally:
        broker.stop()
