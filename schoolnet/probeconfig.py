"""Uplink probe settings in the inventory: the ``probes:`` section of a site.

Read strictly like the rest of the inventory (unknown keys, wrong types, impossible
values are ``file:line: field: message``). ``defaults.probes`` in ``tenant.yaml`` is
deep-merged under a site's own ``probes:`` (a list, such as ``targets``, is replaced
whole by the site's). A site without ``probes:`` (and a tenant without
``defaults.probes``) runs no active probes at all: nothing is sent anywhere unless a
config names it. Documented in docs/probes.md; the outage thresholds for what the
probes measure stay in ``thresholds:`` (docs/outages.md), not here.

::

    probes:
      interval_s: 60                     # ICMP, service, DNS (default: agent.poll_interval_s)
      icmp: {count: 20, spacing_ms: 100, timeout_s: 2}
      targets:
        - {name: gateway, host: 192.0.2.1, kind: gateway}
        - {name: noc, host: 198.51.100.10, kind: noc}
      services:
        - {name: schulserver, url: "https://schulserver.example.org/"}
        - {name: mdm, tcp: "mdm.example.org:443"}
      service_timeout_s: 5
      dns: {resolvers: [192.0.2.53], names: [example.org], timeout_s: 2}
      throughput:
        server: 198.51.100.20            # iperf3 server at the NOC
        schedule: ["06:30", "17:00"]     # local times (tenant's timezone), never in lesson hours
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from schoolnet.alerting import TenantAlerting
from schoolnet.calendars import WEEKDAYS, parse_clock
from schoolnet.configfile import MappingReader, one_of, positive

#: Where a probe target sits. ``gateway`` and ``lan`` are inside the site: the outage
#: engine does not count them when it decides whether the uplink is down.
TARGET_KINDS: Final = ("gateway", "provider", "noc", "anchor", "lan", "other")
DIRECTIONS: Final = ("down", "up")
RECORD_TYPES: Final = ("A", "AAAA")
#: Hard ceilings a config cannot lift: a throughput test never saturates a school's line
#: for long, an echo train never floods a target.
MAX_TEST_DURATION_S: Final = 60.0
MIN_SPACING_MS: Final = 5.0


@dataclass(frozen=True, kw_only=True)
class ProbeTarget:
    """An ICMP echo target: ``name`` becomes the ``target`` tag."""

    name: str
    host: str
    kind: str = "other"


@dataclass(frozen=True, kw_only=True)
class IcmpSettings:
    """One echo train per target and interval."""

    count: int = 20
    spacing_ms: float = 100.0
    #: How long to wait for the last echo's reply.
    timeout_s: float = 2.0
    payload_bytes: int = 56

    @property
    def train_s(self) -> float:
        """How long one train takes at most."""
        return self.count * self.spacing_ms / 1000.0 + self.timeout_s


@dataclass(frozen=True, kw_only=True)
class Service:
    """A service the school depends on: ``url`` (HTTP(S) probe) or ``tcp`` host:port."""

    name: str
    host: str
    port: int
    url: str | None = None
    #: Verify the server's TLS certificate (and host name).
    verify_tls: bool = True
    ca_file: str | None = None

    @property
    def tls(self) -> bool:
        """Whether the service speaks TLS (an https URL)."""
        return self.url is not None and self.url.startswith("https://")


@dataclass(frozen=True, kw_only=True)
class DnsSettings:
    """Which names to resolve against which resolvers (``system``: /etc/resolv.conf)."""

    resolvers: tuple[str, ...]
    names: tuple[str, ...] = ()
    record: str = "A"
    timeout_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class ThroughputSettings:
    """iperf3 tests against the NOC, at scheduled local times outside lesson hours."""

    server: str
    port: int = 5201
    directions: tuple[str, ...] = DIRECTIONS
    schedule: tuple[dt.time, ...] = (dt.time(6, 30), dt.time(17, 0))
    days: tuple[str, ...] = WEEKDAYS
    #: Each site starts at a fixed offset within this many minutes after a slot (derived
    #: from its id), so 300 sites do not meet at the NOC's iperf3 server at 06:30:00.
    spread_min: float = 30.0
    #: A slot whose test could not start (server busy, unreachable) is retried on later
    #: agent ticks for this many minutes after the site's start time.
    window_min: float = 20.0
    duration_s: float = 10.0
    #: Bytes cap per test and direction, in MB (10^6 bytes).
    max_mbyte: float = 1000.0
    #: iperf3 paces at most at this multiple of the contracted rate: with the duration,
    #: this is what bounds the bytes (iperf3 cannot combine -t and -n).
    rate_cap_ratio: float = 1.5
    connect_timeout_s: float = 5.0


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """A site's ``probes:`` section, tenant defaults merged."""

    #: ICMP, service and DNS probes run this often; None: ``agent.poll_interval_s``.
    interval_s: float | None = None
    icmp: IcmpSettings = field(default_factory=IcmpSettings)
    targets: tuple[ProbeTarget, ...] = ()
    services: tuple[Service, ...] = ()
    service_timeout_s: float = 5.0
    dns: DnsSettings | None = None
    throughput: ThroughputSettings | None = None


