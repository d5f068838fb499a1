"""The acceptance scenarios of outages and alert mail, on real servers.

Real Mosquitto, real VictoriaMetrics, a real SMTP server (aiosmtpd on a free loopback
port) and the real collector (in this process, or as a process that gets SIGKILLed).
Points and statuses are published with MQTT clients as an agent would; a site losing
its connection is a stand-in agent process killed with SIGKILL. Hold-downs are shortened
through the tenant's thresholds, and every wait is for a condition, with a deadline.
Each test has its own tenant (topics, series) and MQTT client id.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from click.testing import CliRunner

from collector.app import Collector
from collector.config import CollectorConfig, load_config
from collector.outages.cli import maintenance, outages_command
from schoolnet.inventory import load_inventory
from schoolnet.sim.servers import Mosquitto, VictoriaMetrics, free_port, wait_for
from schoolnet.wire import Batch, Point, Status, encode_batch, encode_status, status_topic
from tests.integration.test_collector_pipeline import get
from tests.outage_support import (
    controller_devices,
    controller_poll,
    device_point,
    port_point,
    probe_round,
    school_devices,
    write_site,
    write_tenant,
)
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

SCHOOLNET = str(Path(sys.executable).with_name("schoolnet"))
ALL_HOURS = {"lesson_hours": "00:00-24:00", "holidays": ["none"],
             "school_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
FAST = {"hold_down_s": 1, "min_open_s": 0, "device_failed_polls": 1}


def setup(tmp: Path, broker: Mosquitto, db: VictoriaMetrics, smtp_port: int,
          sites: dict[str, list[dict[str, Any]]], *, thresholds: dict[str, Any] | None = None,
          alerting: dict[str, Any] | None = None) -> Path:
    """Inventory (own tenant) and collector config file; returns the config path."""
    tenant = "t" + uuid.uuid4().hex[:10]
    write_tenant(tmp / "inv", tenant, thresholds={**FAST, **(thresholds or {})},
                 alerting={"recipients": ["schul-it@example.org"], **ALL_HOURS,
                           **(alerting or {})})
    for site, devices in sites.items():
        write_site(tmp / "inv", tenant, site, devices)
    cfg = {
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"c-{tenant}",
                 "tenants": [tenant], "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "influx": {"url": db.url, "flush_interval_s": 0.1, "retry_min_s": 0.05,
                   "retry_max_s": 0.2},
        "inventory": "inv", "http": {"host": "127.0.0.1", "port": 0}, "state_dir": "state",
        "alerting": {"smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                              "from": "schoolnet@noc.example.org"},
                     "tick_s": 0.1, "retry_min_s": 0.1, "retry_max_s": 0.5},
    }
    path = tmp / "collector.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def eventually(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` in the event loop (it reads the collector's state) until truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = check()
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def tenant_of(cfg: CollectorConfig) -> str:
    return cfg.mqtt.tenants[0]


@asynccontextmanager
async def collector(path: Path, clock: Any = None) -> AsyncIterator[Collector]:
    """The collector in this event loop, subscribed."""
    cfg = load_config(path)
    c = Collector(cfg, load_inventory(cfg.inventory, resolve_secrets=False))
    assert c.outages is not None
    if clock is not None:
        c.outages.clock = clock
    stop = asyncio.Event()
    task = asyncio.create_task(c.serve(stop, shutdown_timeout_s=5))
    await c.started.wait()
    await eventually(lambda: c.subscriber.subscribed, "the collector to subscribe")
    try:
        yield c
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def mqtt(broker: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"p-{uuid.uuid4().hex}") as p:
        yield p


async def send_status(pub: aiomqtt.Client, tenant: str, site: str, state: str) -> None:
    status = Status(site=site, state=state, reason="lost" if state == "offline" else "")
    await pub.publish(status_topic(tenant, site), encode_status(status), qos=1, retain=True)


class Seq:
    """Per-site sequence numbers for published batches."""

    def __init__(self) -> None:
        self.n = 0

    async def send(self, pub: aiomqtt.Client, tenant: str, site: str, kind: str,
                   points: list[Point]) -> None:
        self.n += 1
        await pub.publish(f"schoolnet/v1/{tenant}/{site}/{kind}",
                          encode_batch(Batch(site=site, seq=self.n, points=tuple(points),
                                             epoch="e")), qos=1)


def api(c: Collector) -> dict[str, Any]:
    assert c.outages is not None
    return c.outages.api()


def drained(c: Collector) -> bool:
    """Nothing waits in the mail queue."""
    return bool(api(c)["mail"]["pending"] == 0)


# -- 1: agent connection lost, back ---------------------------------------------------

def standin(broker: Mosquitto, tenant: str, site: str, keepalive: int = 5) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "schoolnet.sim.site_standin", "--port",
                          str(broker.port), "--tenant", tenant, "--site", site,
                          "--keepalive", str(keepalive), "--interval", "0.5"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "online"
    return p


def test_agent_connection_lost_one_down_then_one_resolved_in_the_same_thread(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    smtp = SmtpSink()
    smtp.start()
    path = setup(tmp_path, mosquitto, victoria, smtp.port, {"gy": school_devices()})
    tenant = tenant_of(load_config(path))
    keepalive = 5
    procs: list[subprocess.Popen[str]] = []

    async def scenario() -> None:
        async with collector(path) as c:
            procs.append(await asyncio.to_thread(standin, mosquitto, tenant, "gy", keepalive))
            await eventually(lambda: c.validator.sites[(tenant, "gy")].state == "online",
                             "the site online")
            procs[0].send_signal(signal.SIGKILL)
            # The acceptance bound: hold-down + 1.5 x keepalive + 15 s.
            await eventually(lambda: smtp.count() >= 1, "the DOWN mail",
                             timeout=1 + 1.5 * keepalive + 15)
            procs.append(await asyncio.to_thread(standin, mosquitto, tenant, "gy", keepalive))
            await eventually(lambda: smtp.count() >= 2, "the RESOLVED mail")
            await eventually(lambda: not api(c)["open"] and drained(c), "all quiet")

    try:
        asyncio.run(scenario())
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
        smtp.stop()
    down, resolved = smtp.messages
    assert down["Subject"].endswith(": Standort-Agent (Verbindung) DOWN")
    assert "RESOLVED after" in resolved["Subject"]
    assert resolved["In-Reply-To"] == resolved["References"] == down["Message-ID"]
    assert down["Subject"].split("]")[0] == resolved["Subject"].split("]")[0]
    assert smtp.envelopes[0] == ("schoolnet@noc.example.org", ["schul-it@example.org"])


# -- 2: uplink down at a site with 46 devices -----------------------------------------

def test_uplink_down_behind_it_46_devices_is_one_mail_naming_the_root_cause(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    smtp = SmtpSink()
    smtp.start()
    devices = school_devices(aps=40, switches=4)
    path = setup(tmp_path, mosquitto, victoria, smtp.port, {"gy": devices})
    tenant = tenant_of(load_config(path))
    seq = Seq()

    async def round_(pub: aiomqtt.Client, ok: bool) -> None:
        now = time.time()
        await seq.send(pub, tenant, "gy", "probe", probe_round(now, 0 if ok else 100))
        await seq.send(pub, tenant, "gy", "metrics",
                       [device_point(d["name"], ok, now, d["role"]) for d in devices])

    async def scenario() -> None:
        async with collector(path) as c, mqtt(mosquitto) as pub:
            for _ in range(2):
                await round_(pub, ok=False)

            def root_with_all_affected() -> bool:
                return any(o["kind"] == "uplink" and o["affected_total"] >= len(devices)
                           for o in api(c)["open"])

            await eventually(root_with_all_affected, "46 devices recorded as affected")
            await eventually(lambda: smtp.count() >= 1 and drained(c), "the mail")
            status, body = await asyncio.to_thread(get, c, "/api/outages")  # type: ignore[arg-type]
            assert status == 200
            (root,) = [o for o in json.loads(body)["open"] if o["root"] is None]
            assert root["kind"] == "uplink" and root["devices_behind"] == len(devices)
            assert smtp.count() == 1
            await round_(pub, ok=True)
            await eventually(lambda: not api(c)["open"] and smtp.count() >= 2 and drained(c),
                             "recovery")

    try:
        asyncio.run(scenario())
    finally:
        smtp.stop()
    down, resolved = smtp.messages
    assert down["Subject"].endswith(": Internet-Anbindung DOWN")
    assert "46 von 46 Geräten" in down.get_body().get_content()  # type: ignore[union-attr]
    assert "RESOLVED after" in resolved["Subject"] and "Internet-Anbindung" in resolved["Subject"]


# -- 3: a port flapping 10 times ------------------------------------------------------

def test_port_flapping_ten_times_is_at_most_two_mails(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    smtp = SmtpSink()
    smtp.start()
    path = setup(tmp_path, mosquitto, victoria, smtp.port, {"gy": school_devices()},
                 thresholds={"hold_down_s": 60, "flap_transitions": 6, "flap_window_s": 300,
                             "flap_quiet_s": 2})
    tenant = tenant_of(load_config(path))
    seq = Seq()

    async def scenario() -> None:
        async with collector(path) as c, mqtt(mosquitto) as pub:
            for i in range(20):  # 10 times down and up again
                await seq.send(pub, tenant, "gy", "metrics",
                               [port_point("core-sw", "Gi0/1", i % 2 == 1, time.time())])
            await eventually(lambda: api(c)["recent"] and not api(c)["open"] and drained(c)
                             and smtp.count() >= 2, "flapping over, stable again")

    try:
        asyncio.run(scenario())
    finally:
        smtp.stop()
    subjects = smtp.subjects()
    assert len(subjects) <= 2
    assert subjects[0].endswith(": Port core-sw Gi0/1 FLAPPING")
    assert "RESOLVED after" in subjects[-1]


# -- 4: maintenance window ------------------------------------------------------------

def test_maintenance_window_no_mail_but_recorded_and_listed(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    smtp = SmtpSink()
    smtp.start()
    path = setup(tmp_path, mosquitto, victoria, smtp.port,
                 {"gy": school_devices(), "rs": school_devices()})
    tenant = tenant_of(load_config(path))
    cli = CliRunner()
    added = cli.invoke(maintenance, ["add", "-c", str(path), "--tenant", tenant, "--site", "gy",
                                     "--for", "1h", "--reason", "Switch-Tausch"])
    assert added.exit_code == 0, added.output
    listed = cli.invoke(maintenance, ["list", "-c", str(path)])
    assert "active" in listed.output and "Switch-Tausch" in listed.output

    async def scenario() -> None:
        async with collector(path) as c, mqtt(mosquitto) as pub:
            await send_status(pub, tenant, "gy", "offline")
            await eventually(lambda: api(c)["open"], "the outage recorded")
            await send_status(pub, tenant, "gy", "online")
            await eventually(lambda: api(c)["recent"] and not api(c)["open"], "recovery")
        # (the collector has stopped: its outage points are written)

    try:
        asyncio.run(scenario())
    finally:
        smtp.stop()
    assert smtp.count() == 0
    out = cli.invoke(outages_command, ["-c", str(path), "--json"])
    (row,) = json.loads(out.output)
    assert (row["site"], row["what"], row["state"], row["mailed"]) == (
        "gy", "agent connection", "resolved", True)
    sel = f'{{__name__="outage_open",tenant="{tenant}"}}'
    wait_for(lambda: len(victoria.export(sel)) == 1, 20, "the outage series")
    (series,) = victoria.export(sel)
    assert series["values"] == [1, 0] and series["metric"]["kind"] == "agent"


# -- 5: collector SIGKILLed while an outage is open -----------------------------------

def test_collector_sigkill_while_open_then_one_resolved_and_no_second_down(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    smtp = SmtpSink()
    smtp.start()
    path = setup(tmp_path, mosquitto, victoria, smtp.port, {"gy": school_devices()})
    tenant = tenant_of(load_config(path))
    port = free_port()

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen([SCHOOLNET, "collector", "run", "-c", str(path), "--http-port",
                              str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def subscribed() -> bool:
            with __import__("urllib.request").request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(subscribed, 30, "the collector process")
        return p

    def publish(state: str) -> None:
        async def go() -> None:
            async with mqtt(mosquitto) as pub:
                await send_status(pub, tenant, "gy", state)
        asyncio.run(go())

    proc = start()
    try:
        publish("offline")
        wait_for(lambda: smtp.count() >= 1, 30, "the DOWN mail")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start()
        publish("online")
        wait_for(lambda: smtp.count() >= 2, 30, "the RESOLVED mail")

        def quiet() -> bool:
            with __import__("urllib.request").request.urlopen(
                    f"http://127.0.0.1:{port}/api/outages", timeout=2) as r:
                doc = json.loads(r.read())
            return not doc["open"] and doc["mail"]["pending"] == 0

        wait_for(quiet, 30, "no open outage, no queued mail")
    finally:
        proc.kill()
        proc.wait(10)
        smtp.stop()
    down, resolved = smtp.messages
    assert down["Subject"].endswith(" DOWN") and "RESOLVED after" in resolved["Subject"]
    assert resolved["In-Reply-To"] == down["Message-ID"]


# -- 6: SMTP relay down while 3 outages open ------------------------------------------

def test_relay_down_three_outages_none_lost_in_order_across_a_restart(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    smtp = SmtpSink()  # not started: the relay is down
    sites = ("gs-a", "gs-b", "gs-c")
    path = setup(tmp_path, mosquitto, victoria, smtp.port,
                 {s: school_devices(aps=1, switches=1) for s in sites})
    tenant = tenant_of(load_config(path))

    async def scenario() -> None:
        async with collector(path) as c, mqtt(mosquitto) as pub:
            for i, s in enumerate(sites):
                await send_status(pub, tenant, s, "offline")
                await eventually(lambda n=i + 1: len(api(c)["open"]) == n, f"outage at {s}")
            await eventually(lambda: api(c)["mail"]["pending"] == 3
                             and api(c)["mail"]["relay_failing"], "3 mails waiting")
        async with collector(path) as c:  # a restart while the relay is still down
            assert api(c)["mail"]["pending"] == 3
            smtp.start()
            await eventually(lambda: smtp.count() >= 3 and drained(c), "3 mails delivered")

    try:
        asyncio.run(scenario())
    finally:
        smtp.stop()
    subjects = smtp.subjects()
    assert len(subjects) == 3
    order = [next(x for x in sites if s.split(": ")[0].endswith(x)) for s in subjects]
    assert order == list(sites)  # oldest first


# -- 7: morning digest, injected clock ------------------------------------------------

class OffsetClock:
    """Wall-clock time moved by ``offset`` seconds; the test turns it forward."""

    def __init__(self, start: float) -> None:
        self.offset = start - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset

    def jump_to(self, t: float) -> None:
        self.offset = t - time.time()


def test_outside_lesson_hours_morning_digest(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    smtp = SmtpSink()
    smtp.start()
    berlin = ZoneInfo("Europe/Berlin")
    # Real lesson hours and holidays of NRW; a Monday night, then Tuesday morning.
    path = setup(tmp_path, mosquitto, victoria, smtp.port, {"gy": school_devices()},
                 thresholds={"silent_intervals": 10**6},  # the clock jumps 9 hours
                 alerting={"lesson_hours": "07:30-16:00", "holidays": ["de-nw"],
                           "school_days": ["mon", "tue", "wed", "thu", "fri"],
                           "policy": {"outside_lesson_hours": "digest"}, "digest_at": "07:00"})
    tenant = tenant_of(load_config(path))
    clock = OffsetClock(dt.datetime(2025, 11, 24, 22, 0, tzinfo=berlin).timestamp())

    async def scenario() -> None:
        async with collector(path, clock) as c, mqtt(mosquitto) as pub:
            await send_status(pub, tenant, "gy", "offline")
            await eventually(lambda: api(c)["open"], "the night outage")
            await send_status(pub, tenant, "gy", "online")
            await eventually(lambda: api(c)["recent"] and not api(c)["open"], "its recovery")
            assert smtp.count() == 0
            clock.jump_to(dt.datetime(2025, 11, 25, 6, 59, 58, tzinfo=berlin).timestamp())
            await eventually(lambda: smtp.count() >= 1 and drained(c), "the digest")
            assert c.outages is not None
            await eventually(lambda: not c.outages.dispatcher.digest, "digest sent")  # type: ignore[union-attr]

    try:
        asyncio.run(scenario())
    finally:
        smtp.stop()
    (digest,) = smtp.messages
    assert "Übersicht 25.11.2025 07:00" in digest["Subject"]
    assert "Standort-Agent (Verbindung)" in digest.get_body().get_content()  # type: ignore[union-attr]


# -- 8: an AP behind a WLAN controller --------------------------------------------------

def test_ap_dropping_off_its_controller_is_one_mail_and_an_unreachable_controller_none(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    smtp = SmtpSink()
    smtp.start()
    path = setup(tmp_path, mosquitto, victoria, smtp.port, {"gy": controller_devices()})
    tenant = tenant_of(load_config(path))
    seq = Seq()
    four = {"ap-aula": "up", "ap-r101": "up", "ap-r102": "up", "ap-halle": "up"}
    gone = {**four, "ap-halle": "gone"}
    cli = CliRunner()

    def wlc(c: Collector) -> dict[str, Any]:
        rows = api(c)["controllers"]
        return rows[0] if rows else {"expected": 0, "checked_at": None}

    async def polls(c: Collector, pub: aiomqtt.Client, aps: dict[str, str], n: int = 1,
                    reachable: bool = True) -> None:
        """Send ``n`` controller polls, each once the collector has handled the last."""
        for _ in range(n):
            await seq.send(pub, tenant, "gy", "metrics",
                           controller_poll(aps, time.time(), reachable=reachable))
            # The engine handles a message in the same step that counts it.
            await eventually(lambda: c.validator.sites[(tenant, "gy")].messages >= seq.n,
                             "the poll handled")

    def mails(c: Collector) -> int:
        m = api(c)["mail"]
        return int(m["sent"] + m["pending"] + m["failed"])

    async def scenario() -> None:
        async with collector(path) as c, mqtt(mosquitto) as pub:
            await polls(c, pub, four)
            await eventually(lambda: wlc(c)["expected"] == 4, "four APs learned")
            await polls(c, pub, four)
            await polls(c, pub, gone, 2)  # judged missing when the next poll starts
            await eventually(lambda: smtp.count() >= 1 and drained(c), "the AP's DOWN mail")
            assert wlc(c)["not_joined"] == ["ap-halle"] and wlc(c)["joined"] == 3
            await polls(c, pub, gone, 2)  # still gone: no second mail
            assert mails(c) == 1
            await polls(c, pub, four, 2)
            await eventually(lambda: smtp.count() >= 2 and drained(c), "its RESOLVED mail")
            for _ in range(3):  # the controller stops answering
                await polls(c, pub, four, reachable=False)
            await eventually(lambda: smtp.count() >= 3 and drained(c), "the controller's mail")
            listed = cli.invoke(outages_command, ["aps", "-c", str(path), "--json"])
            assert listed.exit_code == 0, listed.output
            assert sorted(r["ap"] for r in json.loads(listed.output)) == sorted(four)
            forget = cli.invoke(outages_command, ["forget-ap", "-c", str(path),
                                                  f"{tenant}/gy/ap-r102"])
            assert forget.exit_code == 0, forget.output
            await eventually(lambda: wlc(c)["expected"] == 3, "the AP forgotten")
            assert mails(c) == 3

    try:
        asyncio.run(scenario())
    finally:
        smtp.stop()
    down, resolved, controller = smtp.subjects()
    assert down.endswith(": Access-Point ap-halle DOWN")
    assert "Access-Point ap-halle RESOLVED after" in resolved
    assert controller.endswith(": Gerät wlc DOWN")
    body = smtp.messages[0].get_body().get_content()  # type: ignore[union-attr]
    assert "Controller: wlc" in body and "Clients zuletzt: 5" in body
