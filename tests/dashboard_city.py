"""The last hour of a simulated school authority, through the real pipeline code.

The dashboards' query test (tests/integration/test_dashboards_influxdb.py) loads what
this produces into a real InfluxDB. The city is the demo's *Stadt Herne*
(:func:`schoolnet.demo.city.default_city`: three schools, real device recordings from
``snmpsim-data``), every device on ``profile: auto``. The path of every point is the
production one, minus sockets:

    SNMP poller with auto-detected profiles (a fake SNMP client serving the recordings,
    counters moving), the uplink device's poll wrapped for utilization (``uplink``),
    the agent's self-health, each in a RunningSource  ->  agent routing per topic  ->
    wire encoding  ->  the collector's Validator (tenant/site/role/vendor tags, line
    protocol)  ->  lines;   validated points  ->  OutageEngine  ->  ``outage`` lines.

Where the recordings lack a table the profiles read, the table is *added to the
recording* (so the real profile turns it into points): chassis temperatures
(ENTITY-SENSOR-MIB) and PoE budgets (POWER-ETHERNET-MIB) on the switches, channel
utilization on the Cisco controller, clients and utilization on the Aruba controller,
LLDP neighbours (LLDP-MIB, :data:`LLDP`) on the Cisco switches and the Vyatta firewall
(polled with the ``lldp`` profile besides ``auto``), so each school's wiring is the
inventory's ``parent:`` tree; the HPE switch keeps its recording's own (real, unknown)
neighbours. The agent's ``topology`` source derives its links from those polls.
``probe_icmp`` fields come from the ICMP probe's own ``train_fields`` on simulated echo
trains. What needs a network or a device class the city does not have is written by
the documented data model, through the same wire/Validator path: ``probe_tcp``,
``probe_http``, ``probe_dns``, ``probe_throughput`` (they need real servers) and
``ssid`` (no city device has an SSID table); and the collector's ``maintenance`` points
(written by collector/outages/service.py, which the city's collector stand-in does not run).

The story, minute by minute (``T-m`` = m minutes before the end):

* **gy-pestalozzi** (fibre 400/400): the WAN port and every external probe target fail
  from T-45 to T-40 (an uplink outage with the port recorded as affected; resolved);
  a maintenance window from T-30 (switch replacement) during which ``sw-building-b``
  stops answering (a device outage) and one access point drops off the controller (an
  ``ap`` outage);
  an IP phone is unplugged from the core switch at T-20 (LLDP).
* **ge-erich-fried** (fibre 1000/1000): an access point goes down at T-40 (its own
  ``ap`` outage: the controller reports it down); the site
  box goes offline at T-12 (MQTT last will) and sends nothing more: an open ``agent``
  outage, a silent site.
* **gs-sodingen** (DSL 100/40): a degraded uplink from T-20 (8 % loss, 180 ms) and
  throughput tests at 38 % of the contract (T-50, T-20): open ``uplink_quality`` and
  ``uplink_throughput`` outages; a switch port with input errors; a hot closet; the
  access point ``ap-flur`` stops answering at T-8 (a device outage).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.health import AgentHealth, PipelineState
from agent.probes import build_sources as build_probe_sources
from agent.probes.icmp import TrainResult, train_fields
from agent.publisher import PublishStats
from agent.running import Intake, RunningSource
from agent.snmp.client import Oid, SnmpError, Value, parse_oid
from agent.snmp.fake import FakeSnmpClient, parse_snmprec
from agent.snmp.poller import build_sources
from agent.spool import SpoolStats, route
from agent.topology_source import with_topology
from collector.lineproto import encode_line
from collector.metrics import CollectorMetrics
from collector.outages.engine import OutageEngine
from collector.outages.model import AFFECTED, OPEN, OutageEvent
from collector.outages.service import outage_line
from collector.validate import Validator
from schoolnet.demo.city import MAIN_SIMULATOR, SimSchool, WrittenCity, default_city, write_city
from schoolnet.inventory import Site
from schoolnet.sim.servers import read_recording
from schoolnet.wire import Batch, Point, Status, encode_batch, encode_status, status_topic
from tests.unit.agent_fakes import FakeClock

NS = 1_000_000_000
MINUTE = 60
#: How much SNMP, probe and health data the city produces (one poll per minute).
HISTORY_MIN = 60
#: Throughput tests reach further back (scheduled ones, every 3 h over a day).
THROUGHPUT_HISTORY_H = 24

GY, GE, GS = "gy-pestalozzi", "ge-erich-fried", "gs-sodingen"

SYS_UPTIME = parse_oid("1.3.6.1.2.1.1.3.0")
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
IF_IN_OCTETS = "1.3.6.1.2.1.2.2.1.10"
IF_IN_ERRORS = "1.3.6.1.2.1.2.2.1.14"
IF_OUT_OCTETS = "1.3.6.1.2.1.2.2.1.16"
IF_HC_IN = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT = "1.3.6.1.2.1.31.1.1.1.10"
ENT_NAME = "1.3.6.1.2.1.47.1.1.1.1.7"
ENT_SENSOR = "1.3.6.1.2.1.99.1.1.1"  # .1 type, .2 scale, .3 precision, .4 value, .5 status
PSE_MAIN = "1.3.6.1.2.1.105.1.3.1.1"  # .2 power, .3 status, .4 consumption, .5 threshold
BSN = parse_oid("1.3.6.1.4.1.14179.2.2")  # Cisco AireOS AP tables
BSN_IF_TYPE = parse_oid("1.3.6.1.4.1.14179.2.2.2.1.2")
BSN_LOAD_UTIL = "1.3.6.1.4.1.14179.2.2.13.1.3"
ARUBA_AP_STATUS = "1.3.6.1.4.1.14823.2.2.1.5.2.1.4.1.19"
ARUBA_RADIO = "1.3.6.1.4.1.14823.2.2.1.5.2.1.5.1"  # .3 channel, .6 util, .7 clients
LLDP_LOC_PORT_DESC = "1.0.8802.1.1.2.1.3.7.1.4"
LLDP_REM = "1.0.8802.1.1.2.1.4.1.1"  # .4 chassis id subtype, .7 port id, .9 sys name
_NUMERIC = re.compile(r"^([\d.]+)\|(\d+):numeric\|(.*)$")
_MODULUS = {"65": 2**32, "66": 2**32, "67": 2**32, "70": 2**64}

Overrides = Callable[[float], dict[Oid, Value]]


@dataclass
class Moving:
    """A counter that advances: ``initial + rate * elapsed`` modulo its width."""

    initial: int
    rate: float
    modulus: int

    def at(self, elapsed_s: float) -> int:
        """The counter's value ``elapsed_s`` after the start."""
        return int(self.initial + self.rate * elapsed_s) % self.modulus


