"""A shaped school uplink in two network namespaces: a "site" and a "NOC", joined by veth.

Used by the probe acceptance tests (tests/integration/test_probes_netns.py) and the
bench (bench/uplink_probes.py). Everything lives inside namespaces this code creates
(names carry the PID, so parallel runs never meet) and deletes again; nothing is routed
out of them, so no probe can reach anything but the lab.

This kernel has no netem, so the link is shaped with what exists:

* **rate**: ``tc qdisc ... tbf`` on each side's own egress (the NOC's veth shapes the
  download, the site's veth the upload);
* **loss**: ``iptables-legacy -m statistic`` DROP of echo requests arriving at the NOC;
* **delay**: ``iptables NFQUEUE`` at the NOC (the receiving side) and a small
  ``netfilterqueue`` loop in a thread inside the NOC namespace that holds every queued
  packet for the delay, then accepts it.

Python code runs "at the site" or "at the NOC" in a thread that has joined that network
namespace (``setns``): sockets opened there belong to the namespace, and so do child
processes started from that thread.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import itertools
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

SITE_IP = "10.211.0.1"
NOC_IP = "10.211.0.2"
#: An address on the NOC side that never answers (echo requests to it are dropped).
DEAD_IP = "10.211.0.3"
CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)


def lab_unavailable() -> str | None:
    """Why the lab cannot be built here (for a clear skip), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, iptables)"
    for tool in ("ip", "tc", "iptables-legacy", "iperf3"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup installs it)"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return "the netfilterqueue package is missing (pip install -e '.[test]')"
    probe = f"snchk{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*cmd: str) -> str:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def join_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str, fn: Callable[[], T], timeout: float = 120.0) -> T:
    """Run ``fn()`` in a fresh thread inside namespace ``name``; its result or exception."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            join_netns(name)
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"work in namespace {name} did not finish within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


class DelayQueue:
    """Holds every packet of an NFQUEUE for ``delay_s``, then accepts it (in order)."""

    def __init__(self, netns: str, queue_num: int, delay_s: float) -> None:
        self.netns = netns
        self.queue_num = queue_num
        self.delay_s = delay_s
        self.packets = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="delay-queue")

    def start(self) -> None:
        """Start the thread and wait until the queue is bound."""
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"NFQUEUE {self.queue_num} did not come up: {self._error}")

    def _loop(self) -> None:
        from netfilterqueue import NetfilterQueue, Packet

        held: collections.deque[tuple[float, Packet]] = collections.deque()
        try:
            join_netns(self.netns)
            nfq = NetfilterQueue()

            def hold(pkt: Packet) -> None:
                # The verdict is given later, from this same thread (constant delay:
                # first in, first out). Taking a timestamp here, not at release, keeps
                # the delay exact when several packets are due together.
                held.append((time.monotonic() + self.delay_s, pkt))
                self.packets += 1

            nfq.bind(self.queue_num, hold, max_len=4096)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        fd = nfq.get_fd()
        try:
            while not self._stop.is_set():
                wait = held[0][0] - time.monotonic() if held else 0.05
                readable, _, _ = select.select([fd], [], [], max(0.0, min(wait, 0.05)))
                if readable:
                    nfq.run(block=False)
                now = time.monotonic()
                while held and held[0][0] <= now:
                    held.popleft()[1].accept()
        finally:
            while held:
                held.popleft()[1].accept()
            nfq.unbind()

    def stop(self) -> None:
        """Release what is held, unbind, end the thread."""
        self._stop.set()
        self._thread.join(5)


class UplinkLab:
    """Context manager: the site and NOC namespaces, the veth between, shaping helpers."""

    def __init__(self) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.site = f"sn-site-{pid}-{n}"
        self.noc = f"sn-noc-{pid}-{n}"
        self.site_if = f"sv{pid % 10**7}{n % 100}"[:15]
        self.noc_if = f"nv{pid % 10**7}{n % 100}"[:15]
        self.site_ip = SITE_IP
        self.noc_ip = NOC_IP
        self.dead_ip = DEAD_IP
        self._procs: list[subprocess.Popen[bytes]] = []
        self._delays: list[DelayQueue] = []
        self._created: list[str] = []

    def __enter__(self) -> UplinkLab:
        try:
            for ns in (self.site, self.noc):
                _run("ip", "netns", "add", ns)
                self._created.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", self.site_if, "netns", self.site, "type", "veth",
                 "peer", "name", self.noc_if, "netns", self.noc)
            _run("ip", "-n", self.site, "addr", "add", f"{SITE_IP}/29", "dev", self.site_if)
            _run("ip", "-n", self.noc, "addr", "add", f"{NOC_IP}/29", "dev", self.noc_if)
            _run("ip", "-n", self.noc, "addr", "add", f"{DEAD_IP}/29", "dev", self.noc_if)
            _run("ip", "-n", self.site, "link", "set", self.site_if, "up")
            _run("ip", "-n", self.noc, "link", "set", self.noc_if, "up")
            # The dead target: on the link (ARP answers), but its echoes are dropped.
            self.iptables(self.noc, "-A", "INPUT", "-d", DEAD_IP, "-j", "DROP")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop what the lab started (by handle), delete its namespaces."""
        for d in self._delays:
            d.stop()
        self._delays.clear()
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self._procs.clear()
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._created.clear()

    # -- shaping ---------------------------------------------------------------------

    def iptables(self, ns: str, *args: str) -> str:
        """``iptables-legacy`` inside namespace ``ns``."""
        return _run("ip", "netns", "exec", ns, "iptables-legacy", "-w", *args)

    def shape(self, down_mbit: float, up_mbit: float) -> None:
        """Token-bucket rate limits: the NOC's egress is the download, the site's the upload."""
        for ns, dev, rate in ((self.noc, self.noc_if, down_mbit),
                              (self.site, self.site_if, up_mbit)):
            # burst: a few ms at the rate (at least 2 full frames); latency bounds the queue.
            burst = max(int(rate * 1e6 / 8 * 0.004), 3200)
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root",
                 "tbf", "rate", f"{rate}mbit", "burst", str(burst), "latency", "50ms")

    def unshape(self) -> None:
        """Remove the rate limits."""
        for ns, dev in ((self.noc, self.noc_if), (self.site, self.site_if)):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev,
                            "root"], capture_output=True)

    def drop_echo_requests(self, *match: str) -> None:
        """Drop echo requests arriving at the NOC that match ``match`` (statistic ...)."""
        self.iptables(self.noc, "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request",
                      *match, "-j", "DROP")

    def loss(self, probability: float) -> None:
        """Random loss of echo requests at the NOC (``-m statistic --mode random``)."""
        self.drop_echo_requests("-m", "statistic", "--mode", "random", "--probability",
                                f"{probability}")

    def dropped_by_statistic(self) -> int:
        """Packets the statistic DROP rules of the NOC's INPUT chain dropped so far."""
        out = self.iptables(self.noc, "-L", "INPUT", "-v", "-x", "-n")
        return sum(int(line.split()[0]) for line in out.splitlines()
                   if "statistic" in line and "DROP" in line)

    def clear_loss(self) -> None:
        """Remove the statistic rules again (the dead target's rule stays)."""
        out = self.iptables(self.noc, "-S", "INPUT")
        for line in out.splitlines():
            if "statistic" in line:
                self.iptables(self.noc, *line.replace("-A", "-D", 1).split())

    def delay(self, ms: float, queue_num: int = 0) -> DelayQueue:
        """Delay echo requests arriving at the NOC by ``ms`` (NFQUEUE, receiving side)."""
        q = DelayQueue(self.noc, queue_num, ms / 1000.0)
        q.start()
        self._delays.append(q)
        self.iptables(self.noc, "-I", "INPUT", "1", "-p", "icmp", "--icmp-type",
                      "echo-request", "-j", "NFQUEUE", "--queue-num", str(queue_num))
        return q

    def clear_delay(self) -> None:
        """Remove the NFQUEUE rules and stop the delay threads."""
        out = self.iptables(self.noc, "-S", "INPUT")
        for line in out.splitlines():
            if "NFQUEUE" in line:
                self.iptables(self.noc, *line.replace("-A", "-D", 1).split())
        for d in self._delays:
            d.stop()
        self._delays.clear()

    # -- running things --------------------------------------------------------------

    def at_site(self, coro: Callable[[], Coroutine[Any, Any, T]], timeout: float = 120) -> T:
        """Run an async function in an event loop inside the site namespace."""
        return run_in_netns(self.site, lambda: asyncio.run(coro()), timeout)

    def start_at_noc(self, *cmd: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a process inside the NOC namespace (stopped by :meth:`close`)."""
        out = log.open("wb") if log is not None else subprocess.DEVNULL
        p = subprocess.Popen(["ip", "netns", "exec", self.noc, *cmd], stdin=subprocess.DEVNULL,
                             stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(p)
        return p

    def exec_at_site(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command inside the site namespace to its end."""
        return subprocess.run(["ip", "netns", "exec", self.site, *cmd], capture_output=True,
                              text=True, timeout=timeout)

    def iperf3_server(self, port: int = 5201) -> subprocess.Popen[bytes]:
        """iperf3 server at the NOC, ready when this returns."""
        p = self.start_at_noc("iperf3", "-s", "-B", NOC_IP, "-p", str(port))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(["ip", "netns", "exec", self.noc, "ss", "-ltnH",
                                f"sport = :{port}"], capture_output=True, text=True)
            if r.stdout.strip():
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("iperf3 server did not start in the NOC namespace")


class NocServers:
    """A DNS server and an HTTP(S) server inside the NOC namespace, in threads.

    DNS answers A queries for ``records`` and NXDOMAIN for every other name; HTTP
    answers ``GET /`` with 200 and anything else with 404. Stopped by :meth:`stop`.
    """

    def __init__(self, lab: UplinkLab, records: dict[str, str], workdir: Path) -> None:
        self.lab = lab
        self.records = records
        self.workdir = workdir
        self.cert_file = workdir / "noc-cert.pem"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: list[Any] = []

    def start(self, *, http_port: int = 8080, https_port: int = 8443) -> NocServers:
        """Start both servers; return when they listen."""
        import socket

        ready = threading.Barrier(3, timeout=10)

        def dns_loop() -> None:
            import dns.flags
            import dns.message
            import dns.rcode
            import dns.rrset

            join_netns(self.lab.noc)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((NOC_IP, 53))
            ready.wait()
            while not self._stop.is_set():
                r, _, _ = select.select([sock], [], [], 0.1)
                if not r:
                    continue
                data, peer = sock.recvfrom(4096)
                try:
                    query = dns.message.from_wire(data)
                except Exception:
                    continue
                resp = dns.message.make_response(query)
                q = query.question[0]
                name = q.name.to_text().rstrip(".")
                if name in self.records and q.rdtype == 1:
                    resp.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A",
                                                           self.records[name]))
                elif name not in self.records:
                    resp.set_rcode(dns.rcode.NXDOMAIN)
                sock.sendto(resp.to_wire(), peer)
            sock.close()

        def http_loop() -> None:
            import http.server
            import ssl

            class Handler(http.server.BaseHTTPRequestHandler):
                def do_GET(self) -> None:
                    self.send_response(200 if self.path == "/" else 404)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

                def log_message(self, *args: Any) -> None:
                    pass

            join_netns(self.lab.noc)
            plain = http.server.ThreadingHTTPServer((NOC_IP, http_port), Handler)
            tls = http.server.ThreadingHTTPServer((NOC_IP, https_port), Handler)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert_file, self.workdir / "noc-key.pem")
            tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
            self._http += [plain, tls]
            ready.wait()
            for srv in (plain, tls):
                threading.Thread(target=srv.serve_forever, daemon=True).start()

        self._write_cert()
        for fn in (dns_loop, http_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        ready.wait()
        return self

    def _write_cert(self) -> None:
        """A self-signed certificate for the NOC's IP address (the probe's ca_file)."""
        import datetime as dt
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "noc.lab")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(NOC_IP))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.workdir / "noc-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def stop(self) -> None:
        """Stop both servers."""
        self._stop.set()
        for srv in self._http:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(5)