def _host(val: str) -> str | None:
    from schoolnet.inventory import check_host  # inventory imports this module

    return check_host(val)


def _resolver(val: str) -> str | None:
    return None if val == "system" else _host(val)


def _port(val: int) -> str | None:
    return None if 0 < val < 65536 else "must be a port number 1-65535"


def _between(lo: float, hi: float) -> Callable[[float], str | None]:
    def check(val: float) -> str | None:
        return None if lo <= val <= hi else f"must be between {lo:g} and {hi:g}"

    return check


def _name(val: str) -> str | None:
    ok = 0 < len(val) <= 64 and val.replace("-", "").replace("_", "").replace(".", "").isalnum()
    return None if ok else "must be 1-64 letters, digits, '.', '-' or '_'"


def _read_targets(r: MappingReader) -> tuple[ProbeTarget, ...]:
    out: list[ProbeTarget] = []
    seen: set[str] = set()
    for i, node in enumerate(r.sequence("targets")):
        tr = MappingReader(node, f"{r.sub('targets')}[{i}]", r.issues)
        name = tr.value("name", str, check=_name)
        host = tr.value("host", str, check=_host)
        kind = tr.value("kind", str, "other", one_of(*TARGET_KINDS))
        tr.finish()
        if name is not None and name in seen:
            r.issues.add(node, tr.sub("name"), f"duplicate target name {name!r}")
        elif name is not None and host is not None:
            seen.add(name)
            out.append(ProbeTarget(name=name, host=host, kind=kind))
    return tuple(out)


def _read_service(sr: MappingReader) -> Service | None:
    name = sr.value("name", str, check=_name)
    url = sr.value("url", str, None)
    tcp = sr.value("tcp", str, None)
    verify = sr.value("verify_tls", bool, True)
    ca_file = sr.value("ca_file", str, None)
    sr.finish()
    if (url is None) == (tcp is None):
        sr.issues.add(sr.node, sr.path, "give exactly one of url: or tcp:")
        return None
    host: str | None = None
    port = 0
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = 0
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host or not port:
            sr.issues.add(sr.node_of("url"), sr.sub("url"),
                          f"{url!r} is not an http:// or https:// URL")
            return None
    else:
        assert tcp is not None
        h, sep, p = tcp.rpartition(":")
        host = h.strip("[]")
        port = int(p) if p.isdigit() else 0
        if not sep or not port or _port(port):
            sr.issues.add(sr.node_of("tcp"), sr.sub("tcp"), f"{tcp!r} is not host:port")
            return None
    err = _host(host)
    if err:
        sr.issues.add(sr.node_of("url" if url else "tcp"), sr.sub("url" if url else "tcp"), err)
        return None
    if name is None:
        return None
    return Service(name=name, host=host, port=port, url=url, verify_tls=verify, ca_file=ca_file)


def _read_services(r: MappingReader) -> tuple[Service, ...]:
    out: list[Service] = []
    for i, node in enumerate(r.sequence("services")):
        svc = _read_service(MappingReader(node, f"{r.sub('services')}[{i}]", r.issues))
        if svc is not None and any(s.name == svc.name for s in out):
            r.issues.add(node, f"{r.sub('services')}[{i}].name",
                         f"duplicate service name {svc.name!r}")
        elif svc is not None:
            out.append(svc)
    return tuple(out)


def _read_dns(r: MappingReader, services: tuple[Service, ...]) -> DnsSettings | None:
    if r.node is None or not r.ok:
        return None
    resolvers = r.string_list("resolvers", ())
    for res in resolvers:
        err = _resolver(res)
        if err:
            r.issues.add(r.node_of("resolvers"), r.sub("resolvers"), err)
    if not resolvers:
        r.issues.add(r.node, r.sub("resolvers"), "is required (addresses, or 'system')")
    names = r.string_list("names", ())
    for n in names:
        if _host(n):
            r.issues.add(r.node_of("names"), r.sub("names"), f"{n!r} is not a host name")
    d = DnsSettings(
        resolvers=resolvers,
        # By default the names of the services: what teachers' devices resolve too.
        names=names or tuple(dict.fromkeys(s.host for s in services if _is_name(s.host))),
        record=r.value("record", str, "A", one_of(*RECORD_TYPES)),
        timeout_s=r.value("timeout_s", float, 2.0, _between(0.1, 30)),
    )
    r.finish()
    return d


def _is_name(host: str) -> bool:
    return not host.replace(".", "").isdigit() and ":" not in host


def _times(r: MappingReader, key: str, default: tuple[dt.time, ...]) -> tuple[dt.time, ...]:
    out = []
    for text in r.string_list(key, ()):
        t = parse_clock(text)
        if t is None or t == dt.time.max:
            r.issues.add(r.node_of(key), r.sub(key), f"{text!r} is not a time (HH:MM)")
            continue
        out.append(t)
    return tuple(sorted(set(out))) if out else default