@dataclass
class SimDevice:
    """One device's OID map, its moving counters, and what the story does to it."""

    host: str
    base: dict[Oid, Value]
    moving: dict[Oid, Moving] = field(default_factory=dict)
    #: Values that change with wall time (temperatures, a port going down).
    overrides: list[Overrides] = field(default_factory=list)
    #: OIDs missing from wall time ``since`` on (an AP dropping off its controller).
    vanish: tuple[float, frozenset[Oid]] | None = None
    down: Callable[[float], bool] = lambda t: False

    def data_at(self, t: float, start: float) -> dict[Oid, Value]:
        """The OID map as the device would answer at wall time ``t``."""
        data = dict(self.base)
        for oid, m in self.moving.items():
            data[oid] = m.at(t - start)
        for o in self.overrides:
            data.update(o(t))
        if self.vanish is not None and t >= self.vanish[0]:
            for oid in self.vanish[1]:
                data.pop(oid, None)
        return data


def numeric_counters(text: str) -> dict[Oid, Moving]:
    """The ``numeric`` variations of a recording (snmpsim's moving counters)."""
    out: dict[Oid, Moving] = {}
    for line in text.splitlines():
        m = _NUMERIC.match(line)
        if not m:
            continue
        opts = dict(kv.split("=", 1) for kv in m.group(3).split(",") if "=" in kv)
        out[parse_oid(m.group(1))] = Moving(int(float(opts.get("initial", "0"))),
                                            float(opts.get("rate", "0")),
                                            _MODULUS.get(m.group(2), 2**64))
    return out


def _int(value: Value | None) -> int:
    return value if isinstance(value, int) else 0


def _rows(base: dict[Oid, Value], column: str | Oid) -> list[tuple[int, ...]]:
    """Index suffixes of the rows of a table column."""
    col = parse_oid(column) if isinstance(column, str) else column
    return [oid[len(col):] for oid in sorted(base) if oid[:len(col)] == col]


