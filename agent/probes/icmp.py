"""ICMP echo trains: RTT min/avg/max/p95, jitter and loss per target (``probe_icmp``).

Packets are built and dissected with scapy; they go out through one raw socket per
address family (``CAP_NET_RAW``), shared by all trains of the source and read from the
event loop (``add_reader``), so every target's train runs concurrently and a target that
never answers costs its own timeout, nobody else's.

RTTs are taken against the **kernel's receive timestamp** (``SO_TIMESTAMPNS``), not the
moment Python gets round to reading the socket: a site box that is busy (an SNMP poll
of 60 devices at the same second) must not look like a slow uplink. The send time is
read just before ``sendto``.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import math
import random
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from scapy.layers.inet import ICMP, IP, ICMPerror
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest
from scapy.packet import Raw

from agent.probes.resolve import resolve_host
from schoolnet.probeconfig import IcmpSettings, ProbeTarget
from schoolnet.wire import FieldValue, Point

# Linux values; the socket module does not export them.
SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)
SOL_RAW: Final = 255
ICMP_FILTER: Final = 1
#: ICMP types a v4 socket wants: echo reply (0), unreachable (3), time exceeded (11).
_WANTED_V4: Final = (0, 3, 11)

CAP_NET_RAW_HINT: Final = (
    "ICMP probes need the capability CAP_NET_RAW to open a raw socket: run the agent "
    "with it (the systemd unit sets AmbientCapabilities=CAP_NET_RAW) or as root, or "
    "remove probes.targets from the site config"
)


class RawSocketPermissionError(PermissionError):
    """The process may not open raw sockets (no ``CAP_NET_RAW``)."""


@dataclass
class Echo:
    """One echo request in flight."""

    sent_ns: int
    done: asyncio.Future[int | None]  # receive time (ns) or None for an ICMP error


class EchoSocket:
    """A raw ICMP (or ICMPv6) socket that sends echoes and matches replies by id and seq."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        self.family = family
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        try:
            self.sock = socket.socket(family, socket.SOCK_RAW, proto)
        except PermissionError as exc:
            raise RawSocketPermissionError(f"{CAP_NET_RAW_HINT} ({exc.strerror})") from None
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if family == socket.AF_INET:
            # Only wake up for replies and errors, not for every ICMP packet the box sees.
            mask = 0xFFFFFFFF & ~sum(1 << t for t in _WANTED_V4)
            self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", mask))
        self._pending: dict[tuple[int, int], Echo] = {}
        self._idents: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
            loop.add_reader(self.sock.fileno(), self._on_readable)
            self._loop = loop

    def new_ident(self) -> int:
        """An echo identifier no other train of this socket uses right now."""
        while True:
            ident = random.randrange(1, 0x10000)
            if ident not in self._idents:
                self._idents.add(ident)
                return ident

    def release_ident(self, ident: int) -> None:
        """Forget a finished train's identifier and its unanswered echoes."""
        self._idents.discard(ident)
        for key in [k for k in self._pending if k[0] == ident]:
            del self._pending[key]

    def send(self, address: str, ident: int, seq: int, payload: bytes) -> Echo:
        """Send one echo request; raises OSError when the kernel refuses it (no route)."""
        self._attach()
        if self.family == socket.AF_INET:
            data = bytes(ICMP(type=8, id=ident, seq=seq) / Raw(payload))
        else:  # the kernel fills in the ICMPv6 checksum (it needs the pseudo header)
            data = bytes(ICMPv6EchoRequest(id=ident, seq=seq, data=payload, cksum=0))
        assert self._loop is not None
        echo = Echo(time.time_ns(), self._loop.create_future())
        self._pending[(ident, seq & 0xFFFF)] = echo
        try:
            self.sock.sendto(data, (address, 0))
        except OSError:
            del self._pending[(ident, seq & 0xFFFF)]
            raise
        return echo

    def _on_readable(self) -> None:
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65535, 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            rx_ns = _kernel_time(anc) or time.time_ns()
            key, ok = self._match(data)
            echo = self._pending.pop(key, None) if key else None
            if echo is not None and not echo.done.done():
                echo.done.set_result(rx_ns if ok else None)

    def _match(self, data: bytes) -> tuple[tuple[int, int] | None, bool]:
        """``((ident, seq), is_reply)`` of a received packet, or ``(None, False)``."""
        try:
            if self.family == socket.AF_INET:
                pkt = IP(data)
                if not pkt.haslayer(ICMP):
                    return None, False
                icmp = pkt[ICMP]
                if icmp.type == 0:
                    return (int(icmp.id), int(icmp.seq)), True
                if icmp.type in (3, 11) and pkt.haslayer(ICMPerror):
                    quoted = pkt[ICMPerror]  # our request, quoted by a router
                    if quoted.type == 8:
                        return (int(quoted.id), int(quoted.seq)), False
                return None, False
            if data[:1] == b"\x81":  # ICMPv6 echo reply (errors: the train's timeout)
                rep = ICMPv6EchoReply(data)
                return (int(rep.id), int(rep.seq)), True
        except Exception:  # a packet scapy cannot dissect is not ours
            return None, False
        return None, False

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
        self._loop = None
        self.sock.close()


