"""Sending the queued mails: SMTP with STARTTLS and auth, oldest first, never lost.

:class:`SmtpRelay` delivers one mail with :mod:`smtplib` in a worker thread (a mail a
minute does not justify another async stack). :class:`MailSender` drains the durable
queue of :class:`~collector.outages.store.OutageStore` strictly in order: the oldest
pending mail is retried, with backoff, until the relay takes it, so a relay outage
delays mails and never reorders or drops them. Only a permanent refusal of the mail
itself (5xx for the sender, every recipient, or the data) takes it out of line; it
stays in the database, counted and visible in ``/api/outages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from collector.outages.store import OutageStore, QueuedMail
from schoolnet.configfile import Secret

log = logging.getLogger("schoolnet.collector.mail")


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """The relay: where, how secured, as whom."""

    host: str = "127.0.0.1"
    port: int = 587
    #: starttls (587, the default), tls (implicit, 465) or none (a local relay).
    security: str = "starttls"
    username: str | None = None
    password: Secret | None = None
    sender: str = "schoolnet@localhost"
    ca_file: str | None = None
    timeout_s: float = 30.0


class PermanentMailError(Exception):
    """The relay refused this mail for good (5xx): retrying cannot help."""


class SmtpRelay:
    """Delivers one mail per call (blocking; run it in a thread)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def send(self, mail: QueuedMail) -> None:
        """Send; raises :class:`PermanentMailError`, or any other error for a retry."""
        s = self.settings
        client: smtplib.SMTP
        if s.security == "tls":
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=self._tls())
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        try:
            client.ehlo()
            if s.security == "starttls":
                # starttls raises SMTPNotSupportedError if the relay does not offer it:
                # never fall back to plain text with credentials.
                client.starttls(context=self._tls())
                client.ehlo()
            if s.username:
                client.login(s.username, s.password.reveal() if s.password else "")
            try:
                refused = client.sendmail(mail.sender, list(mail.recipients), mail.message)
            except smtplib.SMTPRecipientsRefused as exc:
                raise PermanentMailError(f"all recipients refused: {exc.recipients}") from None
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                if 500 <= exc.smtp_code < 600:
                    raise PermanentMailError(f"{exc.smtp_code} {exc.smtp_error!r}") from None
                raise
            if refused:
                log.warning("mail %d: some recipients refused: %s", mail.id, refused)
        finally:
            with contextlib.suppress(Exception):
                client.quit()
            with contextlib.suppress(Exception):
                client.close()


class MailSender:
    """Drains the queue in order: :meth:`wake` after enqueueing, :meth:`run` as a task."""

    def __init__(self, store: OutageStore, relay: SmtpRelay, *, retry_min_s: float = 1.0,
                 retry_max_s: float = 300.0, clock: Callable[[], float] = time.time,
                 on_sent: Callable[[QueuedMail, float], None] | None = None) -> None:
        self.store = store
        self.relay = relay
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.clock = clock
        self.on_sent = on_sent
        self._wake = asyncio.Event()
        self.failing_since: float | None = None
        self.last_error = ""
        self.sent = 0
        self.failed = 0
        self.errors = 0

    def wake(self) -> None:
        """New mail is queued."""
        self._wake.set()

    async def _wait(self, stop: asyncio.Event, delay: float) -> None:
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self._wake.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop``; pending mails stay queued for the next start."""
        delay = self.retry_min_s
        while not stop.is_set():
            mail = self.store.next_mail()
            if mail is None:
                await self._wait(stop, 3600)
                continue
            try:
                await asyncio.to_thread(self.relay.send, mail)
            except PermanentMailError as exc:
                self.failed += 1
                log.error("mail %d (%s) refused for good, kept in the queue as failed: %s",
                          mail.id, mail.kind, exc)
                self.store.mark_failed(mail.id, str(exc), self.clock())
                continue
            except Exception as exc:  # connection, TLS, auth, 4xx, timeouts: try again
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if self.failing_since is None:
                    self.failing_since = self.clock()
                    log.warning("SMTP relay %s:%d failing, mails wait in the queue: %s",
                                self.relay.settings.host, self.relay.settings.port,
                                self.last_error)
                self.store.mark_attempt(mail.id, self.last_error)
                # Only a stop ends the pause early: new mail must not jump the queue.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            now = self.clock()
            self.store.mark_sent(mail.id, now)
            self.sent += 1
            if self.failing_since is not None:
                log.warning("SMTP relay back after %.0f s", now - self.failing_since)
            self.failing_since = None
            self.last_error = ""
            delay = self.retry_min_s
            if self.on_sent is not None:
                self.on_sent(mail, now)