def _up_ports(base: dict[Oid, Value]) -> list[int]:
    prefix = parse_oid(IF_OPER)
    return [idx[0] for idx in _rows(base, prefix) if base[prefix + idx] == 1]


def synthetic_traffic(base: dict[Oid, Value], ports: int, mbit: float) -> dict[Oid, Moving]:
    """Moving octet counters on the first ``ports`` up ports of a static recording."""
    out: dict[Oid, Moving] = {}
    for i, idx in enumerate(_up_ports(base)[:ports]):
        rate = mbit * 1e6 / 8 / (i + 1)
        for col64, col32, share in ((IF_HC_IN, IF_IN_OCTETS, 1.0),
                                    (IF_HC_OUT, IF_OUT_OCTETS, 0.3)):
            oid64, oid32 = parse_oid(f"{col64}.{idx}"), parse_oid(f"{col32}.{idx}")
            if isinstance(base.get(oid64), int):
                out[oid64] = Moving(_int(base[oid64]), rate * share, 2**64)
            elif isinstance(base.get(oid32), int):
                out[oid32] = Moving(_int(base[oid32]), rate * share, 2**32)
    return out


def _in_errors(base: dict[Oid, Value], per_s: float) -> dict[Oid, Moving]:
    oid = parse_oid(f"{IF_IN_ERRORS}.{_up_ports(base)[0]}")
    return {oid: Moving(_int(base.get(oid)), per_s, 2**32)}


def add_chassis_sensor(base: dict[Oid, Value], celsius: Callable[[float], int]) -> Overrides:
    """An ENTITY-SENSOR-MIB temperature (entity 9001); returns its moving value."""
    base.update({parse_oid(f"{ENT_NAME}.9001"): b"Chassis Temperature",
                 parse_oid(f"{ENT_SENSOR}.1.9001"): 8,  # celsius
                 parse_oid(f"{ENT_SENSOR}.2.9001"): 9,  # units
                 parse_oid(f"{ENT_SENSOR}.3.9001"): 0,  # precision
                 parse_oid(f"{ENT_SENSOR}.5.9001"): 1})  # ok
    value = parse_oid(f"{ENT_SENSOR}.4.9001")
    return lambda t: {value: celsius(t)}


def add_poe_budget(base: dict[Oid, Value], watts: Callable[[float], int]) -> Overrides:
    """A POWER-ETHERNET-MIB power source (PSE 1, 370 W budget); returns its draw."""
    base.update({parse_oid(f"{PSE_MAIN}.2.1"): 370, parse_oid(f"{PSE_MAIN}.3.1"): 1,
                 parse_oid(f"{PSE_MAIN}.5.1"): 80})
    drawn = parse_oid(f"{PSE_MAIN}.4.1")
    return lambda t: {drawn: watts(t)}


def add_cisco_channel_load(base: dict[Oid, Value]) -> None:
    """bsnAPIfLoadChannelUtilization for every radio (the recording has no load table)."""
    for i, idx in enumerate(_rows(base, BSN_IF_TYPE)):
        base[parse_oid(BSN_LOAD_UTIL) + idx] = 12 + (i * 37) % 81


def cisco_ap_rows(base: dict[Oid, Value], n: int) -> frozenset[Oid]:
    """Every OID of the ``n``-th AP of a Cisco controller (index = AP MAC)."""
    macs = sorted({oid[12:18] for oid in base if oid[:9] == BSN and len(oid) >= 18})
    return frozenset(oid for oid in base if oid[:9] == BSN and oid[12:18] == macs[n])


def add_aruba_radio_load(base: dict[Oid, Value], k: Callable[[float], int]) -> Overrides:
    """wlanAPRadioUtilization and clients per radio (absent in the recording)."""
    rows = _rows(base, f"{ARUBA_RADIO}.3")
    util, clients = parse_oid(f"{ARUBA_RADIO}.6"), parse_oid(f"{ARUBA_RADIO}.7")

    def at(t: float) -> dict[Oid, Value]:
        out: dict[Oid, Value] = {}
        for i, idx in enumerate(rows):
            out[util + idx] = 25 + (i * 17 + k(t)) % 60
            out[clients + idx] = 6 + (i * 5 + k(t)) % 19
        return out
    return at


