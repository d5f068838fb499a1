"""Name resolution for the probes, through the configured resolvers (dnspython).

The DNS probe times each resolver; the ICMP and service probes resolve their host names
through the same resolvers, so what a probe measures is what the site's clients get.
An IP address is used as it is. ``system`` means the resolvers of /etc/resolv.conf.
A failure is a result (an ``rcode`` such as ``NXDOMAIN`` or ``TIMEOUT``), never an
exception: one bad name must not take the other probes with it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver


@dataclass(frozen=True)
class DnsAnswer:
    """What one query got: ``rcode`` ``NOERROR`` with addresses, or why not."""

    rcode: str
    addresses: tuple[str, ...] = ()
    #: Time until an answer (also for NXDOMAIN, which is an answer); None on a timeout.
    ms: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the name resolved to at least one address."""
        return bool(self.addresses)


@dataclass(frozen=True)
class Resolved:
    """A host as the probes use it: an address, or the reason there is none."""

    address: str | None
    dns_ms: float | None = None
    error: str = ""


def is_address(host: str) -> bool:
    """Whether ``host`` is an IP address literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolver(server: str, timeout_s: float) -> dns.asyncresolver.Resolver:
    if server == "system":
        res = dns.asyncresolver.Resolver()
    else:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = [server]
    res.lifetime = timeout_s
    res.timeout = timeout_s
    res.cache = None  # every probe asks the resolver, never a cache in the agent
    return res


async def query(name: str, server: str, *, record: str = "A", timeout_s: float = 2.0) -> DnsAnswer:
    """Resolve ``name`` (``record`` A or AAAA) at ``server``; never raises for DNS trouble."""
    res = _resolver(server, timeout_s)
    t0 = time.perf_counter()

    def took() -> float:
        return (time.perf_counter() - t0) * 1000.0

    try:
        answer = await res.resolve(name, record, search=False)
    except dns.resolver.NXDOMAIN:
        return DnsAnswer("NXDOMAIN", ms=took(), error="no such name")
    except dns.resolver.NoAnswer:
        return DnsAnswer("NOANSWER", ms=took(), error=f"no {record} record")
    except dns.resolver.LifetimeTimeout:
        return DnsAnswer("TIMEOUT", error=f"no answer within {timeout_s:g} s")
    except dns.resolver.NoNameservers as exc:
        # SERVFAIL / REFUSED from every server; dnspython lists them in the message.
        text = str(exc)
        code = "REFUSED" if "REFUSED" in text else "SERVFAIL"
        return DnsAnswer(code, ms=took(), error=text[:200])
    except dns.exception.DNSException as exc:
        return DnsAnswer("ERROR", error=f"{type(exc).__name__}: {exc}"[:200])
    except OSError as exc:  # no route to the resolver, and the like
        return DnsAnswer("ERROR", error=f"{exc.strerror or exc}"[:200])
    addresses = tuple(r.to_text() for r in answer.rrset or ())
    if not addresses:
        return DnsAnswer("NOANSWER", ms=took(), error=f"no {record} record")
    return DnsAnswer("NOERROR", addresses, ms=took())


async def resolve_host(host: str, resolvers: Sequence[str], *, timeout_s: float = 2.0) -> Resolved:
    """An address for ``host``: the literal itself, or the first resolver's A answer.

    The next resolver is asked only when one does not answer at all (a timeout), as a
    stub resolver does; NXDOMAIN is final.
    """
    if is_address(host):
        return Resolved(host)
    last = DnsAnswer("ERROR", error="no resolver configured")
    for server in resolvers or ("system",):
        last = await query(host, server, timeout_s=timeout_s)
        if last.ok:
            return Resolved(last.addresses[0], dns_ms=last.ms)
        if last.rcode not in ("TIMEOUT", "ERROR"):
            break
    return Resolved(None, error=f"{last.rcode} ({last.error})" if last.error else last.rcode)
