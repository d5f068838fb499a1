"""The agent's lifecycle and exit codes, with a fake broker connection and a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.app import EXIT_OK, EXIT_STARTUP, EXIT_UNSENT, Agent, run
from agent.cli import agent as agent_cli
from agent.publisher import Backoff
from agent.spool import DiskSpool
from schoolnet.inventory import Site
from schoolnet.wire import decode_batch
from tests.unit.agent_fakes import (
    CountingSource,
    FakeBroker,
    FakeClock,
    FakePublisher,
    make_site,
    write_site,
)


def make_agent(site: Site, spool: DiskSpool, broker: FakeBroker, clock: FakeClock,
               source: CountingSource | None = None, **kw: object) -> Agent:
    source = source or CountingSource("c", "sw-1")
    return Agent(site, spool, sources=[source], clock=clock,
                 connect=lambda: FakePublisher(site, broker),  # type: ignore[arg-type, return-value]
                 backoff=Backoff(rng=None), install_signal_handlers=False,
                 **kw)  # type: ignore[arg-type]


def test_runs_publishes_in_order_and_shuts_down_cleanly(tmp_path: Path) -> None:
    site = make_site(tmp_path)

    async def main() -> None:
        clock, broker = FakeClock(), FakeBroker()
        source = CountingSource("c", "sw-1")
        with DiskSpool.for_site(tmp_path / "spool", "t1", "s1") as spool:
            agent = make_agent(site, spool, broker, clock, source)
            serving = asyncio.create_task(agent.serve())
            for tick in range(1, 4):
                await clock.wait_sleepers(2)  # both sources (counting + health) idle
                clock.advance(max(clock.pending()))
                await clock.wait_until(lambda t=tick: len(broker.batches) >= 2 * t)
            agent.handle_exit()
            assert await serving == EXIT_OK
            assert spool.stats().batches == 0
        assert source.closed
        assert broker.statuses == [("online", ""), ("offline", "shutdown")]
        decoded = [decode_batch(b.payload, now_ns=clock.now_ns) for b in broker.batches]
        assert [b.seq for b in decoded] == list(range(len(decoded)))
        topics = {b.topic for b in broker.batches}
        assert topics == {"schoolnet/v1/t1/s1/metrics/sw-1", "schoolnet/v1/t1/s1/metrics"}
        uptimes = [p.fields["uptime_s"] for b in decoded for p in b.points
                   if p.measurement == "device"]
        assert uptimes == [1, 2, 3]

    asyncio.run(main())


def test_once_with_the_broker_down_keeps_data_and_the_next_start_continues(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path)

    async def main() -> None:
        clock, broker = FakeClock(), FakeBroker()
        broker.up = False
        with DiskSpool.for_site(tmp_path / "spool", "t1", "s1") as spool:
            agent = make_agent(site, spool, broker, clock, once=True, flush_timeout_s=0)
            assert await agent.serve() == EXIT_UNSENT
            assert spool.stats().batches == 2  # the device point and the agent point
            assert agent.forwarder.stats.connection_errors >= 1
        broker.up = True
        with DiskSpool.for_site(tmp_path / "spool", "t1", "s1") as spool:
            agent = make_agent(site, spool, broker, clock, once=True)
            assert await agent.serve() == EXIT_OK
            assert spool.stats().batches == 0
        assert [b.seq for b in broker.batches] == [0, 1, 2, 3]
        assert broker.statuses == [("online", ""), ("offline", "shutdown")]

    asyncio.run(main())


def test_second_exit_request_forces_exit_without_waiting_for_the_flush(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path)

    async def main() -> None:
        clock, broker = FakeClock(), FakeBroker()
        broker.up = False  # the flush could only wait for its deadline
        with DiskSpool.for_site(tmp_path / "spool", "t1", "s1") as spool:
            agent = make_agent(site, spool, broker, clock, flush_timeout_s=3600)
            serving = asyncio.create_task(agent.serve())
            await clock.wait_sleepers(2)
            agent.handle_exit()
            assert agent.should_exit and not agent.force_exit
            await clock.wait_until(lambda: agent.forwarder._finish.is_set())
            agent.handle_exit()
            assert agent.force_exit
            assert await asyncio.wait_for(serving, 5) == EXIT_OK

    asyncio.run(main())


def test_bad_site_config_exits_3_naming_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_site(tmp_path, extra_broker="    colour: blue\n")
    assert run(path) == EXIT_STARTUP
    err = capsys.readouterr().err
    assert "cannot start: bad site config" in err
    assert f"{path}:" in err and "colour" in err


def test_unusable_spool_dir_and_missing_ca_file_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run(write_site(tmp_path), spool_dir=blocker / "spool") == EXIT_STARTUP
    assert "unusable spool directory" in capsys.readouterr().err
    path = write_site(tmp_path / "tls", extra_broker="    tls: true\n    ca_file: /nonexistent/ca.pem\n")
    assert run(path) == EXIT_STARTUP
    assert "bad TLS settings" in capsys.readouterr().err


def test_a_device_with_an_unknown_profile_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_site(tmp_path)
    path.write_text(path.read_text() + (
        "devices:\n  - name: sw-1\n    host: 127.0.0.1\n    role: switch\n"
        "    profile: no_such_profile\n    snmp: {version: 2c, community: public}\n"))
    assert run(path, spool_dir=tmp_path / "spool") == EXIT_STARTUP
    err = capsys.readouterr().err
    assert "cannot start" in err and "no_such_profile" in err


def test_cli_help_and_exit_code_pass_through(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(agent_cli, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--site-config", "--spool-dir", "--once", "--replay-rate"):
        assert option in result.output
    path = write_site(tmp_path, extra_broker="    colour: blue\n")
    result = runner.invoke(agent_cli, ["run", "--site-config", str(path)])
    assert result.exit_code == EXIT_STARTUP