def add_lldp(base: dict[Oid, Value],
             neighbours: list[tuple[int, str, str, str]]) -> dict[str, frozenset[Oid]]:
    """lldpLocPortDesc and lldpRemTable rows: (local port number, its name, remote
    system name, remote port id), index time mark 0, one neighbour per port. Returns
    the lldpRemTable OIDs of each remote (to unplug it)."""
    out: dict[str, frozenset[Oid]] = {}
    for port, name, remote, remote_port in neighbours:
        base[parse_oid(f"{LLDP_LOC_PORT_DESC}.{port}")] = name.encode()
        row = {parse_oid(f"{LLDP_REM}.9.0.{port}.1"): remote.encode(),
               parse_oid(f"{LLDP_REM}.7.0.{port}.1"): remote_port.encode(),
               parse_oid(f"{LLDP_REM}.4.0.{port}.1"): 7}  # chassis id subtype: a field
        base.update(row)
        out[remote] = frozenset(row)
    return out


def status_override(oid: str, value: int, since: float) -> Overrides:
    """An enum column that reads ``value`` from wall time ``since`` on."""
    o = parse_oid(oid)
    return lambda t: {o: value} if t >= since else {}


def _oper_down(oid: Oid, since: float, until: float) -> Overrides:
    """ifOperStatus ``oid`` reads down(2) from ``since`` until ``until``."""
    return lambda t: {oid: 2} if since <= t < until else {}


class Collector:
    """The collector's side: Validator -> lines, OutageEngine -> ``outage`` lines."""

    def __init__(self, written: WrittenCity, now: float) -> None:
        self.now = now
        self.inventory = written.inventory
        self.validator = Validator(written.inventory, CollectorMetrics(),
                                   wall_clock_ns=lambda: int(self.now * NS))
        self.engine: OutageEngine | None = None
        self._next = 0
        self.lines: list[str] = []
        self.events: list[OutageEvent] = []

    def start_engine(self, now: float) -> None:
        """The outage engine starts with the collector (its grace period begins now)."""
        self.engine = OutageEngine(self.inventory, now=now, next_id=self._id)

    def _id(self) -> int:
        self._next += 1
        return 1000 + self._next

    def receive(self, topic: str, payload: bytes) -> None:
        """One MQTT message, as the subscriber hands it over."""
        verdict = self.validator.handle(topic, payload)
        if verdict.dropped:
            raise AssertionError(f"collector dropped a message on {topic}: {verdict.reason}")
        self.lines += verdict.lines
        if self.engine is None or verdict.topic is None:
            return
        t = verdict.topic
        if verdict.status is not None:
            self._events(self.engine.on_status(t.tenant, t.site, verdict.status.state,
                                               verdict.status.reason, self.now))
        elif verdict.decoded:
            self._events(self.engine.on_points(t.tenant, t.site, verdict.decoded, self.now))

    def tick(self) -> None:
        """The outage service's timer."""
        assert self.engine is not None
        self._events(self.engine.tick(self.now))

    def _events(self, events: list[OutageEvent]) -> None:
        # As OutageService._event: open/affected carry the devices down behind them.
        assert self.engine is not None
        for ev in events:
            affected = (self.engine.affected(ev.outage)[0] if ev.kind in (OPEN, AFFECTED)
                        else len(ev.outage.affected_ids))
            self.lines.append(outage_line(ev, affected))
            self.events.append(ev)


