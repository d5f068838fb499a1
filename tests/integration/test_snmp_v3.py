"""SNMPv3 authPriv (SHA-256 + AES) against Debian's net-snmp ``snmpd`` on loopback.

The right keys read the system group and the (real) interface table of this machine; a
wrong authentication key is a clear, counted ``auth_failed`` (the agent sends a report
PDU), not a silent timeout. Both devices use the same user name with different keys in
one site, which is exactly what makes the client give the second key set its own
pysnmp engine (keys of one user name would overwrite each other in a shared engine).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.snmp import SnmpDeviceSource, build_sources
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.sim.servers import ManagedProcess, free_port, snmp_v2c_get_packet
from schoolnet.wire import Point
from tests.conftest import loopback_address

pytestmark = pytest.mark.integration

SNMPD = shutil.which("snmpd") or "/usr/sbin/snmpd"
USER = "schoolnet"
#: Further users, one per protocol pair (inventory names → net-snmp names). 3DES is
#: left out: net-snmp does not implement it.
MATRIX = {
    "md5-des": ("md5", "MD5", "des", "DES"),
    "sha-aes": ("sha", "SHA", "aes128", "AES"),
    "sha224-aes192": ("sha224", "SHA-224", "aes192", "AES-192"),
    "sha512-aes256": ("sha512", "SHA-512", "aes256", "AES-256"),
    "sha384-nopriv": ("sha384", "SHA-384", "none", ""),
}


class Snmpd(ManagedProcess):
    """net-snmp's snmpd in the foreground, on one loopback address, with one v3 user.

    A random v2c community exists only for the readiness probe.
    """

    name = "snmpd"

    def __init__(self, workdir: Path, auth_key: str, priv_key: str) -> None:
        super().__init__(workdir)
        self.host = loopback_address()
        self.port = free_port(self.host, socket.SOCK_DGRAM)
        self.auth_key = auth_key
        self.priv_key = priv_key
        self.probe_community = "probe-" + secrets.token_hex(8)
        self.conf = self.workdir / "snmpd.conf"

    def prepare(self) -> None:
        """Write snmpd.conf: the v3 users and the probe community."""
        lines = [f'createUser {USER} SHA-256 "{self.auth_key}" AES "{self.priv_key}"',
                 f"rouser {USER} authpriv"]
        for user, (_, auth, _, priv) in MATRIX.items():
            privacy = f' {priv} "{self.priv_key}"' if priv else ""
            lines += [f'createUser {user} {auth} "{self.auth_key}"{privacy}',
                      f"rouser {user} {'authpriv' if priv else 'authnopriv'}"]
        lines.append(f"rocommunity {self.probe_community} 127.0.0.0/8")
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        """snmpd -f (foreground), -C (no system config), our config and endpoint."""
        return [SNMPD, "-f", "-Lo", "-C", "-c", str(self.conf), "-p",
                str(self.workdir / "snmpd.pid"), f"udp:{self.host}:{self.port}"]

    def env(self) -> dict[str, str]:
        """Persistent state (engine boots, localized keys) in the workdir, not /var/lib."""
        return {"SNMP_PERSISTENT_DIR": str(self.workdir / "persist"), "MIBS": "",
                "PATH": "/usr/sbin:/usr/bin:/bin"}

    def is_ready(self) -> bool:
        """The probe community answers a GET."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.sendto(snmp_v2c_get_packet(self.probe_community), (self.host, self.port))
            try:
                s.recvfrom(65535)
            except TimeoutError:
                return False
        return True


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    if not Path(SNMPD).exists():
        pytest.skip("net-snmp snmpd is not installed (scripts/setup installs it)")
    server = Snmpd(tmp_path_factory.mktemp("snmpd"), "auth-" + secrets.token_hex(8),
                   "priv-" + secrets.token_hex(8))
    with server:
        yield server


