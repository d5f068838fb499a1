"""Fault injection: >= 20,000 messages from 4 sites while everything gets SIGKILLed.

Agents (subprocesses, fast test source: one point per batch), Mosquitto, the collector
(``schoolnet collector run``, disk spool on) and VictoriaMetrics all run for real on
loopback. While the agents produce, the broker, the collector, the database and an
agent are each SIGKILLed at random moments, at least twice each, and started again.
Afterwards every (site, seq) the agents' spools handed out must be in the database
exactly once: the number of distinct points per site equals the site's seq count
(each batch is one point with its own series and timestamp, and VictoriaMetrics keeps
one sample per timestamp with ``-dedup.minScrapeInterval=1ms``), and the collector
saw every seq (no gaps).

Why nothing is lost where each kill hits:

* agent: batches are in its SQLite spool (fsynced) before they are published;
* broker: it acknowledges before it saves (autosave); the agents keep acknowledged
  batches for 30 s and send them again after reconnecting (agent/spool.py);
* collector: messages are acknowledged only once stored in its spool; the seq state
  is saved with them (collector/spool.py, collector/seqstate.py);
* database: VictoriaMetrics acknowledges before its data is on disk (~6 s); the
  collector keeps written lines for ``durable_after_s`` and writes them again when the
  database's incarnation changes (collector/durability.py).

Run alone: ``pytest -m fault_injection -s`` (prints the counts). Seed: SCHOOLNET_FAULT_SEED.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from schoolnet.sim.servers import ManagedProcess, Mosquitto, VictoriaMetrics, free_port, wait_for
from tests.collector_support import write_inventory

pytestmark = [pytest.mark.integration, pytest.mark.fault_injection]

REPO = Path(__file__).resolve().parents[2]
SCHOOLNET = str(Path(sys.executable).with_name("schoolnet"))
TENANT = "fault"
SITES = ["gy-nord", "gs-sued", "rs-west", "bk-ost"]
POLL_S = 0.025  # two sources (fast + self-health) at 40 Hz: ~80 batches/s per site
MESSAGES = 20_000
KILLS_PER_KIND = 2
DURABLE_AFTER_S = 12  # VictoriaMetrics persists within ~6 s (collector/durability.py)


class DedupVictoriaMetrics(VictoriaMetrics):
    """VictoriaMetrics keeping one sample per series and millisecond, as production should."""

    def command(self) -> list[str]:
        """The launcher's command plus deduplication."""
        return [*super().command(), "-dedup.minScrapeInterval=1ms"]


class CollectorProcess(ManagedProcess):
    """``schoolnet collector run`` as a process; ready once its HTTP endpoint answers."""

    name = "collector"

    def __init__(self, workdir: Path, config: Path, http_port: int) -> None:
        super().__init__(workdir)
        self.config = config
        self.http_port = http_port

    def command(self) -> list[str]:
        """The collector with our config."""
        return [SCHOOLNET, "collector", "run", "--config", str(self.config),
                "--log-level", "warning"]

    def is_ready(self) -> bool:
        """/healthz answers (503 is fine: the broker may be down right now)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz",
                                        timeout=1):
                return True
        except urllib.error.HTTPError:
            return True

    def status(self) -> dict[str, Any]:
        """/api/status."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/api/status",
                                    timeout=5) as r:
            return dict(json.loads(r.read()))


class AgentProcess(ManagedProcess):
    """One site's agent (tests/fault_agent.py) as a process."""

    def __init__(self, workdir: Path, site: str, site_file: Path, spool_dir: Path) -> None:
        self.name = f"agent-{site}"
        super().__init__(workdir)
        self.site = site
        self.site_file = site_file
        self.spool_dir = spool_dir

    def command(self) -> list[str]:
        """The real agent with the fast source."""
        return [sys.executable, "-m", "tests.fault_agent", str(self.site_file),
                str(self.spool_dir)]

    def env(self) -> dict[str, str]:
        """Find the tests package from the agent's working directory."""
        return {**os.environ, "PYTHONPATH": str(REPO)}

    def is_ready(self) -> bool:
        """The spool exists with its schema (the agent opened it)."""
        try:
            self.next_seq()
        except (sqlite3.OperationalError, TypeError):  # not there yet, or not yet set up
            return False
        return True

    def next_seq(self) -> int:
        """How many seqs the site's spool has handed out (read beside the running agent)."""
        path = self.spool_dir / f"{TENANT}.{self.site}.spool.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])

    def unsent(self) -> int:
        """Batches still waiting in the spool."""
        path = self.spool_dir / f"{TENANT}.{self.site}.spool.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM batch WHERE sent_ns IS NULL").fetchone()[0])


