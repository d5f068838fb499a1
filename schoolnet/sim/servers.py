"""Launchers for the real servers the demo and the integration tests run on loopback.

Each launcher starts one process (Mosquitto, VictoriaMetrics, InfluxDB 1.x, snmpsim),
waits until it really answers, and stops exactly that process by its PID. They are
context managers::

    with Mosquitto(workdir) as broker, VictoriaMetrics(workdir) as db:
        ...  # broker.port, db.url

``kill()`` (SIGKILL) and ``start()`` again support fault-injection tests; the data
directory survives, so a restarted VictoriaMetrics keeps what it had.
"""

from __future__ import annotations

import bz2
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free on ``host`` right now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it returns True; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _tcp_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


class ManagedProcess:
    """One server process we started: start, wait until ready, stop by PID."""

    name = "server"
    ready_timeout = 30.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        """The command line to start the server."""
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """Environment for the process (None = inherit)."""
        return None

    def is_ready(self) -> bool:
        """Whether the server answers."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files before the first start."""

    def start(self) -> None:
        """Start the process and wait until it answers (raises with its log tail if not)."""
        if self.running:
            return
        self.prepare()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env(), cwd=self.workdir, start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")
            return self.is_ready()

        try:
            wait_for(ready, self.ready_timeout, f"{self.name} to answer")
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"{self.name} did not become ready:\n{self.log_tail()}") from None

    @property
    def pid(self) -> int | None:
        """PID of the running process, or None."""
        return self.proc.pid if self.running and self.proc else None

    @property
    def running(self) -> bool:
        """Whether our process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our process (and only it), SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL our process (fault injection); ``start()`` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Mosquitto(ManagedProcess):
    """A Mosquitto broker on loopback, anonymous by default.

    ``extra_config`` is appended to the generated mosquitto.conf (password_file,
    acl_file, TLS listeners ...). The port is kept across restarts.
    """

    name = "mosquitto"

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 extra_config: str = "", allow_anonymous: bool = True) -> None:
        super().__init__(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.extra_config = extra_config
        self.allow_anonymous = allow_anonymous
        self.conf_path = self.workdir / "mosquitto.conf"

    def prepare(self) -> None:
        """Write mosquitto.conf."""
        persist = self.workdir / "mosquitto-data"
        persist.mkdir(exist_ok=True)
        self.conf_path.write_text(
            f"listener {self.port} {self.host}\n"
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}\n"
            # Persistence keeps queued QoS 1 messages of persistent sessions (the
            # collector's) across a broker restart, as in production.
            "persistence true\n"
            f"persistence_location {persist}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            # As root, Mosquitto would switch to user 'mosquitto' and lose the workdir.
            + ("user root\n" if os.getuid() == 0 else "")
            + self.extra_config
        )

    def command(self) -> list[str]:
        """mosquitto -c <conf>."""
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf_path)]

    def is_ready(self) -> bool:
        """The listener accepts TCP connections."""
        return _tcp_open(self.host, self.port)


class VictoriaMetrics(ManagedProcess):
    """VictoriaMetrics on loopback: an InfluxDB-write-compatible database.

    It accepts line protocol on ``/write`` and ``/api/v2/write``; a measurement ``m``
    with field ``f`` becomes the series ``m_f`` with the tags as labels.
    """

    name = "victoria-metrics"

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = self.workdir / "vm-data"

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8428."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """victoria-metrics with loopback listener and test-friendly search settings."""
        return [
            shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics",
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            # Make fresh points visible to queries at once (default hides the last 30 s).
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
            "-memory.allowedPercent=20",
        ]

    def is_ready(self) -> bool:
        """/health answers OK."""
        with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
            return bool(r.status == 200)

    def flush(self) -> None:
        """Make everything ingested so far searchable (VictoriaMetrics buffers briefly)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5):
            pass

    def export(self, match: str, start: str = "0") -> list[dict[str, Any]]:
        """Raw series matching a selector, e.g. ``{__name__="interface_in_octets"}``.

        Each item: ``{"metric": {labels}, "values": [...], "timestamps": [ms ...]}``.
        """
        self.flush()
        q = urllib.parse.urlencode({"match[]": match, "start": start})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=10) as r:
            body = r.read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        """All values of ``label`` (optionally within series matching ``match``)."""
        self.flush()
        q = urllib.parse.urlencode({"match[]": match} if match else {})
        with urllib.request.urlopen(f"{self.url}/api/v1/label/{label}/values?{q}", timeout=10) as r:
            return list(json.loads(r.read())["data"])