class SiteAgent:
    """One school's agent: SNMP sources and self-health through RunningSource."""

    def __init__(self, school: SimSchool, site: Site, devices: dict[str, SimDevice],
                 start: float) -> None:
        self.school = school
        self.site = site
        self.devices = devices
        self.start = start
        self.clock = FakeClock(int(start * NS))
        self.client = FakeSnmpClient()
        self.intake = Intake()
        self.publish = PublishStats(connected=True, connects=1)
        self.seq = 0
        self.backlog_s: Callable[[float], float] = lambda t: 0.0
        # As the agent builds them: SNMP sources (every device on profile: auto), the
        # uplink device's wrapped for utilization, then self-health.
        # Devices with story LLDP tables also name the lldp profile (the firewall's
        # detection does not pick it); the topology source taps them as the agent does.
        auto = dataclasses.replace(site, devices=tuple(
            dataclasses.replace(d, profiles=("auto", "lldp") if (school.id, d.name) in LLDP
                                else ("auto",)) for d in site.devices))
        sources: list[Any] = with_topology(auto, build_probe_sources(
            auto, build_sources(auto, client=self.client)))
        sources.append(AgentHealth("0.1.0-sim", self._state))
        self.runners = [RunningSource(s, self.intake, interval_s=MINUTE, jitter_s=0,
                                      clock=self.clock) for s in sources]

    async def _state(self, now_ns: int) -> PipelineState:
        backlog = self.backlog_s(now_ns / NS)
        zero = SpoolStats(batches=0, bytes=0, next_seq=0, oldest_created_ns=None,
                          dropped_batches=0, dropped_points=0, rejected_points=0)
        spool = SpoolStats(batches=1 if backlog else 0, bytes=2048 if backlog else 0,
                           next_seq=self.seq, oldest_created_ns=(now_ns - int(backlog * NS)
                                                                 if backlog else None),
                           dropped_batches=0, dropped_points=0, rejected_points=0)
        return PipelineState(now_ns=now_ns, uptime_s=now_ns / NS - self.start + 86400.0,
                             intake=self.intake, spool=spool, spool_baseline=zero,
                             spool_write_errors_points=0, runners=self.runners,
                             publish=self.publish)

    async def gather(self, t: float) -> list[Point]:
        """One tick of every source at wall time ``t``: the points of the tick."""
        self.clock.now_ns = int(t * NS)
        self.clock.mono = 1000.0 + (t - self.start)
        for dev in self.devices.values():
            self.client.set_device(dev.host, dev.data_at(t, self.start))
            if dev.down(t):
                self.client.fail[dev.host] = SnmpError(
                    "timeout", "No SNMP response received before timeout", answered=False)
            else:
                self.client.fail.pop(dev.host, None)
        for r in self.runners:
            await r.gather_once()
        points: list[Point] = []
        while not self.intake.queue.empty():
            points += self.intake.queue.get_nowait().points
        return points

    def publish_points(self, collector: Collector, points: list[Point]) -> None:
        """Route, number and encode as the spool does; hand each batch to the collector."""
        for out in route(self.site.tenant, self.site.id, points):
            payload = encode_batch(Batch(site=self.site.id, seq=self.seq, points=out.points,
                                         epoch="sim"))
            self.seq += 1
            self.publish.published += 1
            collector.receive(out.topic, payload)

    def status(self, collector: Collector, state: str, reason: str, t: float) -> None:
        """The retained status (``offline`` is the MQTT last will)."""
        payload = encode_status(Status(site=self.site.id, state=state, time_ns=int(t * NS),
                                       reason=reason))
        collector.receive(status_topic(self.site.tenant, self.site.id), payload)


# -- probes: ICMP fields by the probe's own code, the rest by the data model ------------

TARGETS = (("gateway", "gateway", 0.6), ("provider", "provider", 6.0),
           ("noc", "noc", 11.0), ("anchor-1", "anchor", 17.0))
ECHOES = 25


def icmp_points(t: float, loss_pct: float, extra_ms: float, k: int) -> list[Point]:
    """One echo train per target; ``loss_pct``/``extra_ms`` on the external ones."""
    out = []
    for name, kind, base in TARGETS:
        external = kind not in ("gateway", "lan")
        lost = round(ECHOES * (loss_pct if external else 0.0) / 100)
        rtt = base + (extra_ms if external else 0.0)
        rtts: list[float | None] = [
            None if i < lost else rtt + ((i * 7 + k) % 5) * (0.2 + extra_ms / 100)
            for i in range(ECHOES)]
        out.append(Point("probe_icmp", {"target": name, "target_kind": kind},
                         train_fields(TrainResult(rtts_ms=rtts)), int(t * NS)))
    return out


def service_points(t: float, slow_ms: float) -> list[Point]:
    """TCP, HTTP(S) and DNS checks of the services a school depends on."""
    ns = int(t * NS)
    out = []
    for svc, url, ms in (("iserv", "https://schule.example/iserv", 45.0),
                         ("m365", "https://login.microsoftonline.com/", 80.0)):
        out.append(Point("probe_tcp", {"target": f"{svc}.example:443", "service": svc},
                         {"ok": 1, "connect_ms": 8.0 + slow_ms / 4}, ns))
        out.append(Point("probe_http", {"target": url, "service": svc},
                         {"ok": 1, "status": 200, "connect_ms": 8.0 + slow_ms / 4,
                          "tls_ms": 20.0 + slow_ms / 2, "response_ms": ms + slow_ms,
                          "headers_ms": ms + slow_ms + 1.0, "total_ms": ms + slow_ms * 2}, ns))
    out.append(Point("probe_dns", {"target": "schule.example", "resolver": "192.0.2.53"},
                     {"ok": 1, "rcode": "NOERROR", "answers": 1,
                      "resolve_ms": 3.0 + slow_ms / 8}, ns))
    return out


