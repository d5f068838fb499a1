"""Bench: collector CPU per 48-port device message, side by side with a bare consumer.

Contenders, each in its own process, each draining the same N messages that wait in
Mosquitto for its persistent session (so the publisher's CPU is not in the figure):

- ``schoolnet``: the whole collector (``collector.app.Collector``) with its default
  config: MQTT with manual in-order acks -> decode + validate (contract, inventory) ->
  line protocol -> the durable disk spool -> batched writes to VictoriaMetrics, and the
  outage engine as second consumer. Timed until every point is written and every
  message acknowledged;
- ``lean``: the same collector with the disk spool and the outage engine off: exactly
  MQTT -> validate -> line protocol -> write, the path the CPU target of issue 2 names;
- ``lean311``: ``lean`` over MQTT 3.1.1 (``mqtt.protocol: "3.1.1"``) like the bare
  consumer: paho handles MQTT 5 properties on every message, which costs about as much
  as decoding the payload;
- ``spool`` and ``outages``: ``lean`` with only the disk spool or only the outage
  engine on, to show what each costs;
- ``bare``: a bare aiomqtt consumer that only does ``json.loads`` on each payload (the
  floor for any Python MQTT consumer), on the same payloads; ``bare5`` the same over
  MQTT 5 (``--bare5``), to show what the protocol alone costs in paho.

Each runs on both payload forms: v2 (columnar groups, what the agent sends) and v1 (one
object per point, still decoded). Also, in this process: ``Validator.handle`` alone
(decode + validate + line protocol, no I/O) and ``json.loads`` alone, per message. CPU
is user+sys of the process (the collector's writer thread included). Everything is
repeated ``--rounds`` times (the machine is shared: medians and the spread are
printed). Figures are printed, never asserted.
Run: ``.venv/bin/python -m bench.collector_cpu [--messages N] [--rounds R]``;
``BENCH_PROFILE=file`` writes a cProfile of each collector contender (``file.<kind>``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiomqtt

from collector.samples import switch_payload
from schoolnet.sim.servers import Mosquitto, VictoriaMetrics

TENANT = "bench"
SITE = "gy-bench"
PORTS = 48
#: Contenders and the MQTT protocol each speaks.
PROTOCOLS = {"bare": "3.1.1", "bare5": "5", "schoolnet": "5", "lean": "5", "lean311": "3.1.1",
             "spool": "5", "outages": "5"}
COLLECTORS = ("schoolnet", "lean", "lean311", "spool", "outages")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _write_inventory(root: Path) -> None:
    tdir = root / TENANT
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "tenant.yaml").write_text(
        f"tenant: {TENANT}\nname: Bench\ndefaults:\n  snmp: {{version: 2c, community: x}}\n")
    (tdir / f"{SITE}.yaml").write_text(
        f"site: {SITE}\nname: Bench school\ndevices:\n"
        "  - {name: core-sw, host: 10.0.0.1, role: switch, vendor: cisco}\n")


async def _child_schoolnet(host: str, port: int, db_url: str, client_id: str, n: int,
                           workdir: Path, kind: str) -> dict[str, float]:
    # Imported before timing: the sink imports influxdb-client lazily on connect, a
    # one-off cost of a process start, not of messages.
    import influxdb_client.client.influxdb_client
    import influxdb_client.client.write_api  # noqa: F401

    from collector.app import Collector
    from collector.config import (
        CollectorConfig,
        HttpSettings,
        InfluxSettings,
        MqttSettings,
        SpoolSettings,
    )
    from collector.outages.settings import AlertingSettings
    from schoolnet.inventory import load_inventory

    cfg = CollectorConfig(
        mqtt=MqttSettings(host=host, port=port, client_id=client_id, tenants=(TENANT,),
                          protocol=PROTOCOLS[kind]),
        influx=InfluxSettings(url=db_url),
        inventory=str(workdir / "inv"), http=HttpSettings(port=0),
        # A state dir per run: the spool keeps the per-site seq state, and every run
        # sends the same seqs.
        state_dir=str(workdir / f"state-{client_id}"),
        spool=SpoolSettings(enabled=kind in ("schoolnet", "spool")),
        alerting=AlertingSettings(enabled=kind in ("schoolnet", "outages")))
    collector = Collector(cfg, load_inventory(cfg.inventory, resolve_secrets=False))
    stop = asyncio.Event()
    cpu0, t0 = _cpu(), time.monotonic()
    task = asyncio.create_task(collector.serve(stop))
    m = collector.metrics
    want = n * (PORTS + 1)
    while not (m.written.get() >= want and m.accepted.get() >= n
               and collector.subscriber._tracker is not None
               and len(collector.subscriber._tracker) == 0):
        await asyncio.sleep(0.01)
    cpu1, t1 = _cpu(), time.monotonic()
    stop.set()
    await task
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "messages": m.accepted.get(),
            "points": m.written.get(), "dropped": sum(m.dropped.values.values())}


async def _child_bare(host: str, port: int, client_id: str, n: int,
                      protocol: str = "3.1.1") -> dict[str, float]:
    cpu0, t0 = _cpu(), time.monotonic()
    got = 0
    if protocol == "5":
        kw: dict[str, object] = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False}
    else:
        kw = {"clean_session": False}
    async with aiomqtt.Client(host, port, identifier=client_id, **kw) as c:  # type: ignore[arg-type]
        await c.subscribe(f"schoolnet/v1/{TENANT}/#", qos=1)
        async for msg in c.messages:
            assert isinstance(msg.payload, bytes)
            json.loads(msg.payload)
            got += 1
            if got == n:
                break
    return {"cpu_s": _cpu() - cpu0, "wall_s": time.monotonic() - t0, "messages": got}


async def _create_session(host: str, port: int, client_id: str, protocol: str) -> None:
    """Connect once and subscribe, so the broker queues messages for this session."""
    if protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        kw: dict[str, object] = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False,
                                 "properties": props}
    else:
        kw = {"clean_session": False}
    async with aiomqtt.Client(host, port, identifier=client_id, **kw) as c:  # type: ignore[arg-type]
        await c.subscribe(f"schoolnet/v1/{TENANT}/#", qos=1)


def child(kind: str, host: str, port: int, db_url: str, client_id: str, n: int,
          workdir: str) -> None:
    """Entry of a contender process: wait for 'go' on stdin, drain, print JSON."""
    protocol = PROTOCOLS[kind]
    asyncio.run(_create_session(host, port, client_id, protocol))
    print("ready", flush=True)
    sys.stdin.readline()
    if kind in ("bare", "bare5"):
        res = asyncio.run(_child_bare(host, port, client_id, n, protocol))
    elif os.environ.get("BENCH_PROFILE"):
        import cProfile

        with cProfile.Profile() as prof:
            res = asyncio.run(_child_schoolnet(host, port, db_url, client_id, n, Path(workdir),
                                               kind))
        prof.dump_stats(f"{os.environ['BENCH_PROFILE']}.{kind}")
    else:
        res = asyncio.run(_child_schoolnet(host, port, db_url, client_id, n, Path(workdir),
                                           kind))
    print(json.dumps(res), flush=True)


async def _publish(host: str, port: int, payloads: list[bytes]) -> None:
    async with aiomqtt.Client(host, port, max_inflight_messages=200) as pub:
        for p in payloads:
            await pub.publish(f"schoolnet/v1/{TENANT}/{SITE}/metrics", p, qos=1)


def run_contender(kind: str, broker: Mosquitto, db: VictoriaMetrics, payloads: list[bytes],
                  workdir: Path) -> dict[str, float]:
    client_id = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.collector_cpu", "--child", kind, broker.host,
         str(broker.port), db.url, client_id, str(len(payloads)), str(workdir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        asyncio.run(_publish(broker.host, broker.port, payloads))
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out = proc.stdout.readline()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    # Remove the session, or the broker keeps queueing every later run's messages for it.
    asyncio.run(_drop_session(broker.host, broker.port, client_id))
    return dict(json.loads(out))


async def _drop_session(host: str, port: int, client_id: str) -> None:
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
        pass


def in_process(payloads: list[bytes], workdir: Path) -> tuple[float, float]:
    """(Validator.handle, json.loads) CPU seconds per message, no I/O."""
    from collector.metrics import CollectorMetrics
    from collector.validate import Validator
    from schoolnet.inventory import load_inventory

    v = Validator(load_inventory(workdir / "inv", resolve_secrets=False), CollectorMetrics())
    topic = f"schoolnet/v1/{TENANT}/{SITE}/metrics"
    c0 = _cpu()
    for p in payloads:
        v.handle(topic, p)
    c1 = _cpu()
    for p in payloads:
        json.loads(p)
    c2 = _cpu()
    return (c1 - c0) / len(payloads), (c2 - c1) / len(payloads)


def _stats(values: list[float]) -> str:
    """Median and spread of per-message milliseconds over the rounds."""
    med = statistics.median(values)
    return f"{med * 1e3:7.3f} [{min(values) * 1e3:.3f}-{max(values) * 1e3:.3f}]"


def main() -> None:
    """Run every contender on both payload forms, several rounds; print medians, ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="repeat everything; medians shown")
    ap.add_argument("--forms", default="2,1", help="payload forms to measure (2=groups, 1=points)")
    ap.add_argument("--kinds", default=",".join(COLLECTORS),
                    help=f"collector contenders to run (of {', '.join(COLLECTORS)})")
    ap.add_argument("--bare5", action="store_true",
                    help="also run the bare consumer over MQTT 5")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    bares = ["bare", "bare5"] if args.bare5 else ["bare"]
    if not set(kinds) <= set(COLLECTORS):
        ap.error(f"--kinds: unknown contender in {args.kinds!r}")
    n = args.messages
    forms = [int(f) for f in args.forms.split(",")]
    now = time.time_ns()
    payloads = {v: [switch_payload(SITE, seq, ports=PORTS, time_ns=now - (n - seq) * 10**6 - v,
                                   salt=seq, v=v) for seq in range(1, n + 1)] for v in forms}
    got: dict[tuple[int, str], list[float]] = defaultdict(list)
    written: dict[int, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        work = Path(tmp)
        _write_inventory(work / "inv")
        # An in-flight window like MQTT 5's receive maximum for the 3.1.1 contenders
        # (Mosquitto's default of 20 would make them wait for the writer's interval).
        with Mosquitto(work / "mqtt", extra_config="max_inflight_messages 1000\n") as broker, \
                VictoriaMetrics(work / "vm") as db:
            for _ in range(args.rounds):
                for v in forms:
                    handle_s, loads_s = in_process(payloads[v], work)
                    got[(v, "handle")].append(handle_s)
                    got[(v, "loads")].append(loads_s)
                    for kind in (*bares, *kinds):
                        r = run_contender(kind, broker, db, payloads[v], work)
                        got[(v, kind)].append(r["cpu_s"] / n)
                        if not kind.startswith("bare"):
                            written[v].append(r["points"])
                            got[(v, f"ratio-{kind}")].append(
                                r["cpu_s"] / n / got[(v, "bare")][-1])
    print(f"collector CPU per {PORTS}-port device message ({PORTS + 1} points), {n} messages, "
          f"{args.rounds} rounds: median [min-max]; CPU = user+sys of the process")
    names = {2: "v2 groups (what the agent sends)", 1: "v1 points (still decoded)"}
    for v in forms:
        print(f"\npayload {names[v]}: {len(payloads[v][0])} bytes")
        print(f"  {'contender':<34}{'CPU ms/msg':>26}{'msgs/s/core':>13}")
        for key, name in (("schoolnet", "collector e2e, default config"),
                          ("lean", "collector e2e, no spool/outages"),
                          ("lean311", "  the same over MQTT 3.1.1"),
                          ("spool", "  lean + the disk spool"),
                          ("outages", "  lean + the outage engine"),
                          ("bare", "bare aiomqtt (3.1.1) + json.loads"),
                          ("bare5", "  the same over MQTT 5"),
                          ("handle", "Validator.handle only (no I/O)"),
                          ("loads", "json.loads only")):
            vals = got[(v, key)]
            if vals:
                print(f"  {name:<34}{_stats(vals):>26}{1 / statistics.median(vals):>13.0f}")
        for kind in kinds:
            ratios = got[(v, f"ratio-{kind}")]
            print(f"  ratio collector ({kind}) / bare: {statistics.median(ratios):.2f}x "
                  f"[{min(ratios):.2f}-{max(ratios):.2f}]")
        if got[(v, "bare5")]:
            bare5 = statistics.median(got[(v, "bare5")])
            for kind in kinds:
                if PROTOCOLS[kind] == "5":
                    print(f"  ratio collector ({kind}) / bare over MQTT 5: "
                          f"{statistics.median(got[(v, kind)]) / bare5:.2f}x (medians)")
        print(f"  points written per run: {', '.join(f'{w:.0f}' for w in written[v])} "
              f"(want {n * (PORTS + 1)} each)")
    if 1 in forms and 2 in forms:
        for kind in kinds:
            old = statistics.median(got[(1, kind)])
            new = statistics.median(got[(2, kind)])
            print(f"{kind}: v2 payloads take {old / new:.2f}x less CPU than v1")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6],
              int(sys.argv[7]), sys.argv[8])
    else:
        main()
