"""The SMTP relay client against a real server: STARTTLS, AUTH, and what it refuses to do."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from collector.outages.mailer import PermanentMailError, SmtpRelay, SmtpSettings
from collector.outages.store import QueuedMail
from schoolnet.configfile import Secret
from tests.smtp_sink import SmtpSink, self_signed

pytestmark = pytest.mark.integration

MAIL = QueuedMail(id=1, outage_id=1, kind="down", sender="schoolnet@noc.example.org",
                  recipients=("schul-it@example.org",),
                  message=b"Subject: [schoolnet #1] t s: x DOWN\r\n\r\nbody\r\n")


def relay(port: int, cert: Path | None, password: str, security: str = "starttls") -> SmtpRelay:
    return SmtpRelay(SmtpSettings(host="127.0.0.1", port=port, security=security,
                                  username="schoolnet", password=Secret(password),
                                  sender=MAIL.sender, ca_file=str(cert) if cert else None,
                                  timeout_s=10))


def test_starttls_and_auth(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sink = SmtpSink(tls=(cert, key), login=("schoolnet", "s3cret"))
    sink.start()
    try:
        relay(sink.port, cert, "s3cret").send(MAIL)
        assert sink.subjects() == ["[schoolnet #1] t s: x DOWN"]
        # A wrong password is not the mail's fault: retried, not given up (no PermanentMailError).
        with pytest.raises(smtplib.SMTPAuthenticationError):
            relay(sink.port, cert, "wrong").send(MAIL)
        # An unknown CA: no delivery, no credentials sent.
        with pytest.raises(Exception) as info:
            relay(sink.port, None, "s3cret").send(MAIL)
        assert not isinstance(info.value, PermanentMailError)
    finally:
        sink.stop()
    assert sink.count() == 1


def test_no_credentials_over_a_relay_without_starttls(tmp_path: Path) -> None:
    sink = SmtpSink()  # plain SMTP, no STARTTLS offered
    sink.start()
    try:
        with pytest.raises(smtplib.SMTPNotSupportedError):
            relay(sink.port, None, "s3cret").send(MAIL)
    finally:
        sink.stop()
    assert sink.count() == 0
