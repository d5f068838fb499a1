"""The ``alerting:`` section of the collector config: the relay and the engine's pace.

Per-tenant settings (recipients, language, calendar, policy, thresholds) live in the
inventory (``tenant.yaml``, see :mod:`schoolnet.alerting`); this is what belongs to the
installation::

    alerting:
      enabled: true
      smtp:
        host: mail.example.org
        port: 587
        security: starttls          # starttls | tls | none
        username: schoolnet
        password: {env: SCHOOLNET_SMTP_PASSWORD}
        from: schoolnet@noc.example.org
        # ca_file: /etc/ssl/certs/relay-ca.pem
        timeout_s: 30
      mail_domain: noc.example.org  # right side of Message-IDs; default: from's domain
      tick_s: 1                     # how often timers (hold-down, digests) are looked at
      retry_min_s: 1                # relay down: first retry after this, doubling ...
      retry_max_s: 300              # ... up to this
      history_days: 90              # closed outages and sent mails are kept this long
      ap_forget_days: 7             # an AP behind a controller not listed this long is
                                    # no longer expected (decommissioned)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.outages.mailer import SmtpSettings
from schoolnet.configfile import MappingReader, one_of, positive
from schoolnet.inventory import check_host


@dataclass(frozen=True, kw_only=True)
class AlertingSettings:
    """Everything about outages and mail that is not per tenant."""

    enabled: bool = True
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    mail_domain: str = ""
    tick_s: float = 1.0
    retry_min_s: float = 1.0
    retry_max_s: float = 300.0
    history_days: float = 90.0
    ap_forget_days: float = 7.0

    @property
    def domain(self) -> str:
        """The domain of Message-IDs."""
        return self.mail_domain or self.smtp.sender.rpartition("@")[2] or "schoolnet.invalid"


def _port(val: int) -> str | None:
    return None if 0 < val < 65536 else "must be a port number 1-65535"


def _address(val: str) -> str | None:
    ok = "@" in val and not set(val) & set(" \t\r\n<>,;\"'()")
    return None if ok else f"{val!r} is not a plain mail address"


def read_smtp(r: MappingReader) -> SmtpSettings:
    """Read ``alerting.smtp``."""
    d = SmtpSettings()
    s = SmtpSettings(
        host=r.value("host", str, d.host, check_host),
        port=r.value("port", int, d.port, _port),
        security=r.value("security", str, d.security, one_of("starttls", "tls", "none")),
        username=r.value("username", str, None),
        password=r.secret("password", required=False),
        sender=r.value("from", str, d.sender, _address),
        ca_file=r.value("ca_file", str, None),
        timeout_s=r.value("timeout_s", float, d.timeout_s, positive),
    )
    if s.username and s.security == "none":
        r.issues.add(r.node_of("security"), r.sub("security"),
                     "must be starttls or tls when a username is set (no passwords in clear)")
    r.finish()
    return s


def read_alerting_settings(r: MappingReader) -> AlertingSettings:
    """Read the collector config's ``alerting:`` section (absent: defaults)."""
    d = AlertingSettings()
    a = AlertingSettings(
        enabled=r.value("enabled", bool, d.enabled),
        smtp=read_smtp(r.mapping("smtp")),
        mail_domain=r.value("mail_domain", str, d.mail_domain),
        tick_s=r.value("tick_s", float, d.tick_s, positive),
        retry_min_s=r.value("retry_min_s", float, d.retry_min_s, positive),
        retry_max_s=r.value("retry_max_s", float, d.retry_max_s, positive),
        history_days=r.value("history_days", float, d.history_days, positive),
        ap_forget_days=r.value("ap_forget_days", float, d.ap_forget_days, positive),
    )
    r.finish()
    return a
