"""The demo's live overview: what reached the database, per school, and the collector's
counters; rendered as an ANSI screen on a terminal or as plain lines otherwise.

Data comes from where an operator would look: the database (VictoriaMetrics'
Prometheus-compatible ``/api/v1/query``; a measurement ``m`` with field ``f`` is the
series ``m_f``) and the collector's Prometheus ``/metrics``. So the overview shows what
really went through the pipeline, not what the demo believes it started.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

from schoolnet.inventory import Inventory, Site

#: How far back a device's last point still counts as "its current state".
RECENT = "2m"
#: Names in the collector's /metrics (collector/metrics.py).
M_RECEIVED = "schoolnet_collector_messages_received_total"
M_WRITTEN = "schoolnet_collector_points_written_total"
M_DROPPED = "schoolnet_collector_messages_dropped_total"

Labels = dict[str, str]


def vm_query(base_url: str, promql: str, timeout: float = 3.0) -> list[tuple[Labels, float]]:
    """Run an instant query; returns (labels, value) per series of the vector."""
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{base_url}/api/v1/query?{q}", timeout=timeout) as r:
        doc = json.loads(r.read())
    if doc.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {doc.get('error', doc)}")
    return [(dict(item["metric"]), float(item["value"][1])) for item in doc["data"]["result"]]


def parse_prometheus(text: str) -> dict[str, list[tuple[Labels, float]]]:
    """Samples of a Prometheus text exposition by metric name (enough for our counters)."""
    out: dict[str, list[tuple[Labels, float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: Labels = {}
        for part in rest.rstrip("}").split('",'):
            if "=" in part:
                k, v = part.split("=", 1)
                labels[k.strip()] = v.strip().strip('"')
        try:
            out.setdefault(name, []).append((labels, float(value)))
        except ValueError:
            continue
    return out


@dataclass
class SchoolState:
    """What the database knows about one school right now."""

    site: Site
    reachable: dict[str, float] = field(default_factory=dict)  # device -> last value
    last_seen: dict[str, float] = field(default_factory=dict)  # device -> unix time
    in_bps: float | None = None
    out_bps: float | None = None

    @property
    def total(self) -> int:
        """Devices in the inventory."""
        return len(self.site.devices)

    @property
    def up(self) -> int:
        """Devices whose last point says reachable."""
        return sum(1 for v in self.reachable.values() if v >= 1)

    def missing(self) -> list[str]:
        """Inventory devices with no data in the database."""
        return [d.name for d in self.site.devices if d.name not in self.reachable]

    def down(self) -> list[str]:
        """Devices whose last point says unreachable."""
        return [d for d, v in sorted(self.reachable.items()) if v < 1]

    def age_s(self, now: float) -> float | None:
        """Seconds since the newest point of any device of the school."""
        return now - max(self.last_seen.values()) if self.last_seen else None


@dataclass
class CollectorState:
    """The collector's counters from its /metrics."""

    received: float = 0.0
    written: float = 0.0
    dropped: dict[str, float] = field(default_factory=dict)  # reason -> messages
    #: (tenant, site) -> the agent's state from its retained status topic (online,
    #: offline, unknown), as the collector's /api/status reports it.
    agent_state: dict[tuple[str, str], str] = field(default_factory=dict)
    error: str = ""


@dataclass
class Snapshot:
    """One refresh of the overview."""

    taken: float
    tenant_names: dict[str, str]
    schools: list[SchoolState]
    collector: CollectorState
    db_error: str = ""
    problems: list[str] = field(default_factory=list)


