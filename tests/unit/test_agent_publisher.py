"""Publisher helpers without a broker: rate limit, backoff, client options, health fields."""

from __future__ import annotations

import asyncio
import random
import re
import ssl
from dataclasses import replace
from pathlib import Path

import pytest

import agent.health
from agent.health import PipelineState, health_fields
from agent.publisher import Backoff, Forwarder, PublishStats, TokenBucket, client_options
from agent.running import Intake, RunningSource
from agent.spool import DiskSpool, Outgoing, SpoolStats
from schoolnet.configfile import Secret
from schoolnet.wire import Point, check_point, decode_status
from tests.unit.agent_fakes import (
    START_NS,
    CountingSource,
    FakeBroker,
    FakeClock,
    FakePublisher,
    make_site,
    write_site,
)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    async def main() -> None:
        clock = FakeClock()
        bucket = TokenBucket(10, burst=5, clock=clock)
        taken = 0

        async def take_all() -> None:
            nonlocal taken
            for _ in range(25):
                await bucket.take()
                taken += 1

        task = asyncio.create_task(take_all())
        await clock.wait_sleepers(1)
        assert taken == 5  # the burst goes at once
        for second in range(1, 3):
            for _ in range(10):
                clock.advance(0.1)
                await clock.wait_until(lambda: task.done() or len(clock.pending()) == 1)
            assert taken == 5 + 10 * second  # then 10 per second of (fake) time
        await task

    asyncio.run(main())


