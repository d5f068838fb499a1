"""Service probes: DNS resolution time (``probe_dns``), TCP connect time (``probe_tcp``)
and HTTP(S) response time and status (``probe_http``).

Teachers notice the school server, the learning platform, the MDM and Microsoft 365
first, so these are what a site's ``probes.services`` list names. Every failure — a name
that does not resolve, a refused connection, a bad certificate, a timeout — is a point
with ``ok`` 0 and an ``error``, never an exception: one broken service must not hide the
others. The HTTP client is deliberately tiny (one GET, HTTP/1.1, ``Connection: close``,
status line and headers only): a probe measures reachability and response time, it does
not download pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.parse
from collections.abc import Sequence

from agent.probes.resolve import is_address, query, resolve_host
from schoolnet.probeconfig import DnsSettings, Service
from schoolnet.wire import FieldValue, Point

#: Response headers larger than this are not a web server we want to talk to.
MAX_HEADER_BYTES = 64 * 1024
USER_AGENT = "schoolnet-probe/1"


class DnsSource:
    """``probe:dns``: every configured name at every configured resolver, concurrently."""

    name = "probe:dns"

    def __init__(self, settings: DnsSettings, *, interval_s: float | None = None) -> None:
        self.settings = settings
        self.interval_s = interval_s

    async def _one(self, name: str, resolver: str, now_ns: int) -> Point:
        ans = await query(name, resolver, record=self.settings.record,
                          timeout_s=self.settings.timeout_s)
        fields: dict[str, FieldValue] = {"ok": 1 if ans.ok else 0, "rcode": ans.rcode,
                                         "answers": len(ans.addresses)}
        if ans.ms is not None:
            fields["resolve_ms"] = ans.ms
        if ans.error:
            fields["error"] = ans.error
        return Point("probe_dns", {"target": name, "resolver": resolver}, fields, now_ns)

    async def collect(self, now_ns: int) -> list[Point]:
        """One ``probe_dns`` point per name and resolver."""
        jobs = [self._one(n, r, now_ns) for n in self.settings.names
                for r in self.settings.resolvers]
        return list(await asyncio.gather(*jobs))


class _Failed(Exception):
    """A probe step failed; ``stage`` says which (dns, connect, tls, http)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _tls_context(svc: Service) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=svc.ca_file)
    if not svc.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _cert_days_left(writer: asyncio.StreamWriter) -> float | None:
    obj = writer.get_extra_info("ssl_object")
    cert = obj.getpeercert() if obj is not None else None
    if not cert or "notAfter" not in cert:
        return None  # not verified: the certificate's fields are not available
    return (ssl.cert_time_to_seconds(str(cert["notAfter"])) - time.time()) / 86400.0


