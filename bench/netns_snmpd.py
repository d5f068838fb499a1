"""A net-snmp ``snmpd`` in a network namespace of its own, with ~48 veth interfaces.

Benchmarks poll this rather than snmpsim, whose own CPU per request would dominate the
figures. The namespace is created and deleted by this code; snmpd listens on the
namespace's loopback only, and the benchmark runs its clients inside the namespace
(``ip netns exec``), so no traffic leaves it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class SnmpdNamespace:
    """Context manager: namespace + veth pairs + snmpd on the namespace's 127.0.0.1."""

    def __init__(self, veth_pairs: int = 24, community: str = "bench", port: int = 16100) -> None:
        self.name = f"schoolnet-bench-{os.getpid()}"
        self.veth_pairs = veth_pairs
        self.community = community
        self.port = port
        self.workdir = Path(tempfile.mkdtemp(prefix="schoolnet-snmpd-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def exec_prefix(self) -> list[str]:
        """Prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> SnmpdNamespace:
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            for i in range(self.veth_pairs):
                _ip("-n", self.name, "link", "add", f"ben{i}a", "type", "veth",
                    "peer", "name", f"ben{i}b")
                _ip("-n", self.name, "link", "set", f"ben{i}a", "up")
                _ip("-n", self.name, "link", "set", f"ben{i}b", "up")
            conf = self.workdir / "snmpd.conf"
            conf.write_text(
                f"agentAddress udp:127.0.0.1:{self.port}\n"
                f"rocommunity {self.community} 127.0.0.1\n"
            )
            env = {**os.environ, "SNMP_PERSISTENT_DIR": str(self.workdir)}
            self.proc = subprocess.Popen(
                [*self.exec_prefix(), shutil.which("snmpd") or "/usr/sbin/snmpd", "-f", "-C",
                 "-c", str(conf), "-Lf", str(self.workdir / "snmpd.log"),
                 "-p", str(self.workdir / "snmpd.pid")],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(
                [*self.exec_prefix(), "snmpget", "-v2c", "-c", self.community, "-t", "0.5",
                 "-r", "0", f"127.0.0.1:{self.port}", "1.3.6.1.2.1.1.3.0"],
                capture_output=True,
            )
            if r.returncode == 0:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        log = (self.workdir / "snmpd.log").read_text(errors="replace") if (
            self.workdir / "snmpd.log").exists() else ""
        raise RuntimeError(f"snmpd in {self.name} did not answer:\n{log[-2000:]}")

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # `ip netns exec` execs snmpd, so this PID is snmpd itself.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def can_create_namespaces() -> bool:
    """Whether this process may create network namespaces (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"schoolnet-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def free_udp_port() -> int:
    """A free UDP port number (used inside the namespace, where nothing else listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