def v3_device(name: str, server: Snmpd, *, auth_key: str, priv_key: str) -> Device:
    creds = SnmpCredentials(version="3", user=USER, auth_protocol="sha256",
                            auth_key=Secret(auth_key), priv_protocol="aes",
                            priv_key=Secret(priv_key), timeout_s=1.0, retries=0)
    return Device(name=name, host=server.host, port=server.port, role="router", snmp=creds)


def poll(*devices: Device, rounds: int = 1) -> list[list[list[Point]]]:
    """``rounds`` polls of every device (concurrently within a round), one shared client."""

    async def main() -> list[list[list[Point]]]:
        site = Site(id="gy-v3", name="V3", tenant="t", uplink=None, agent=AgentSettings(),
                    devices=devices)
        srcs = [s for s in build_sources(site) if isinstance(s, SnmpDeviceSource)]
        out = []
        try:
            for _ in range(rounds):
                out.append(list(await asyncio.gather(
                    *(s.collect(time.time_ns()) for s in srcs))))
        finally:
            for s in srcs:
                await s.close()
        return out

    return asyncio.run(main())


def errors(points: list[Point]) -> list[dict[str, object]]:
    return [{**p.tags, **p.fields} for p in points if p.measurement == "snmp_error"]


def test_authpriv_sha256_aes_right_and_wrong_keys(snmpd: Snmpd) -> None:
    good = v3_device("router", snmpd, auth_key=snmpd.auth_key, priv_key=snmpd.priv_key)
    bad = v3_device("router-old-key", snmpd, auth_key="wrong-" + snmpd.auth_key,
                    priv_key=snmpd.priv_key)
    rounds = poll(good, bad, rounds=2)
    for n, (good_points, bad_points) in enumerate(rounds, 1):
        dev = good_points[0]
        assert dev.fields["reachable"] == 1, errors(good_points)
        assert dev.fields["sys_name"] and dev.fields["uptime_s"] >= 0  # type: ignore[operator]
        names = {p.tags["ifname"] for p in good_points if p.measurement == "interface"}
        assert "lo" in names  # this machine's own interfaces, through AES
        assert not errors(good_points)
        assert set(bad_points[0].fields) == {"reachable", "poll_ms"}
        assert bad_points[0].fields["reachable"] == 0
        (err,) = errors(bad_points)
        assert err["error"] == "auth_failed" and err["table"] == "system", err
        assert "digest" in str(err["message"]).lower()
        assert err["consecutive_failures"] == n  # counted, poll after poll


def test_every_auth_and_privacy_protocol_pair(snmpd: Snmpd) -> None:
    """One device per user, all polled at once through one client."""
    devices = []
    for user, (auth, _, priv, _) in MATRIX.items():
        creds = SnmpCredentials(version="3", user=user, auth_protocol=auth,
                                auth_key=Secret(snmpd.auth_key), priv_protocol=priv,
                                priv_key=Secret(snmpd.priv_key) if priv != "none" else None,
                                timeout_s=1.0, retries=0)
        devices.append(Device(name=user, host=snmpd.host, port=snmpd.port, role="ap",
                              profiles=("system",), snmp=creds))
    ((*results,),) = poll(*devices)
    got = {points[0].tags["device"]: (points[0].fields["reachable"], errors(points))
           for points in results}
    assert got == {user: (1, []) for user in MATRIX}


def test_wrong_privacy_key_is_a_timeout_with_net_snmp(snmpd: Snmpd) -> None:
    """net-snmp drops a request it cannot decrypt without a report: all the poller can
    say is ``timeout``. (Authentication is checked first, so a wrong auth key is clear.)"""
    dev = v3_device("router-bad-priv", snmpd, auth_key=snmpd.auth_key,
                    priv_key="wrong-" + snmpd.priv_key)
    ((points,),) = poll(dev)
    assert points[0].fields["reachable"] == 0
    (err,) = errors(points)
    assert err["error"] == "timeout"