class ServiceSource:
    """``probe:services``: connect (and for URLs, GET) every service, concurrently."""

    name = "probe:services"

    def __init__(self, services: Sequence[Service], *, timeout_s: float = 5.0,
                 resolvers: Sequence[str] = ("system",), interval_s: float | None = None) -> None:
        self.services = tuple(services)
        self.timeout_s = timeout_s
        self.resolvers = tuple(resolvers)
        self.interval_s = interval_s

    async def collect(self, now_ns: int) -> list[Point]:
        """A ``probe_tcp`` point per service, and a ``probe_http`` point per URL."""
        results = await asyncio.gather(*(self._one(s, now_ns) for s in self.services))
        return [p for pts in results for p in pts]

    async def _one(self, svc: Service, now_ns: int) -> list[Point]:
        fields: dict[str, FieldValue] = {}
        t_start = time.perf_counter()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                writer = await self._probe(svc, fields)
        except _Failed as exc:
            fields["ok"] = 0
            fields["error"] = str(exc)[:200]
            fields["stage"] = exc.stage
        except TimeoutError:
            fields["ok"] = 0
            fields["error"] = f"timeout after {self.timeout_s:g} s"
            fields["stage"] = str(fields.get("_stage", "connect"))
        finally:
            fields.pop("_stage", None)
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
        fields["total_ms"] = _ms(t_start)
        return self._points(svc, fields, now_ns)

    def _points(self, svc: Service, f: dict[str, FieldValue], now_ns: int) -> list[Point]:
        tcp_ok = "connect_ms" in f
        tcp: dict[str, FieldValue] = {"ok": 1 if tcp_ok else 0}
        for k in ("connect_ms", "dns_ms"):
            if k in f:
                tcp[k] = f[k]
        if not tcp_ok:
            tcp["error"] = f.get("error", "")
        host = f"[{svc.host}]" if ":" in svc.host else svc.host
        out = [Point("probe_tcp", {"target": f"{host}:{svc.port}", "service": svc.name},
                     tcp, now_ns)]
        if svc.url is not None:
            f.setdefault("ok", 1)
            out.append(Point("probe_http", {"target": svc.url[:256], "service": svc.name},
                             f, now_ns))
        return out

    async def _probe(self, svc: Service, f: dict[str, FieldValue]) -> asyncio.StreamWriter:
        """Resolve, connect, TLS, request; fills ``f`` step by step (timings in ms)."""
        f["_stage"] = "dns"
        address = svc.host
        if not is_address(svc.host):
            t0 = time.perf_counter()
            res = await resolve_host(svc.host, self.resolvers, timeout_s=self.timeout_s)
            if res.address is None:
                raise _Failed("dns", res.error)
            f["dns_ms"] = _ms(t0)
            address = res.address
        f["_stage"] = "connect"
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(address, svc.port)
        except OSError as exc:
            raise _Failed("connect", exc.strerror or str(exc)) from None
        f["connect_ms"] = _ms(t0)
        if svc.url is None:
            return writer
        try:
            if svc.tls:
                f["_stage"] = "tls"
                t0 = time.perf_counter()
                try:
                    await writer.start_tls(_tls_context(svc), server_hostname=svc.host)
                except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                    raise _Failed("tls", getattr(exc, "reason", None) or str(exc)) from None
                f["tls_ms"] = _ms(t0)
                days = _cert_days_left(writer)
                if days is not None:
                    f["cert_days_left"] = days
            f["_stage"] = "http"
            await self._request(svc, reader, writer, f)
        except BaseException:
            writer.close()
            raise
        return writer

    async def _request(self, svc: Service, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, f: dict[str, FieldValue]) -> None:
        assert svc.url is not None
        parts = urllib.parse.urlsplit(svc.url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        default = 443 if svc.tls else 80
        host = parts.netloc.rsplit("@", 1)[-1] if svc.port != default else svc.host
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n")
        t0 = time.perf_counter()
        try:
            writer.write(request.encode("ascii", "strict"))
            await writer.drain()
            status_line = await reader.readline()
            f["response_ms"] = _ms(t0)
            headers = await reader.readuntil(b"\r\n\r\n") if status_line else b""
        except asyncio.LimitOverrunError:
            raise _Failed("http", "response headers too large") from None
        except asyncio.IncompleteReadError:
            headers = b""
        except (OSError, UnicodeEncodeError) as exc:
            raise _Failed("http", str(exc)) from None
        if len(headers) > MAX_HEADER_BYTES:
            raise _Failed("http", "response headers too large")
        bits = status_line.decode("latin-1").split(" ", 2)
        if len(bits) < 2 or not bits[0].startswith("HTTP/") or not bits[1].isdigit():
            raise _Failed("http", f"not an HTTP response: {status_line[:40]!r}")
        status = int(bits[1])
        f["status"] = status
        f["headers_ms"] = _ms(t0)
        # A 4xx is a server that answers (a login page says 401): reachable and working.
        f["ok"] = 1 if status < 500 else 0
        if status >= 500:
            f["error"] = f"HTTP {status}"
