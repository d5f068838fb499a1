"""Helpers for the security, hostile-input and fault-injection tests.

* :func:`make_pki`: a CA, a server certificate for 127.0.0.1/localhost and a client
  certificate, made with ``cryptography`` (a dependency already), written as PEM files;
* :func:`secured_broker`: a real Mosquitto with the password file, ACL and TLS listener
  that ``schoolnet broker-config`` generates from a test inventory;
* :func:`running_collector`: a collector in this event loop, connected and subscribed;
* small HTTP readers for the collector's ``/metrics`` and ``/api/status``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector.app import Collector
from collector.config import CollectorConfig
from schoolnet.brokerconfig import TlsListener, generate, read_secrets
from schoolnet.inventory import load_inventory
from schoolnet.sim.servers import Mosquitto, free_port


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA and what it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          san: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, client_cn: str = "site-a") -> Pki:
    """A CA and, signed by it, a server certificate (127.0.0.1, localhost) and a client one."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("schoolnet test CA", ca_key, _name("schoolnet test CA"), ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", srv_key, ca_cert.subject, ca_key,
                san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert(client_cn, cli_key, ca_cert.subject, ca_key)
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key",
              directory / "client.pem", directory / "client.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    pki.client_cert.write_bytes(cli.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.server_key, srv_key)
    _write_key(pki.client_key, cli_key)
    return pki


@dataclass
class SecuredBroker:
    """A running Mosquitto with the generated config, and the accounts' passwords."""

    broker: Mosquitto
    tls_port: int
    passwords: dict[str, str]
    pki: Pki


def secured_broker(workdir: Path, inventory: Path, *,
                   require_client_cert: bool = False) -> SecuredBroker:
    """Generate passwd/ACL/TLS config from ``inventory`` and start Mosquitto with it.

    The launcher's own listener (plain, loopback) gets the same password file and ACL
    (``per_listener_settings false``); the TLS listener is on ``tls_port``.
    """
    pki = make_pki(workdir / "pki")
    tls_port = free_port()
    generate(inventory, workdir / "broker", secrets_file=workdir / "secrets.yaml",
             tls=TlsListener(port=tls_port, host="127.0.0.1", certfile=str(pki.server_cert),
                             keyfile=str(pki.server_key), cafile=str(pki.ca),
                             require_client_cert=require_client_cert))
    conf = (workdir / "broker" / "schoolnet.conf").read_text()
    broker = Mosquitto(workdir / "mosquitto", extra_config=conf, allow_anonymous=False)
    broker.start()
    return SecuredBroker(broker, tls_port, read_secrets(workdir / "secrets.yaml"), pki)


async def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` (in a thread: it may block on HTTP) until truthy, with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_collector(cfg: CollectorConfig,
                            shutdown_timeout_s: float = 5.0) -> AsyncIterator[Collector]:
    """A collector running in this event loop, connected and subscribed."""
    c = Collector(cfg, load_inventory(cfg.inventory, resolve_secrets=False))
    stop = asyncio.Event()
    task = asyncio.create_task(c.serve(stop, shutdown_timeout_s=shutdown_timeout_s))
    await c.started.wait()
    await eventually(lambda: c.subscriber.subscribed, "the collector to subscribe")
    try:
        yield c
    finally:
        stop.set()
        await asyncio.wait_for(task, shutdown_timeout_s + 15)


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET a page of a collector's HTTP endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(port: int, name: str) -> float:
    """One sample of the collector's /metrics (0 if absent)."""
    _, body = http_get(port, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def site_status(port: int) -> dict[str, dict[str, Any]]:
    """``/api/status`` sites by site id."""
    _, body = http_get(port, "/api/status")
    return {s["site"]: s for s in json.loads(body)["sites"]}
