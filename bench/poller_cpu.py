"""Bench: SNMP poller CPU per 10k varbinds, side by side with its peers, in one run.

Contenders, all walking the same IF-MIB columns of the same net-snmp ``snmpd`` (in a
network namespace with 48 veth interfaces, see netns_snmpd.py):

- ``schoolnet``: the agent's poller (``agent.snmp.build_sources``), one device, if_mib
  profile, repeated polls — what a site box really runs;
- ``pysnmp-bare``: a bare pysnmp ``bulk_cmd`` loop over the same columns (the floor
  for any pysnmp-based poller);
- ``snmpbulkwalk``: net-snmp's C tool, one process per column walk (LibreNMS style);
- ``snmp_exporter``: Debian's prometheus-snmp-exporter (Go), when installed.

Each contender runs in its own process inside the namespace and reports the CPU time
(user+sys) of its polling loop only, and how many varbinds it received. The figures
are printed, never asserted. Run: ``.venv/bin/python -m bench.poller_cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.bare_pysnmp import bare_poll_loop
from bench.netns_snmpd import SnmpdNamespace, can_create_namespaces

ROOT = Path(__file__).resolve().parents[1]

#: The IF-MIB columns the if_mib profile walks (numeric, as on the wire).
COLUMNS = [
    "1.3.6.1.2.1.2.2.1.2",  # ifDescr
    "1.3.6.1.2.1.2.2.1.3",  # ifType
    "1.3.6.1.2.1.2.2.1.7",  # ifAdminStatus
    "1.3.6.1.2.1.2.2.1.8",  # ifOperStatus
    "1.3.6.1.2.1.2.2.1.14",  # ifInErrors
    "1.3.6.1.2.1.2.2.1.13",  # ifInDiscards
    "1.3.6.1.2.1.2.2.1.19",  # ifOutDiscards
    "1.3.6.1.2.1.2.2.1.20",  # ifOutErrors
    "1.3.6.1.2.1.31.1.1.1.1",  # ifName
    "1.3.6.1.2.1.31.1.1.1.6",  # ifHCInOctets
    "1.3.6.1.2.1.31.1.1.1.10",  # ifHCOutOctets
    "1.3.6.1.2.1.31.1.1.1.15",  # ifHighSpeed
    "1.3.6.1.2.1.31.1.1.1.18",  # ifAlias
]


#: snmp_exporter metric name and type of each column (its module needs them).
EXPORTER_METRICS = {
    "1.3.6.1.2.1.2.2.1.2": ("ifDescr", "DisplayString"),
    "1.3.6.1.2.1.2.2.1.3": ("ifType", "gauge"),
    "1.3.6.1.2.1.2.2.1.7": ("ifAdminStatus", "gauge"),
    "1.3.6.1.2.1.2.2.1.8": ("ifOperStatus", "gauge"),
    "1.3.6.1.2.1.2.2.1.14": ("ifInErrors", "counter"),
    "1.3.6.1.2.1.2.2.1.13": ("ifInDiscards", "counter"),
    "1.3.6.1.2.1.2.2.1.19": ("ifOutDiscards", "counter"),
    "1.3.6.1.2.1.2.2.1.20": ("ifOutErrors", "counter"),
    "1.3.6.1.2.1.31.1.1.1.1": ("ifName", "DisplayString"),
    "1.3.6.1.2.1.31.1.1.1.6": ("ifHCInOctets", "counter"),
    "1.3.6.1.2.1.31.1.1.1.10": ("ifHCOutOctets", "counter"),
    "1.3.6.1.2.1.31.1.1.1.15": ("ifHighSpeed", "gauge"),
    "1.3.6.1.2.1.31.1.1.1.18": ("ifAlias", "DisplayString"),
}
EXPORTER = shutil.which("prometheus-snmp-exporter")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


async def _pysnmp_bare(port: int, rounds: int) -> tuple[float, int]:
    return await bare_poll_loop("127.0.0.1", port, "bench", [COLUMNS], rounds)


def _snmpbulkwalk(port: int, rounds: int) -> tuple[float, int]:
    varbinds = 0
    start = _child_cpu()
    for _ in range(rounds):
        for col in COLUMNS:
            out = subprocess.run(
                ["snmpbulkwalk", "-v2c", "-c", "bench", "-Cr25", "-On", "-Oq",
                 f"127.0.0.1:{port}", col],
                capture_output=True, text=True, check=True,
            ).stdout
            varbinds += sum(1 for line in out.splitlines() if line.startswith("."))
    return _child_cpu() - start, varbinds


async def _schoolnet(port: int, rounds: int) -> tuple[float, int]:
    from agent.snmp import build_sources
    from schoolnet.configfile import Secret
    from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials

    device = Device(name="bench-sw", host="127.0.0.1", port=port, role="switch",
                    profiles=("if_mib",),
                    snmp=SnmpCredentials(version="2c", community=Secret("bench")))
    site = Site(id="bench", name="bench", tenant="bench", uplink=None,
                agent=AgentSettings(), devices=(device,))
    (source,) = build_sources(site)
    await source.collect(time.time_ns())  # warm-up: fallback-column discovery
    before = source.stats.varbinds  # type: ignore[attr-defined]
    start = _cpu()
    for _ in range(rounds):
        await source.collect(time.time_ns())
    used = _cpu() - start
    # Values received that belong to the walked columns: the same count as the bare loop.
    varbinds = source.stats.varbinds - before  # type: ignore[attr-defined]
    close = getattr(source, "close", None)
    if close is not None:
        await close()
    return used, varbinds


def _exporter_config(port: int) -> str:
    """An snmp_exporter (0.21) module walking exactly COLUMNS, v2c community 'bench'."""
    lines = ["bench:", "  version: 2", "  max_repetitions: 25", "  auth:",
             "    community: bench", "  walk:"]
    lines += [f"  - {oid}" for oid in COLUMNS]
    lines.append("  metrics:")
    for oid in COLUMNS:
        name, kind = EXPORTER_METRICS[oid]
        lines += [f"  - name: {name}", f"    oid: {oid}", f"    type: {kind}",
                  "    indexes:", "    - labelname: ifIndex", "      type: gauge"]
    return "\n".join(lines) + "\n"


def _proc_cpu(pid: int) -> float:
    """user+sys CPU seconds of another process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _snmp_exporter(port: int, rounds: int) -> tuple[float, int]:
    """Scrape Debian's snmp_exporter (Go) ``rounds`` times; its CPU, samples received."""
    assert EXPORTER is not None
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "snmp.yml"
        conf.write_text(_exporter_config(port))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            http_port = s.getsockname()[1]
        proc = subprocess.Popen(
            [EXPORTER, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{http_port}",
             "--log.level=error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = (f"http://127.0.0.1:{http_port}/snmp?module=bench"
                   f"&target=127.0.0.1:{port}")
            deadline = time.monotonic() + 15
            while True:
                try:
                    urllib.request.urlopen(url, timeout=5).read()  # also warms up
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            samples = 0
            start = _proc_cpu(proc.pid)
            for _ in range(rounds):
                body = urllib.request.urlopen(url, timeout=10).read().decode()
                samples += sum(1 for line in body.splitlines()
                               if line.startswith("if") and not line.startswith("#"))
            used = _proc_cpu(proc.pid) - start
        finally:
            proc.terminate()
            proc.wait(10)
    return used, samples


def child(kind: str, port: int, rounds: int) -> None:
    """Run one contender (inside the namespace) and print its figures as JSON."""
    if kind == "pysnmp-bare":
        used, vbs = asyncio.run(_pysnmp_bare(port, rounds))
    elif kind == "snmpbulkwalk":
        used, vbs = _snmpbulkwalk(port, rounds)
    elif kind == "schoolnet":
        used, vbs = asyncio.run(_schoolnet(port, rounds))
    elif kind == "snmp_exporter":
        used, vbs = _snmp_exporter(port, rounds)
    else:
        raise SystemExit(f"unknown contender {kind}")
    print(json.dumps({"kind": kind, "cpu_s": used, "varbinds": vbs}))


def main() -> None:
    """Set up the namespace, run every contender, print the table and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40, help="polls per contender")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.port, args.rounds)
        return
    if not can_create_namespaces():
        raise SystemExit("needs root (network namespaces); nothing measured")
    results = {}
    with SnmpdNamespace() as ns:
        kinds = ["schoolnet", "pysnmp-bare", "snmpbulkwalk"]
        if EXPORTER:
            kinds.append("snmp_exporter")
        else:
            print("snmp_exporter: not installed (apt-get install prometheus-snmp-exporter)")
        for kind in kinds:
            proc = subprocess.run(
                [*ns.exec_prefix(), sys.executable, "-m", "bench.poller_cpu", "--child", kind,
                 "--port", str(ns.port), "--rounds", str(args.rounds)],
                capture_output=True, text=True, cwd=ROOT,
            )
            if proc.returncode != 0:
                print(f"{kind}: failed: {proc.stderr.strip()[-500:]}")
                continue
            results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    head = ("contender", "varbinds", "cpu s", "cpu us/varbind", "cpu ms/10k")
    print("{:<14} {:>9} {:>8} {:>15} {:>11}".format(*head))
    for kind, r in results.items():
        per = r["cpu_s"] / max(r["varbinds"], 1)
        row = (kind, r["varbinds"], f"{r['cpu_s']:.3f}", f"{per * 1e6:.1f}", f"{per * 1e7:.1f}")
        print("{:<14} {:>9} {:>8} {:>15} {:>11}".format(*row))
    if "schoolnet" in results and "pysnmp-bare" in results:
        ours = results["schoolnet"]["cpu_s"] / max(results["schoolnet"]["varbinds"], 1)
        bare = results["pysnmp-bare"]["cpu_s"] / max(results["pysnmp-bare"]["varbinds"], 1)
        print(f"ratio schoolnet / pysnmp-bare per varbind: {ours / bare:.2f} (target <= 1.1)")
    if "schoolnet" in results and "snmpbulkwalk" in results:
        ours = results["schoolnet"]["cpu_s"] / max(results["schoolnet"]["varbinds"], 1)
        c = results["snmpbulkwalk"]["cpu_s"] / max(results["snmpbulkwalk"]["varbinds"], 1)
        print(f"ratio schoolnet / snmpbulkwalk per varbind: {ours / c:.2f}")
    if "schoolnet" in results and "snmp_exporter" in results:
        ours = results["schoolnet"]["cpu_s"] / max(results["schoolnet"]["varbinds"], 1)
        go = results["snmp_exporter"]["cpu_s"] / max(results["snmp_exporter"]["varbinds"], 1)
        print(f"ratio schoolnet / snmp_exporter per varbind: {ours / go:.2f}")


if __name__ == "__main__":
    main()
