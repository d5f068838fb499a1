"""Bench: the agent's uplink probes next to ``iperf3`` and ``ping`` run by hand.

Same lab as the acceptance tests (tests/uplink_lab.py: a "site" and a "NOC" network
namespace joined by veth, shaped with tbf, iptables statistic and an NFQUEUE delay at
the receiving side). For each shaped link the agent's probe runs in the site namespace,
then the reference tool by hand on the same link, and both figures go into one table.
Figures only, no asserts. Needs root. Run: ``.venv/bin/python -m bench.uplink_probes``
(~1 min).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from agent.probes.icmp import IcmpSource
from agent.probes.schedule import ThroughputSchedule
from agent.probes.throughput import ThroughputSource
from schoolnet.calendars import SchoolCalendar
from schoolnet.inventory import Uplink
from schoolnet.probeconfig import IcmpSettings, ProbeTarget, ThroughputSettings
from schoolnet.wire import Point
from tests.uplink_lab import UplinkLab, lab_unavailable

Row = tuple[str, str, str, str]


def agent_icmp(lab: UplinkLab, count: int, spacing_ms: float) -> dict[str, Any]:
    async def run() -> list[Point]:
        src = IcmpSource([ProbeTarget(name="noc", host=lab.noc_ip, kind="noc")],
                         IcmpSettings(count=count, spacing_ms=spacing_ms, timeout_s=1))
        try:
            return await src.collect(time.time_ns())
        finally:
            await src.close()

    return dict(lab.at_site(run)[0].fields)


def hand_ping(lab: UplinkLab, count: int, spacing_ms: float) -> dict[str, float]:
    r = lab.exec_at_site("ping", "-n", "-q", "-c", str(count), "-i", str(spacing_ms / 1000),
                         "-W", "1", lab.noc_ip, timeout=120)
    out: dict[str, float] = {}
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    if m:
        sent, got = int(m.group(1)), int(m.group(2))
        out["loss_pct"] = 100.0 * (sent - got) / sent
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.stdout)
    if m:
        out.update(rtt_min_ms=float(m.group(1)), rtt_avg_ms=float(m.group(2)),
                   rtt_max_ms=float(m.group(3)), mdev_ms=float(m.group(4)))
    return out


def agent_throughput(lab: UplinkLab, down: float, up: float, seconds: int) -> dict[str, float]:
    settings = ThroughputSettings(server=lab.noc_ip, duration_s=seconds)
    uplink = Uplink(kind="dsl", down_mbit=down, up_mbit=up, device="r", interface="wan")
    src = ThroughputSource(settings, uplink, ThroughputSchedule(
        settings, SchoolCalendar(), site_key="bench/site", test_s=60))
    points = lab.at_site(lambda: src.run_now(time.time_ns()))
    return {p.tags["direction"]: float(p.fields.get("rate_mbps", float("nan")))
            for p in points}


def hand_iperf3(lab: UplinkLab, seconds: int) -> dict[str, float]:
    out = {}
    for direction, flag in (("down", ["-R"]), ("up", [])):
        r = lab.exec_at_site("iperf3", "-c", lab.noc_ip, "-J", "-t", str(seconds), *flag,
                             timeout=120)
        doc = json.loads(r.stdout)
        out[direction] = doc["end"]["sum_received"]["bits_per_second"] / 1e6
    return out


def f(v: Any, unit: str = "") -> str:
    return f"{v:.2f}{unit}" if isinstance(v, float) else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 test length")
    args = ap.parse_args()
    why = lab_unavailable()
    if why:
        raise SystemExit(f"bench needs the uplink lab: {why}")
    rows: list[Row] = []
    with UplinkLab() as lab:
        lab.iperf3_server(5201)
        for down, up in ((50.0, 10.0), (100.0, 40.0), (16.0, 2.0)):
            lab.shape(down, up)
            a = agent_throughput(lab, down, up, args.seconds)
            h = hand_iperf3(lab, args.seconds)
            lab.unshape()
            for d, contract in (("down", down), ("up", up)):
                rows.append((f"tbf {down:g}/{up:g} Mbit/s, {d}", f"{contract:g} Mbit/s",
                             f"{f(a[d])} Mbit/s (ratio {a[d] / contract:.3f})",
                             f"{f(h[d])} Mbit/s"))
        for label, setup in (("no shaping", None), ("NFQUEUE +20 ms", ("delay", 20.0)),
                             ("NFQUEUE +50 ms", ("delay", 50.0))):
            if setup is not None:
                lab.delay(setup[1])
            a = agent_icmp(lab, 100, 20)
            h = hand_ping(lab, 100, 20)
            lab.clear_delay()
            rows.append((f"{label}, RTT avg / p95 (agent) / max", "",
                         f"{f(a.get('rtt_avg_ms'))} / {f(a.get('rtt_p95_ms'))} / "
                         f"{f(a.get('rtt_max_ms'))} ms, jitter {f(a.get('jitter_ms'))}",
                         f"{f(h.get('rtt_avg_ms'))} / - / {f(h.get('rtt_max_ms'))} ms, "
                         f"mdev {f(h.get('mdev_ms'))}"))
        for p in (0.05, 0.20):
            lab.loss(p)
            before = lab.dropped_by_statistic()
            a = agent_icmp(lab, 200, 10)
            mid = lab.dropped_by_statistic()
            h = hand_ping(lab, 200, 10)
            after = lab.dropped_by_statistic()
            lab.clear_loss()
            rows.append((f"random loss {p:.0%}, 200 echoes each", f"{p * 100:g} %",
                         f"{f(a['loss_pct'])} % (iptables dropped {mid - before})",
                         f"{f(h.get('loss_pct'))} % (iptables dropped {after - mid})"))
    head = ("link", "shaped", "agent", "by hand (iperf3 / ping)")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(4)]
    for r in (head, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