def _kernel_time(ancdata: Sequence[tuple[int, int, bytes]]) -> int | None:
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


@dataclass
class TrainResult:
    """What one echo train saw: an RTT (ms) or None per echo, in sequence order."""

    rtts_ms: list[float | None] = field(default_factory=list)
    unreachable: int = 0
    error: str = ""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending, non-empty list."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def train_fields(result: TrainResult) -> dict[str, FieldValue]:
    """The fields of a ``probe_icmp`` point from one train (pure; see docs/data-model.md).

    Jitter is the mean absolute difference of consecutive RTTs (RFC 3550's idea without
    its smoothing), taken over the echoes that were answered, in sequence order.
    """
    sent = len(result.rtts_ms)
    rtts = [r for r in result.rtts_ms if r is not None]
    fields: dict[str, FieldValue] = {
        "sent": sent,
        "received": len(rtts),
        "loss_pct": 100.0 * (sent - len(rtts)) / sent if sent else 100.0,
    }
    if result.unreachable:
        fields["unreachable"] = result.unreachable
    if result.error:
        fields["error"] = result.error[:200]
    if rtts:
        ordered = sorted(rtts)
        fields.update({
            "rtt_min_ms": ordered[0],
            "rtt_avg_ms": sum(rtts) / len(rtts),
            "rtt_max_ms": ordered[-1],
            "rtt_p95_ms": percentile(ordered, 95),
            "jitter_ms": (sum(abs(b - a) for a, b in itertools.pairwise(rtts))
                          / (len(rtts) - 1)) if len(rtts) > 1 else 0.0,
        })
    return fields


async def echo_train(sock: EchoSocket, address: str, settings: IcmpSettings) -> TrainResult:
    """Send ``count`` echoes ``spacing_ms`` apart; wait ``timeout_s`` after the last one."""
    loop = asyncio.get_running_loop()
    ident = sock.new_ident()
    payload = bytes(range(256)) * (settings.payload_bytes // 256 + 1)
    payload = payload[: settings.payload_bytes]
    echoes: list[Echo | None] = []
    result = TrainResult()
    try:
        start = loop.time()
        for seq in range(settings.count):
            # Sends are placed on a fixed grid, so a late wake-up does not stretch the train.
            delay = start + seq * settings.spacing_ms / 1000.0 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                echoes.append(sock.send(address, ident, seq, payload))
            except OSError as exc:
                # No route (the uplink is gone) or the like: that echo is lost.
                echoes.append(None)
                result.error = result.error or _os_error(exc)
        waiting = [e.done for e in echoes if e is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=settings.timeout_s)
        for e in echoes:
            if e is None or not e.done.done():
                result.rtts_ms.append(None)
            elif e.done.result() is None:
                result.rtts_ms.append(None)
                result.unreachable += 1
            else:
                rx = e.done.result()
                assert rx is not None
                # A wall-clock step between send and receive makes nonsense; drop it.
                rtt = (rx - e.sent_ns) / 1e6
                result.rtts_ms.append(rtt if rtt >= 0 else None)
    finally:
        for e in echoes:
            if e is not None and not e.done.done():
                e.done.cancel()
        sock.release_ident(ident)
    return result


def _os_error(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name}: {exc.strerror}" if name else str(exc)


class IcmpSource:
    """``probe:icmp``: one echo train per target, all targets at once."""

    name = "probe:icmp"

    def __init__(self, targets: Sequence[ProbeTarget], settings: IcmpSettings, *,
                 resolvers: Sequence[str] = ("system",), interval_s: float | None = None) -> None:
        self.targets = tuple(targets)
        self.settings = settings
        self.resolvers = tuple(resolvers)
        self.interval_s = interval_s
        # Opened now, at start-up: a missing CAP_NET_RAW is a start-up error, not a
        # warning every minute.
        self._sockets: dict[int, EchoSocket] = {socket.AF_INET: EchoSocket(socket.AF_INET)}

    def _socket(self, family: int) -> EchoSocket:
        if family not in self._sockets:
            self._sockets[family] = EchoSocket(family)
        return self._sockets[family]

    async def _one(self, target: ProbeTarget, now_ns: int) -> Point:
        tags = {"target": target.name, "target_kind": target.kind}
        resolved = await resolve_host(target.host, self.resolvers, timeout_s=2.0)
        if resolved.address is None:
            # No loss_pct: a name that does not resolve says nothing about the path.
            return Point("probe_icmp", tags, {"error": f"dns: {resolved.error}"[:200]}, now_ns)
        family = socket.AF_INET6 if ":" in resolved.address else socket.AF_INET
        result = await echo_train(self._socket(family), resolved.address, self.settings)
        return Point("probe_icmp", tags, train_fields(result), now_ns)

    async def collect(self, now_ns: int) -> list[Point]:
        """One train per target, concurrently; one point per target."""
        return list(await asyncio.gather(*(self._one(t, now_ns) for t in self.targets)))

    async def close(self) -> None:
        """Close the raw sockets."""
        for s in self._sockets.values():
            s.close()
        self._sockets.clear()