def throughput_points(t: float, site: Site, ratio_down: float, ratio_up: float) -> list[Point]:
    """One download and one upload test against the NOC's iperf3 server."""
    assert site.uplink is not None
    out = []
    for direction, contract, ratio in (("down", site.uplink.down_mbit, ratio_down),
                                       ("up", site.uplink.up_mbit, ratio_up)):
        rate = contract * ratio
        out.append(Point("probe_throughput", {"target": "iperf.noc.example",
                                              "direction": direction},
                         {"ok": 1, "contract_mbps": float(contract), "rate_mbps": rate,
                          "ratio_to_contract": ratio, "duration_s": 5.0,
                          "bytes": int(rate * 1e6 / 8 * 5), "planned_s": 5.0,
                          "rate_cap_mbps": float(contract), "capped": 0, "scheduled": 1},
                         int(t * NS)))
    return out


def ssid_points(t: float, device: str, k: int) -> list[Point]:
    """``ssid`` as a controller without per-AP counts reports it."""
    return [Point("ssid", {"device": device, "ssid": ssid}, {"clients": n + k % 4},
                  int(t * NS))
            for ssid, n in (("schule", 48), ("schule-gast", 6), ("edu-lehrer", 21))]


# -- the story --------------------------------------------------------------------------

#: Who sees whom on which port (LLDP), per (school, device): (local port number, its
#: name, remote system name, remote port). The routers and APs do not speak LLDP here;
#: each school's switches (and ge's firewall) see their inventory neighbours, and
#: gy's core switch two IP phones that are not in the inventory, one of which is
#: unplugged at T-20 (its link is written once more as gone: not shown any more).
UNPLUGGED = "SEP00A0B1C2D3E5"
LLDP: dict[tuple[str, str], list[tuple[int, str, str, str]]] = {
    (GY, "core-sw"): [(1, "Gi0/1", "router", "LAN"), (2, "Gi0/2", "sw-building-b", "Gi1/0/1"),
                      (3, "Gi0/3", "wlc", "port 1"), (10, "Gi0/10", "SEP00A0B1C2D3E4", "Port 1"),
                      (11, "Gi0/11", "SEP00A0B1C2D3E5", "Port 1")],
    (GY, "sw-building-b"): [(1, "Gi1/0/1", "core-sw", "Gi0/2")],
    (GE, "fw"): [(1, "eth0", "router", "LAN"), (2, "eth1", "core-sw", "A1")],
    (GE, "sw-annex"): [(1, "Gi1/0/1", "core-sw", "24")],
    (GS, "sw"): [(1, "Gi1/0/1", "router", "LAN"), (5, "Gi1/0/5", "ap-aula", "eth0"),
                 (6, "Gi1/0/6", "ap-flur", "eth0")],
}

@dataclass
class CityRun:
    """What the simulation produced."""

    lines: list[str]
    written: WrittenCity
    end: float
    events: list[OutageEvent]


def load_recordings(written: WrittenCity) -> dict[str, tuple[dict[Oid, Value], str]]:
    """Community -> (OID map, text) of every recording the city plays."""
    out = {}
    for community, src in written.recordings(MAIN_SIMULATOR).items():
        text = read_recording(src) if isinstance(src, Path) else src
        out[community] = (parse_snmprec(text), text)
    return out