class InfluxDB1(ManagedProcess):
    """InfluxDB 1.x (Debian's ``influxdb`` package, 1.6) on loopback: InfluxQL and ``/write``.

    The dashboards' queries are InfluxQL; this is the real server they are proven
    against. It has the v1 API only (``/write``, ``/query``), no ``/api/v2/write``.
    Both listeners (HTTP and the RPC one that backups use) bind to loopback on free
    ports; usage reporting and the ``_internal`` self-monitoring database are off, so
    nothing leaves the machine and the test database holds only what a test wrote.
    ``database`` is created on every start (``CREATE DATABASE`` is idempotent).
    """

    name = "influxdb"

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 database: str = "schoolnet") -> None:
        super().__init__(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.rpc_port = free_port(host)
        self.database = database
        self.conf_path = self.workdir / "influxdb.conf"

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8086."""
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        """Write influxdb.conf (data below the workdir, loopback listeners, quiet logs)."""
        data = self.workdir / "influxdb-data"
        self.conf_path.write_text(
            # Debian's build names the usage-report switch "reporting-enabled" (opt-in);
            # set it anyway, so no build ever phones home from a test.
            "reporting-enabled = false\n"
            "reporting-disabled = true\n"
            f'bind-address = "{self.host}:{self.rpc_port}"\n'
            "[meta]\n"
            f'  dir = "{data}/meta"\n'
            "[data]\n"
            f'  dir = "{data}/data"\n'
            f'  wal-dir = "{data}/wal"\n'
            "  query-log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"
            "[http]\n"
            f'  bind-address = "{self.host}:{self.port}"\n'
            "  log-enabled = false\n"
            "[logging]\n"
            '  level = "warn"\n'
        )

    def command(self) -> list[str]:
        """influxd run -config <conf>."""
        return [shutil.which("influxd") or "/usr/bin/influxd", "run", "-config",
                str(self.conf_path)]

    def is_ready(self) -> bool:
        """/ping answers 204."""
        with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
            return bool(r.status == 204)

    def __enter__(self) -> InfluxDB1:
        self.start()
        return self

    def start(self) -> None:
        """Start (see :meth:`ManagedProcess.start`), then create :attr:`database`."""
        super().start()
        self.query(f'CREATE DATABASE "{self.database}"', method="POST")

    def write(self, lines: Iterable[str], *, precision: str = "ns") -> None:
        """Write line protocol to :attr:`database` through the v1 ``/write``.

        Raises ``urllib.error.HTTPError`` with InfluxDB's message when it refuses a line
        (a field type conflict, a malformed line): a test must not lose data silently.
        """
        body = "\n".join(lines).encode()
        q = urllib.parse.urlencode({"db": self.database, "precision": precision})
        req = urllib.request.Request(f"{self.url}/write?{q}", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status != 204:
                raise RuntimeError(f"influxdb /write answered {r.status}")

    def query(self, q: str, *, epoch: str = "ms", method: str = "GET") -> list[dict[str, Any]]:
        """Run InfluxQL against :attr:`database`; the ``results`` list of the answer.

        A statement error (bad syntax, unknown function) raises ``RuntimeError`` with
        InfluxDB's message, so a broken query never passes as "no data".
        """
        params = urllib.parse.urlencode({"db": self.database, "q": q, "epoch": epoch})
        if method == "GET":
            req = urllib.request.Request(f"{self.url}/query?{params}")
        else:
            req = urllib.request.Request(
                f"{self.url}/query", data=params.encode(), method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400 for a statement it cannot parse
            doc = json.loads(exc.read() or b"{}") or {"error": f"HTTP {exc.code}"}
        if "error" in doc:
            raise RuntimeError(f"influxdb: {doc['error']}")
        results: list[dict[str, Any]] = doc.get("results", [])
        for res in results:
            if "error" in res:
                raise RuntimeError(f"influxdb: {res['error']} in: {q}")
        return results


def _ber_len(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    return bytes([0x81, n]) if n < 256 else bytes([0x82, n >> 8, n & 255])


def _ber(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _ber_len(len(body)) + body


def snmp_v2c_get_packet(community: str, request_id: int = 1) -> bytes:
    """A minimal SNMPv2c GET for sysUpTime.0 (readiness probe; no SNMP library needed)."""
    oid = bytes([0x2B, 6, 1, 2, 1, 1, 3, 0])  # 1.3.6.1.2.1.1.3.0
    varbind = _ber(0x30, _ber(0x06, oid) + b"\x05\x00")
    pdu = _ber(0xA0, _ber(0x02, bytes([request_id])) + b"\x02\x01\x00\x02\x01\x00"
               + _ber(0x30, varbind))
    return _ber(0x30, b"\x02\x01\x01" + _ber(0x04, community.encode()) + pdu)


class Snmpsim(ManagedProcess):
    """snmpsim serving recordings, each reachable under its file name as community.

    ``recordings`` maps a community name to a source: a path to a ``.snmprec`` or
    ``.snmprec.bz2`` file (copied, because snmpsim does not follow links, and
    decompressed, because snmpsim walks a ``.bz2`` file 100x slower) or the recording
    text itself. ``endpoints`` are (address, port) pairs to listen on; every
    endpoint serves every recording, so the demo gives each device its own address.
    """

    name = "snmpsim"
    ready_timeout = 120.0  # indexing a large recording takes a while on the first start

    def __init__(self, workdir: Path, recordings: Mapping[str, Path | str],
                 endpoints: Iterable[tuple[str, int]], *, log_requests: bool = False) -> None:
        super().__init__(workdir)
        self.recordings = dict(recordings)
        self.endpoints = list(endpoints)
        self.data_dir = self.workdir / "snmpsim-data"
        self.cache_dir = self.workdir / "snmpsim-cache"
        self.log_requests = log_requests

    def prepare(self) -> None:
        """Copy or write the recordings into the data directory."""
        self.data_dir.mkdir(exist_ok=True)
        for community, src in self.recordings.items():
            if isinstance(src, Path):
                dest = self.data_dir / f"{community}.snmprec"
                if dest.exists():
                    continue
                if src.name.endswith(".bz2"):
                    # Served from a .bz2 file, every lookup of an OID that is not itself
                    # in the recording (a GETNEXT/GETBULK starting at a column, as every
                    # table walk does) costs snmpsim ~100 ms of bz2 seeking; from plain
                    # text ~0.5 ms. So the copy is decompressed.
                    dest.write_bytes(bz2.decompress(src.read_bytes()))
                else:
                    shutil.copyfile(src, dest)
            else:
                (self.data_dir / f"{community}.snmprec").write_text(src)

    def command(self) -> list[str]:
        """snmpsim-command-responder with our data dir and endpoints."""
        exe = Path(sys.executable).with_name("snmpsim-command-responder")
        cmd = [str(exe), f"--data-dir={self.data_dir}", f"--cache-dir={self.cache_dir}",
               "--log-level", "debug" if self.log_requests else "error"]
        cmd += [f"--agent-udpv4-endpoint={h}:{p}" for h, p in self.endpoints]
        return cmd

    def env(self) -> dict[str, str]:
        """snmpsim refuses to run as root unless told it may."""
        return {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}

    def is_ready(self) -> bool:
        """Every endpoint answers an SNMP GET for the first recording's community."""
        community = next(iter(self.recordings))
        for host, port in self.endpoints:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.5)
                s.sendto(snmp_v2c_get_packet(community), (host, port))
                try:
                    s.recvfrom(65535)
                except TimeoutError:
                    return False
        return True


def snmpsim_data_file(name: str) -> Path:
    """Path of a recording in the ``snmpsim-data`` package (``network/switch/cisco-c3560``)."""
    import snmpsim_data  # type: ignore[import-untyped]

    base = Path(snmpsim_data.__file__).parent / "data"
    for suffix in (".snmprec.bz2", ".snmprec"):
        p = base / f"{name}{suffix}"
        if p.exists():
            return p
    raise FileNotFoundError(f"snmpsim-data has no recording {name!r}")


def read_recording(path: Path) -> str:
    """The text of a ``.snmprec`` or ``.snmprec.bz2`` recording."""
    data = path.read_bytes()
    return (bz2.decompress(data) if path.name.endswith(".bz2") else data).decode("latin-1")