def _uplink_rates(db_url: str, tenant: str, sites: list[Site], fieldname: str
                  ) -> dict[str, float]:
    wanted = {(s.id, s.uplink.device, s.uplink.interface): s.id for s in sites if s.uplink}
    names = "|".join(sorted({k[2] for k in wanted}))
    out: dict[str, float] = {}
    if not names:
        return out
    q = f'last_over_time(interface_{fieldname}{{tenant="{tenant}",ifname=~"{names}"}}[{RECENT}])'
    for labels, value in vm_query(db_url, q):
        key = (labels.get("site", ""), labels.get("device", ""), labels.get("ifname", ""))
        if key in wanted:
            out[wanted[key]] = value
    return out


def gather_schools(db_url: str, inventory: Inventory) -> list[SchoolState]:
    """Per school: device reachability, last data time and uplink rates from the database."""
    states = {(s.tenant, s.id): SchoolState(site=s) for s in inventory}
    for tenant in sorted({s.tenant for s in inventory}):
        sel = f'device_reachable{{tenant="{tenant}"}}'
        for labels, value in vm_query(db_url, f"last_over_time({sel}[{RECENT}])"):
            st = states.get((tenant, labels.get("site", "")))
            if st is not None and "device" in labels:
                st.reachable[labels["device"]] = value
        # tlast_over_time (VictoriaMetrics): timestamp of the newest sample, any age.
        for labels, value in vm_query(db_url, f"tlast_over_time({sel}[1h])"):
            st = states.get((tenant, labels.get("site", "")))
            if st is not None and "device" in labels:
                st.last_seen[labels["device"]] = value
        sites = [s for s in inventory if s.tenant == tenant]
        for site, v in _uplink_rates(db_url, tenant, sites, "in_bps").items():
            states[(tenant, site)].in_bps = v
        for site, v in _uplink_rates(db_url, tenant, sites, "out_bps").items():
            states[(tenant, site)].out_bps = v
    return list(states.values())


def gather_collector(collector_url: str) -> CollectorState:
    """The collector's received/written/dropped counters (error text if it does not answer)."""
    try:
        with urllib.request.urlopen(f"{collector_url}/metrics", timeout=2) as r:
            samples = parse_prometheus(r.read().decode())
    except OSError as exc:
        return CollectorState(error=f"collector /metrics: {exc}")
    dropped: dict[str, float] = {}
    for labels, v in samples.get(M_DROPPED, []):
        if v:
            dropped[labels.get("reason", "?")] = v
    return CollectorState(received=sum(v for _, v in samples.get(M_RECEIVED, [])),
                          written=sum(v for _, v in samples.get(M_WRITTEN, [])),
                          dropped=dropped, agent_state=_agent_states(collector_url))