def _devices(written: WrittenCity, recordings: dict[str, tuple[dict[Oid, Value], str]],
             school: SimSchool, start: float, end: float) -> dict[str, SimDevice]:
    by_device = {ep.device: ep for ep in written.endpoints if ep.site == school.id}
    minute: Callable[[float], int] = lambda t: int((t - start) // MINUTE)  # noqa: E731
    out: dict[str, SimDevice] = {}
    for d in school.devices:
        parsed, text = recordings[d.recording]
        base = dict(parsed)
        dev = SimDevice(by_device[d.name].host, base, numeric_counters(text))
        if isinstance(base.get(SYS_UPTIME), int) and SYS_UPTIME not in dev.moving:
            dev.moving[SYS_UPTIME] = Moving(_int(base[SYS_UPTIME]), 100.0, 2**32)
        if d.role == "switch":
            dev.moving.update(synthetic_traffic(base, ports=6, mbit=40.0))
            hot = school.id == GS
            dev.overrides.append(add_chassis_sensor(
                base, lambda t, hot=hot: (66 if hot else 41) + minute(t) % 3))
            dev.overrides.append(add_poe_budget(base, lambda t: 180 + 3 * (minute(t) % 7)))
        if school.id == GS and d.name == "sw":
            dev.moving.update(_in_errors(base, per_s=0.4))
        if d.recording == "cisco-controller":
            add_cisco_channel_load(base)
            dev.vanish = (end - 30 * MINUTE, cisco_ap_rows(base, 0))
        if d.recording == "aruba-7010":
            dev.overrides.append(add_aruba_radio_load(base, minute))
            first_ap = _rows(base, ARUBA_AP_STATUS)[0]
            dev.overrides.append(status_override(
                ARUBA_AP_STATUS + "." + ".".join(map(str, first_ap)), 2, end - 40 * MINUTE))
        if (school.id, d.name) in LLDP:
            rows = add_lldp(base, LLDP[(school.id, d.name)])
            if school.id == GY and d.name == "core-sw":  # the phone is unplugged at T-20
                dev.vanish = (end - 20 * MINUTE, rows[UNPLUGGED])
        if school.id == GY and d.name == "router":
            dev.overrides.append(_oper_down(parse_oid(f"{IF_OPER}.1"), end - 45 * MINUTE,
                                            end - 40 * MINUTE))
        if school.id == GY and d.name == "sw-building-b":
            dev.down = lambda t: t >= end - 25 * MINUTE
        if school.id == GS and d.name == "ap-flur":
            dev.down = lambda t: t >= end - 8 * MINUTE
        out[d.name] = dev
    return out


def simulate(workdir: Path, end: float) -> CityRun:
    """Run the story up to wall time ``end`` (seconds); everything below ``workdir``."""
    return asyncio.run(_simulate(workdir, end))


async def _simulate(workdir: Path, end: float) -> CityRun:
    city = default_city()
    written = write_city(city, workdir / "site-configs", broker=("127.0.0.1", 1883),
                         poll_interval_s=MINUTE, spool_root=workdir / "spool")
    start = end - HISTORY_MIN * MINUTE
    collector = Collector(written, start - THROUGHPUT_HISTORY_H * 3600)
    recordings = load_recordings(written)
    agents = {s.id: SiteAgent(s, written.inventory.sites[(city.tenant, s.id)],
                              _devices(written, recordings, s, start, end), start)
              for s in city.schools}
    agents[GS].backlog_s = lambda t: 40.0 if t >= end - 20 * MINUTE else 0.0

    # Scheduled throughput tests of the past day (before the engine's hour).
    for h in range(THROUGHPUT_HISTORY_H, 0, -3):
        t = end - h * 3600
        collector.now = t
        for sid, agent in agents.items():
            ratio = 0.41 if sid == GS else 0.93
            agent.publish_points(collector, throughput_points(t, agent.site, ratio, 0.88))

    collector.start_engine(start)
    for k in range(HISTORY_MIN + 1):
        t = start + k * MINUTE
        collector.now = t
        ago = (end - t) / MINUTE
        for sid, agent in agents.items():
            if sid == GE and ago < 12:
                continue  # the site box is gone: no data, only its last will (below)
            points = await agent.gather(t)
            loss, extra = 0.0, 0.0
            if sid == GY and 40 < ago <= 45:
                loss = 100.0
            if sid == GS and ago <= 20:
                loss, extra = 8.0, 160.0
            points += icmp_points(t, loss, extra, k)
            if k % 5 == 0:
                points += service_points(t, slow_ms=extra)
            if sid == GS and round(ago) in (50, 20):
                points += throughput_points(t, agent.site, 0.38, 0.9)
            device = "wlc" if sid != GS else "ap-aula"
            points += ssid_points(t, device, k)
            agent.publish_points(collector, points)
        if ago == 12:
            agents[GE].status(collector, "offline", "lost", t)
        if ago == 30:
            collector.lines.append(encode_line(
                "maintenance", {"tenant": city.tenant, "site": GY},
                {"active": 1, "reason": "Switch-Tausch Haus B"}, int(t * NS)))
        collector.tick()
    return CityRun(collector.lines, written, end, collector.events)
