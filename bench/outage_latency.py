"""Bench: how long from a site losing its connection to the DOWN mail (acceptance 1).

Everything real and on loopback: Mosquitto, VictoriaMetrics, the collector (in this
process) with its **default** outage settings (hold-down 60 s, tick 1 s), an SMTP
server (aiosmtpd), and one stand-in agent process per site
(:mod:`schoolnet.sim.site_standin`, last will like the agent's, MQTT keepalive 30 s
like the agent's default). Sites lose their connection at random moments, two ways:

- ``kill``: the agent process dies (SIGKILL): the kernel closes its socket and the
  broker publishes the last will at once;
- ``freeze``: the link goes silent (SIGSTOP: nothing more is sent, the socket stays
  open), as when a school's uplink dies: the broker notices only after 1.5 x keepalive.

Per site it measures *detection-to-mail* (the collector received the last will ->
the mail is in the SMTP server) and *cut-to-mail* (the connection lost -> mail). The one
non-default: lesson hours all week, so the tenant's policy mails at once (outside
lesson hours the default policy is the morning digest). Figures are printed, never
asserted. Run: ``.venv/bin/python -m bench.outage_latency [--sites 16]`` (~3 min).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from collector.app import Collector
from collector.config import load_config
from schoolnet.inventory import load_inventory
from schoolnet.sim.servers import Mosquitto, VictoriaMetrics
from tests.outage_support import school_devices, write_site, write_tenant
from tests.smtp_sink import SmtpSink

KEEPALIVE = 30  # the agent's default (BrokerSettings.keepalive_s)


def write_setup(root: Path, broker: Mosquitto, db: VictoriaMetrics, smtp_port: int,
                sites: list[str]) -> Path:
    tenant = "bench" + uuid.uuid4().hex[:6]
    write_tenant(root / "inv", tenant, alerting={
        "recipients": ["noc@example.org"], "lesson_hours": "00:00-24:00", "holidays": ["none"],
        "school_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]})
    for s in sites:
        write_site(root / "inv", tenant, s, school_devices(aps=2, switches=1))
    cfg = {"mqtt": {"host": broker.host, "port": broker.port, "client_id": f"c-{tenant}",
                    "tenants": [tenant]},
           "influx": {"url": db.url}, "inventory": "inv", "http": {"port": 0},
           "state_dir": "state",
           "alerting": {"smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                                 "from": "schoolnet@noc.example.org"}}}
    path = root / "collector.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_standin(broker: Mosquitto, tenant: str, site: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "schoolnet.sim.site_standin", "--port",
                          str(broker.port), "--tenant", tenant, "--site", site, "--keepalive",
                          str(KEEPALIVE), "--interval", "10"], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "online"
    return p


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<34} (no samples)"
    v = sorted(values)
    p90 = v[min(len(v) - 1, round(0.9 * (len(v) - 1)))]
    return (f"{name:<34} n={len(v):<3} min {v[0]:6.1f}  median {statistics.median(v):6.1f}  "
            f"p90 {p90:6.1f}  max {v[-1]:6.1f}  s")


async def measure(path: Path, broker: Mosquitto, smtp: SmtpSink, sites: list[str],
                  spread_s: float) -> dict[str, dict[str, float]]:
    cfg = load_config(path)
    tenant = cfg.mqtt.tenants[0]
    c = Collector(cfg, load_inventory(cfg.inventory, resolve_secrets=False))
    assert c.outages is not None
    stop = asyncio.Event()
    task = asyncio.create_task(c.serve(stop))
    procs = {s: await asyncio.to_thread(start_standin, broker, tenant, s) for s in sites}
    cut: dict[str, tuple[str, float]] = {}
    rng = random.Random(7)
    try:
        while not all(c.validator.sites[(tenant, s)].state == "online" for s in sites):
            await asyncio.sleep(0.1)
        order = sites[:]
        rng.shuffle(order)
        start = time.time()
        for i, s in enumerate(order):
            # Evenly spread, so cuts fall at every phase of the collector's 1 s tick.
            await asyncio.sleep(max(0.0, start + i * spread_s / len(order) - time.time()))
            mode = "kill" if i % 2 == 0 else "freeze"
            procs[s].send_signal(signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
            cut[s] = (mode, time.time())
        deadline = time.time() + 1.5 * KEEPALIVE + 60 + 60
        while smtp.count() < len(sites) and time.time() < deadline:
            await asyncio.sleep(0.2)
        results: dict[str, dict[str, float]] = {}
        opened = {o["site"]: o for o in c.outages.api()["open"]}
        for msg, arrived in zip(list(smtp.messages), list(smtp.arrived), strict=True):
            site = next(s for s in sites if str(msg["Subject"]).split(":")[0].endswith(s))
            mode, t_cut = cut[site]
            detected = float(opened[site]["started"]) if site in opened else float("nan")
            results[site] = {"mode": 0.0 if mode == "kill" else 1.0,
                             "cut_to_mail": arrived - t_cut,
                             "detection_to_mail": arrived - detected}
        return results
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(5)
        stop.set()
        await asyncio.wait_for(task, 30)


def main() -> None:
    """Run the benchmark and print the distribution."""
    ap = argparse.ArgumentParser(description="detection-to-mail latency of a lost site")
    ap.add_argument("--sites", type=int, default=16)
    ap.add_argument("--spread", type=float, default=30.0,
                    help="seconds over which the sites lose their connection")
    a = ap.parse_args()
    sites = [f"s{i:02d}" for i in range(a.sites)]
    with tempfile.TemporaryDirectory(prefix="outage-bench-") as tmp:
        root = Path(tmp)
        with Mosquitto(root / "mq") as broker, VictoriaMetrics(root / "vm") as db:
            smtp = SmtpSink()
            smtp.start()
            try:
                path = write_setup(root, broker, db, smtp.port, sites)
                t0 = time.time()
                res = asyncio.run(measure(path, broker, smtp, sites, a.spread))
            finally:
                smtp.stop()
    print(f"outage latency, {a.sites} sites, default settings (hold-down 60 s, tick 1 s, "
          f"MQTT keepalive {KEEPALIVE} s), {os.cpu_count()} CPUs, run {time.time() - t0:.0f} s")
    print(f"mails: {len(res)} of {a.sites} sites (exactly one DOWN per site expected)")
    for mode, label in ((0.0, "kill (socket closed)"), (1.0, "freeze (link silent)")):
        rows = [r for r in res.values() if r["mode"] == mode]
        print(f"-- {label}")
        print(summary("  detection -> mail", [r["detection_to_mail"] for r in rows]))
        print(summary("  connection lost -> mail", [r["cut_to_mail"] for r in rows]))
    print(summary("all: detection -> mail", [r["detection_to_mail"] for r in res.values()]))
    print(summary("all: connection lost -> mail", [r["cut_to_mail"] for r in res.values()]))


if __name__ == "__main__":
    main()