def _agent_states(collector_url: str) -> dict[tuple[str, str], str]:
    """Per-site agent state from /api/status; empty if it is unavailable or unexpected."""
    try:
        with urllib.request.urlopen(f"{collector_url}/api/status", timeout=2) as r:
            doc = json.loads(r.read())
        return {(str(s["tenant"]), str(s["site"])): str(s["state"]) for s in doc["sites"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # the overview works without it


def gather(db_url: str, collector_url: str, inventory: Inventory,
           problems: Iterable[str] = ()) -> Snapshot:
    """Everything one refresh shows; a database that does not answer is an error line."""
    tenant_names = {t.id: t.name for t in inventory.tenants.values()}
    try:
        schools = gather_schools(db_url, inventory)
        db_error = ""
    except (OSError, RuntimeError, ValueError) as exc:
        schools = [SchoolState(site=s) for s in inventory]
        db_error = f"database query failed: {exc}"
    return Snapshot(taken=time.time(), tenant_names=tenant_names, schools=schools,
                    collector=gather_collector(collector_url), db_error=db_error,
                    problems=list(problems))


# --- rendering ---------------------------------------------------------------------

GREEN, YELLOW, RED, DIM, BOLD, RESET = (
    "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[2m", "\x1b[1m", "\x1b[0m")


def _mbit(bps: float | None) -> str:
    return f"{'-':>6}" if bps is None else f"{bps / 1e6:6.1f}"


def _pct(bps: float | None, contract_mbit: float) -> str:
    return "" if bps is None else f"{bps / 1e6 / contract_mbit * 100:3.0f}%"


def _age(age: float | None) -> str:
    if age is None:
        return "no data"
    return f"{age:.0f} s ago" if age < 120 else f"{age / 60:.0f} min ago"


def _counters(c: CollectorState) -> str:
    if c.error:
        return c.error
    dropped = sum(c.dropped.values())
    reasons = ", ".join(f"{k} {v:.0f}" for k, v in sorted(c.dropped.items()))
    return (f"received {c.received:.0f} messages · written {c.written:.0f} points · "
            f"dropped {dropped:.0f}" + (f" ({reasons})" if reasons else ""))


def school_columns(st: SchoolState, now: float) -> tuple[str, str, str, str]:
    """Devices, download, upload and age columns of one school's row (no colour)."""
    up = st.site.uplink
    devices = f"{st.up}/{st.total}"
    if up is None:
        return devices, "", "", _age(st.age_s(now))
    down = f"{_mbit(st.in_bps)} / {up.down_mbit:g} Mbit/s {_pct(st.in_bps, up.down_mbit):>4}"
    upl = f"{_mbit(st.out_bps)} / {up.up_mbit:g} Mbit/s {_pct(st.out_bps, up.up_mbit):>4}"
    return devices, down, upl, _age(st.age_s(now))


def render_screen(snap: Snapshot, header: list[str], color: bool = True) -> str:
    """A full-screen frame (ANSI: cursor home, each line cleared, rest of screen cleared)."""
    def c(code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    now = snap.taken
    lines = [c(BOLD, header[0]) if header else "", *header[1:], ""]
    width = max([len(s.site.name) for s in snap.schools] + [6])
    lines.append(c(DIM, f"{'school':<{width}}  {'agent':<7}  {'devices':>7}  "
                        f"{'download / contract':<30}  {'upload / contract':<30}  last data"))
    for st in sorted(snap.schools, key=lambda s: (s.site.tenant, s.site.id)):
        devices, down, upl, age = school_columns(st, now)
        colour = GREEN if st.up == st.total else (YELLOW if not st.reachable else RED)
        agent = snap.collector.agent_state.get((st.site.tenant, st.site.id), "?")
        lines.append(f"{st.site.name:<{width}}  {agent:<7}  {c(colour, f'{devices:>7}')}  "
                     f"{down:<30}  {upl:<30}  {age}")
        trouble = [f"down: {', '.join(st.down())}"] if st.down() else []
        if st.reachable and st.missing():
            trouble.append(f"no data yet: {', '.join(st.missing())}")
        if trouble:
            lines.append(c(RED, f"{'':<{width}}  {'; '.join(trouble)}"))
    lines += ["", f"collector: {_counters(snap.collector)}"]
    for msg in ([snap.db_error] if snap.db_error else []) + snap.problems:
        lines.append(c(RED, msg))
    return "\x1b[H" + "".join(f"{ln}\x1b[K\n" for ln in lines) + "\x1b[J"


def render_lines(snap: Snapshot) -> str:
    """Plain lines for a log or a pipe: one per school, one for the collector."""
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken))
    out = []
    for st in sorted(snap.schools, key=lambda s: (s.site.tenant, s.site.id)):
        devices, down, upl, age = school_columns(st, snap.taken)
        down, upl = " ".join(down.split()), " ".join(upl.split())  # no column padding
        agent = snap.collector.agent_state.get((st.site.tenant, st.site.id), "?")
        out.append(f"{stamp} {st.site.id}: agent {agent}, devices {devices} up, "
                   f"download {down}, upload {upl}, last data {age}")
    out.append(f"{stamp} collector: {_counters(snap.collector)}")
    out += [f"{stamp} {msg}" for msg in ([snap.db_error] if snap.db_error else []) + snap.problems]
    return "\n".join(out) + "\n"
