"""A real SMTP server for tests (aiosmtpd) on a free loopback port: it keeps every mail.

Optionally with STARTTLS (a throw-away self-signed certificate made by ``openssl``) and
AUTH. It can be stopped and started again on the same port (a relay outage).
"""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from schoolnet.sim.servers import free_port


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl, one day)."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class SmtpSink:
    """Collects mails; ``start()``/``stop()`` any number of times on one port."""

    def __init__(self, port: int | None = None, *, tls: tuple[Path, Path] | None = None,
                 login: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        #: Wall-clock arrival time of each mail (for latency benchmarks).
        self.arrived: list[float] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._tls = tls
        self._login = login

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd handler hook: keep the mail."""
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self._lock:
            self.arrived.append(time.time())
            self.messages.append(msg)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str,
              auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and self._login is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self._login)
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        """Listen on 127.0.0.1:port."""
        kwargs: dict[str, Any] = {}
        if self._tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
            kwargs.update(tls_context=ctx, require_starttls=True)
        if self._login is not None:
            kwargs.update(authenticator=self._auth, auth_required=True)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                      ready_timeout=10, **kwargs)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening (mails already received stay)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def subjects(self) -> list[str]:
        """Subjects of every mail so far, in arrival order."""
        with self._lock:
            return [str(m["Subject"]) for m in self.messages]

    def count(self) -> int:
        """How many mails arrived."""
        with self._lock:
            return len(self.messages)