def _minutes(t: dt.time) -> float:
    return t.hour * 60 + t.minute + t.second / 60


def _read_throughput(r: MappingReader, alerting: TenantAlerting | None,
                     has_contract: bool) -> ThroughputSettings | None:
    if r.node is None or not r.ok:
        return None
    d = ThroughputSettings(server="")
    days = r.string_list("days", d.days)
    bad_days = [x for x in days if x not in WEEKDAYS]
    if bad_days:
        r.issues.add(r.node_of("days"), r.sub("days"),
                     f"{bad_days[0]!r} is not one of {', '.join(WEEKDAYS)}")
        days = d.days
    directions = r.string_list("directions", d.directions)
    if not directions or any(x not in DIRECTIONS for x in directions):
        r.issues.add(r.node_of("directions"), r.sub("directions"), "must be down and/or up")
        directions = d.directions
    t = ThroughputSettings(
        server=r.value("server", str, check=_host) or "",
        port=r.value("port", int, d.port, _port),
        directions=tuple(dict.fromkeys(directions)),
        schedule=_times(r, "schedule", d.schedule),
        days=days,
        spread_min=r.value("spread_min", float, d.spread_min, _between(0, 240)),
        window_min=r.value("window_min", float, d.window_min, _between(0, 240)),
        duration_s=r.value("duration_s", float, d.duration_s, _between(1, MAX_TEST_DURATION_S)),
        max_mbyte=r.value("max_mbyte", float, d.max_mbyte, _between(1, 100_000)),
        rate_cap_ratio=r.value("rate_cap_ratio", float, d.rate_cap_ratio, _between(1, 10)),
        connect_timeout_s=r.value("connect_timeout_s", float, d.connect_timeout_s,
                                  _between(0.5, 60)),
    )
    if not has_contract:
        r.issues.add(r.node, r.path, "needs the site's uplink: (contracted down_mbit/up_mbit)")
    if alerting is not None:
        # The whole span a slot may use (spread, retries, the tests themselves) must stay
        # clear of lessons; the agent checks again at run time, but a config that would
        # always hit lessons is a mistake worth naming now.
        lesson = (_minutes(alerting.lesson_start),
                  _minutes(alerting.lesson_end) if alerting.lesson_end != dt.time.max else 1440)
        span = t.spread_min + t.window_min + 2 * (t.duration_s + t.connect_timeout_s) / 60
        for slot in t.schedule:
            a = _minutes(slot)
            if a < lesson[1] and a + span > lesson[0]:
                r.issues.add(r.node_of("schedule") or r.node, r.sub("schedule"),
                             f"{slot:%H:%M} (+{span:.0f} min spread/retries) reaches into "
                             f"the tenant's lesson hours {alerting.lesson_start:%H:%M}-"
                             f"{alerting.lesson_end:%H:%M}")
    r.finish()
    return t


def read_probes(r: MappingReader, *, alerting: TenantAlerting | None = None,
                has_contract: bool = True,
                poll_interval_s: float = 60.0) -> ProbeSettings | None:
    """Read a (merged) ``probes`` mapping; None when the site has none."""
    if r.node is None or not r.ok:
        r.finish()
        return None
    icmp_r = r.mapping("icmp")
    di = IcmpSettings()
    icmp = IcmpSettings(
        count=icmp_r.value("count", int, di.count, _between(1, 1000)),
        spacing_ms=icmp_r.value("spacing_ms", float, di.spacing_ms,
                                _between(MIN_SPACING_MS, 10_000)),
        timeout_s=icmp_r.value("timeout_s", float, di.timeout_s, _between(0.1, 30)),
        payload_bytes=icmp_r.value("payload_bytes", int, di.payload_bytes, _between(8, 1400)),
    )
    icmp_r.finish()
    services = _read_services(r)
    p = ProbeSettings(
        interval_s=r.value("interval_s", float, None, positive),
        icmp=icmp,
        targets=_read_targets(r),
        services=services,
        service_timeout_s=r.value("service_timeout_s", float, 5.0, _between(0.1, 60)),
        dns=_read_dns(r.mapping("dns"), services),
        throughput=_read_throughput(r.mapping("throughput"), alerting, has_contract),
    )
    interval = p.interval_s or poll_interval_s
    if p.targets and icmp.train_s > 0.9 * interval:
        r.issues.add(r.node_of("icmp") or r.node, r.sub("icmp"),
                     f"a train takes up to {icmp.train_s:g} s (count x spacing + timeout), "
                     f"more than 90 % of the {interval:g} s interval")
    r.finish()
    return p


__all__ = [
    "DIRECTIONS",
    "MAX_TEST_DURATION_S",
    "TARGET_KINDS",
    "DnsSettings",
    "IcmpSettings",
    "ProbeSettings",
    "ProbeTarget",
    "Service",
    "ThroughputSettings",
    "read_probes",
]