def points_in_db(db: VictoriaMetrics, site: str, *, raw: bool = False) -> int:
    """Samples of the site's two per-batch series (device_n, agent_uptime_s).

    ``raw``: as stored, before deduplication (rewrites show up here).
    """
    db.flush()
    total = 0
    for name in ("device_n", "agent_uptime_s"):
        params = {"match[]": f'{{__name__="{name}",tenant="{TENANT}",site="{site}"}}',
                  "start": "0"}
        if raw:
            params["reduce_mem_usage"] = "1"
        with urllib.request.urlopen(f"{db.url}/api/v1/export?{urllib.parse.urlencode(params)}",
                                    timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.strip():
                    total += len(json.loads(line)["values"])
    return total


def run_faults(timeline: list[tuple[float, str, float]], rng: random.Random,
               servers: dict[str, ManagedProcess], agents: list[AgentProcess]) -> Counter[str]:
    """SIGKILL at each (time, kind, down time) and start again after the down time.

    Kills and restarts are one ordered list of actions, so down times overlap freely. An
    agent victim is drawn at kill time; a victim that is down already is not killed again.
    """
    actions: list[tuple[float, int, str, ManagedProcess]] = []
    for i, (at, kind, down) in enumerate(timeline):
        victim = servers.get(kind) or rng.choice(agents)
        actions += [(at, i, "kill", victim), (at + down, i, "start", victim)]
    kills: Counter[str] = Counter()
    names = {id(v): k for k, v in servers.items()}
    t0 = time.monotonic()
    for at, _, action, victim in sorted(actions, key=lambda a: (a[0], a[1])):
        time.sleep(max(0.0, at - (time.monotonic() - t0)))
        if action == "kill" and victim.running:
            victim.kill()  # SIGKILL to that PID
            kills[names.get(id(victim), "agent")] += 1
        elif action == "start" and not victim.running:
            victim.start()
    return kills


def test_nothing_is_lost_when_broker_collector_database_and_agents_are_killed(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("SCHOOLNET_FAULT_SEED", str(time.time_ns() % 10**6)))
    rng = random.Random(seed)
    print(f"\nfault injection seed {seed} (SCHOOLNET_FAULT_SEED to repeat)")
    started = time.monotonic()

    inv = write_inventory(tmp_path / "inv", TENANT, {s: [("sw-1", "switch", "hp")] for s in SITES})
    broker = Mosquitto(tmp_path / "broker")
    db = DedupVictoriaMetrics(tmp_path / "vm")
    http_port = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, client_id: fault-collector,"
        " reconnect_min_s: 0.1, reconnect_max_s: 1}\n"
        f"influx: {{url: '{db.url}', flush_interval_s: 0.2, retry_min_s: 0.1, retry_max_s: 1,"
        f" durable_after_s: {DURABLE_AFTER_S}}}\n"
        f"inventory: inv\nhttp: {{port: {http_port}}}\nstate_dir: state\nlog_interval_s: 10\n")
    collector = CollectorProcess(tmp_path / "collector", cfg, http_port)
    agents = []
    for site in SITES:
        site_file = inv / TENANT / f"{site}.yaml"
        site_file.write_text(site_file.read_text() + (
            f"agent:\n  poll_interval_s: {POLL_S}\n"
            f"  broker: {{host: 127.0.0.1, port: {broker.port}, keepalive_s: 5}}\n"))
        agents.append(AgentProcess(tmp_path / "agents", site, site_file, tmp_path / "spool"))
    procs: list[ManagedProcess] = [db, broker, collector, *agents]

    def produced() -> int:
        return sum(a.next_seq() for a in agents)

    try:
        for p in procs:
            p.start()
        wait_for(lambda: produced() >= 200, 60, "the agents to produce")

        # -- faults: every kind KILLS_PER_KIND times at random moments, each down for a
        # random while, so they overlap; plus once the broker dies while the collector
        # is away (its queue at the broker is then only in the broker's memory).
        t, timeline = 0.0, []
        plan: list[str] = [k for k in ("broker", "collector", "database", "agent")
                           for _ in range(KILLS_PER_KIND)] + ["collector+broker"]
        rng.shuffle(plan)
        for kind in plan:
            t += rng.uniform(1.0, 4.0)
            if kind == "collector+broker":
                timeline += [(t, "collector", 4.0), (t + rng.uniform(1.0, 2.5), "broker", 1.0)]
            else:
                timeline.append((t, kind, rng.uniform(0.2, 3.0)))
        kills = run_faults(timeline, rng, {"broker": broker, "collector": collector,
                                           "database": db}, agents)
        wait_for(lambda: produced() >= MESSAGES, 150, f"{MESSAGES} batches")

        # -- recovery: agents flush and stop; everything must arrive
        for a in agents:
            a.stop(timeout=30)
        expected = {a.site: a.next_seq() for a in agents}
        assert all(a.unsent() == 0 for a in agents), "an agent could not deliver its spool"

        def complete() -> bool:
            return all(points_in_db(db, s) >= n for s, n in expected.items())

        try:
            wait_for(complete, 90, "every seq in the database", interval=1.0)
        finally:
            got = {s: points_in_db(db, s) for s in SITES}
            raw = {s: points_in_db(db, s, raw=True) for s in SITES}
            status = {s["site"]: s for s in collector.status()["sites"]}
            print(f"fault injection: {sum(expected.values())} messages (batches) from "
                  f"{len(SITES)} sites; kills {dict(kills)}; "
                  f"lost {sum(max(0, expected[s] - got[s]) for s in SITES)}; "
                  f"duplicates in the database {sum(max(0, got[s] - expected[s]) for s in SITES)}; "
                  f"replays skipped by seq {sum(s['seq_duplicates'] for s in status.values())}; "
                  f"rewrites stored before deduplication {sum(raw[s] - got[s] for s in SITES)}; "
                  f"wall time {time.monotonic() - started:.0f} s")
            print(f"per site: expected {expected}, in the database {got}")
        assert got == expected  # every (site, seq) exactly once
        for site, n in expected.items():
            s = status[site]
            assert (s["seq_highest"], s["seq_gaps"]) == (n - 1, 0), s
        assert all(kills[k] >= KILLS_PER_KIND for k in ("broker", "collector", "database",
                                                         "agent")), kills
    except BaseException:
        for p in procs:
            print(f"--- {p.name} log tail ---\n{p.log_tail(15)}")
        raise
    finally:
        for p in reversed(procs):
            p.stop()