def test_token_bucket_rejects_a_zero_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap_and_resets() -> None:
    b = Backoff(initial_s=1, max_s=30, factor=2, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    caps = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    b.reset()
    assert 0.5 <= b.next_delay() <= 1


def test_client_options_use_site_id_password_will_and_keepalive(tmp_path: Path) -> None:
    site = make_site(tmp_path, tenant="herne", site="gy-a", port=8883)
    broker = replace(site.agent.broker, password=Secret("s3cret"), keepalive_s=17)
    site = replace(site, agent=replace(site.agent, broker=broker))
    opts = client_options(site, version="1.2.3", timeout_s=4)
    assert (opts["hostname"], opts["port"]) == ("127.0.0.1", 8883)
    assert (opts["username"], opts["password"]) == ("gy-a", "s3cret")
    assert opts["identifier"] == "schoolnet-agent-herne-gy-a"
    assert (opts["keepalive"], opts["timeout"], opts["tls_context"]) == (17, 4, None)
    will = opts["will"]
    assert (will.topic, will.qos, will.retain) == ("schoolnet/v1/herne/gy-a/status", 1, True)
    status = decode_status(will.payload)
    assert (status.site, status.state, status.reason, status.version) == (
        "gy-a", "offline", "lost", "1.2.3")


def test_client_options_take_an_explicit_username_and_tls_ca(tmp_path: Path) -> None:
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if not ca.exists():
        pytest.skip("no system CA bundle to load")
    extra = f"    tls: true\n    ca_file: {ca}\n    username: box-17\n"
    from schoolnet.inventory import load_site

    site = load_site(write_site(tmp_path, extra_broker=extra))
    opts = client_options(site, version="", timeout_s=10)
    assert opts["username"] == "box-17" and opts["password"] is None
    ctx = opts["tls_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def _state(runners: list[RunningSource], intake: Intake) -> PipelineState:
    spool = SpoolStats(batches=3, bytes=900, next_seq=40, oldest_created_ns=START_NS - 90 * 10**9,
                       dropped_batches=7, dropped_points=70, rejected_points=1)
    baseline = SpoolStats(batches=0, bytes=0, next_seq=0, oldest_created_ns=None,
                          dropped_batches=5, dropped_points=50, rejected_points=0)
    publish = PublishStats(published=36, publish_errors=2, connects=3, connection_errors=4,
                           connected=True)
    return PipelineState(now_ns=START_NS, uptime_s=12.5, intake=intake, spool=spool,
                         spool_baseline=baseline, spool_write_errors_points=0,
                         runners=runners, publish=publish)


def test_health_fields_are_exactly_the_documented_ones_and_valid_on_the_wire() -> None:
    async def main() -> None:
        intake = Intake()
        runners = [RunningSource(CountingSource(f"c{i}"), intake, interval_s=60,
                                 clock=FakeClock()) for i in range(2)]
        for r in runners:
            await r.gather_once()
        runners[1].stats.errors = 4
        intake.dropped_points = 6
        fields = health_fields(_state(runners, intake))
        doc = agent.health.__doc__ or ""
        documented = re.findall(r"^([a-z_]+)\s{2,}(?:s|count|bytes|bool)\s", doc, re.MULTILINE)
        assert sorted(fields) == sorted(documented)
        assert fields["spool_oldest_age_s"] == 90.0
        assert fields["gather_errors"] == 4 and fields["gathers"] == 2 and fields["points"] == 2
        assert fields["queue_depth"] == 2 and fields["sources"] == 2
        # Since-start counts: the spool's persisted drops minus those at agent start.
        assert fields["dropped_batches"] == 2
        assert fields["dropped_points"] == 6 + 20 + 1
        check_point(Point("agent", {"version": "0.1.0"}, fields, START_NS), now_ns=START_NS)

    asyncio.run(main())


def _fill(spool: DiskSpool, n: int) -> None:
    tags = {"device": "sw-1", "role": "switch", "vendor": "x"}
    spool.append([Outgoing("schoolnet/v1/t1/s1/metrics/sw-1",
                           (Point("device", tags, {"uptime_s": i}, START_NS),))
                  for i in range(n)])


def test_replay_is_paced_by_the_rate_and_stays_in_seq_order(tmp_path: Path) -> None:
    site = make_site(tmp_path)

    async def main() -> None:
        clock, broker = FakeClock(), FakeBroker()
        with DiskSpool(tmp_path / "s.sqlite3", site="s1") as spool:
            _fill(spool, 50)  # a backlog, as after an outage
            fwd = Forwarder(spool, lambda: FakePublisher(site, broker),  # type: ignore[arg-type, return-value]
                            rate_per_s=10, clock=clock)
            task = asyncio.create_task(fwd.run())
            for second in range(5):
                # A burst of one second's worth, then exactly 10 per second of time.
                await clock.wait_until(lambda s=second: len(broker.batches) == 10 * (s + 1)
                                       and (len(clock.pending()) == 1 or s == 4))
                assert len(broker.batches) == 10 * (second + 1)
                clock.advance(1.0)
            await clock.wait_until(lambda: spool.stats().batches == 0)
            fwd.finish(1.0)
            await asyncio.wait_for(task, 5)
        assert [b.seq for b in broker.batches] == list(range(50))
        assert fwd.stats.published == 50 and fwd.flushed
        assert broker.statuses == [("online", ""), ("offline", "shutdown")]

    asyncio.run(main())


def test_a_window_cut_by_a_lost_connection_is_resent_after_backoff(tmp_path: Path) -> None:
    site = make_site(tmp_path)

    async def main() -> None:
        clock, broker = FakeClock(), FakeBroker()
        broker.fail_after = 3  # the connection breaks after 3 of the first window
        with DiskSpool(tmp_path / "s.sqlite3", site="s1") as spool:
            _fill(spool, 10)
            fwd = Forwarder(spool, lambda: FakePublisher(site, broker),  # type: ignore[arg-type, return-value]
                            rate_per_s=1000, clock=clock,
                            backoff=Backoff(initial_s=4, rng=random.Random(0)))
            task = asyncio.create_task(fwd.run())
            await clock.wait_sleepers(1)  # backing off after the loss
            assert spool.stats().batches == 7  # the 3 acknowledged ones are gone
            assert 2 <= clock.pending()[0] <= 4
            clock.advance(clock.pending()[0])
            await clock.wait_until(lambda: spool.stats().batches == 0)
            fwd.finish(1.0)
            await asyncio.wait_for(task, 5)
        assert [b.seq for b in broker.batches] == list(range(10))  # each once, in order
        s = fwd.stats
        assert (s.connects, s.connection_errors, s.publish_errors, s.published) == (2, 1, 7, 10)

    asyncio.run(main())


def test_finish_gives_up_at_the_deadline_when_the_broker_stays_away(tmp_path: Path) -> None:
    site = make_site(tmp_path)

    async def main() -> None:
        clock, broker = FakeClock(), FakeBroker()
        broker.up = False
        with DiskSpool(tmp_path / "s.sqlite3", site="s1") as spool:
            _fill(spool, 3)
            fwd = Forwarder(spool, lambda: FakePublisher(site, broker),  # type: ignore[arg-type, return-value]
                            clock=clock, backoff=Backoff(initial_s=60, rng=random.Random(0)))
            task = asyncio.create_task(fwd.run())
            await clock.wait_sleepers(1)
            assert clock.pending()[0] >= 30  # a long backoff ...
            fwd.finish(2.0)  # ... is cut short by finish, then bounded by the deadline
            await clock.wait_until(lambda: clock.pending() == [2.0])
            clock.advance(2.0)
            await asyncio.wait_for(task, 5)
            assert spool.stats().batches == 3 and not fwd.flushed  # kept for next time
        assert broker.statuses == []

    asyncio.run(main())


def test_after_a_new_connection_the_kept_batches_are_sent_again(tmp_path: Path) -> None:
    site = make_site(tmp_path)

    async def main() -> None:
        clock, broker = FakeClock(), FakeBroker()
        with DiskSpool(tmp_path / "s.sqlite3", site="s1", keep_sent_s=30) as spool:
            _fill(spool, 4)
            fwd = Forwarder(spool, lambda: FakePublisher(site, broker),  # type: ignore[arg-type, return-value]
                            rate_per_s=1000, clock=clock,
                            backoff=Backoff(initial_s=1, rng=random.Random(0)))
            task = asyncio.create_task(fwd.run())
            await clock.wait_until(lambda: spool.stats().batches == 0 and len(broker.batches) == 4)
            _fill(spool, 2)  # seqs 4, 5: the connection breaks after the first of them
            broker.fail_after = 1
            fwd.notify()
            await clock.wait_sleepers(1)
            clock.advance(clock.pending()[0])
            await clock.wait_until(lambda: spool.stats().batches == 0 and fwd.stats.connects == 2)
            fwd.finish(1.0)
            await asyncio.wait_for(task, 5)
        # The restarted broker may have lost 0..4: all of them again, in order, then 5.
        assert [b.seq for b in broker.batches] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]
        assert fwd.stats.resent == 5

    asyncio.run(main())
