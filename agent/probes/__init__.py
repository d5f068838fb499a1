"""Uplink probes: does the school get the internet it pays for? (docs/probes.md)

Each probe is a plain :class:`~agent.source.Source`; ``RunningSource`` gives it its
schedule, timeout and self-metrics like every other source. A source may say how often
it wants to run (``interval_s``) and how long a gather may take (``timeout_s``); the
agent uses the site's poll interval otherwise.

| source | measurement | module |
| --- | --- | --- |
| ``probe:icmp`` | ``probe_icmp`` | :mod:`agent.probes.icmp` (scapy, raw socket, ``CAP_NET_RAW``) |
| ``probe:services`` | ``probe_tcp``, ``probe_http`` | :mod:`agent.probes.services` |
| ``probe:dns`` | ``probe_dns`` | :mod:`agent.probes.services` (dnspython) |
| ``probe:throughput`` | ``probe_throughput`` | :mod:`agent.probes.throughput` (iperf3) |
| the uplink device's ``snmp:`` source | ``uplink`` | :mod:`agent.probes.utilization` |

:func:`build_sources` is what the agent calls with the site and its SNMP sources.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.probes.schedule import ThroughputSchedule
from agent.probes.services import DnsSource, ServiceSource
from agent.probes.throughput import OMIT_S, ThroughputSource
from agent.probes.utilization import UplinkUtilization
from agent.source import Source
from schoolnet.inventory import Site


def throughput_source(site: Site) -> ThroughputSource | None:
    """The site's scheduled throughput source, or None when it has none configured."""
    probes = site.probes
    if probes is None or probes.throughput is None or site.uplink is None:
        return None
    t = probes.throughput
    test_s = len(t.directions) * (t.duration_s + OMIT_S + t.connect_timeout_s)
    schedule = ThroughputSchedule(t, site.alerting.calendar(),
                                  site_key=f"{site.tenant}/{site.id}", test_s=test_s)
    return ThroughputSource(t, site.uplink, schedule)


def build_sources(site: Site, snmp_sources: Sequence[Source] = ()) -> list[Source]:
    """The site's SNMP sources (the uplink device's wrapped for utilization) and probes.

    Raises ``agent.probes.icmp.RawSocketPermissionError`` (a ``PermissionError`` naming
    ``CAP_NET_RAW``) when ICMP targets are configured and the process may not open raw
    sockets: a start-up error.
    """
    out: list[Source] = []
    uplink = site.uplink
    for src in snmp_sources:
        if uplink is not None and src.name == f"snmp:{uplink.device}":
            out.append(UplinkUtilization(src, uplink))
        else:
            out.append(src)
    p = site.probes
    if p is None:
        return out
    resolvers = p.dns.resolvers if p.dns is not None else ("system",)
    if p.targets:
        # scapy costs ~30 MB and 0.2 s at start-up: only sites with ICMP targets pay it.
        from agent.probes.icmp import IcmpSource

        out.append(IcmpSource(p.targets, p.icmp, resolvers=resolvers, interval_s=p.interval_s))
    if p.services:
        out.append(ServiceSource(p.services, timeout_s=p.service_timeout_s,
                                 resolvers=resolvers, interval_s=p.interval_s))
    if p.dns is not None and p.dns.names:
        out.append(DnsSource(p.dns, interval_s=p.interval_s))
    tp = throughput_source(site)
    if tp is not None:
        out.append(tp)
    return out


__all__ = [
    "DnsSource",
    "ServiceSource",
    "ThroughputSource",
    "UplinkUtilization",
    "build_sources",
    "throughput_source",
]
