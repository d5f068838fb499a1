"""The collector's own config file: strict YAML, every problem as file:line: field.

Read through :mod:`schoolnet.configfile`, like the site inventory: an unknown key, a
wrong type or a missing required value is an error naming the file, the line and the
dotted field, and one run reports all of them. Secrets (MQTT password, database
token) may be inline, ``{env: NAME}`` or ``{file: PATH}`` and never print themselves.
See ``collector/example-config.yaml`` and docs/collector.md for every key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from collector.outages.settings import AlertingSettings, read_alerting_settings
from schoolnet.configfile import (
    ConfigError,
    IssueList,
    MappingReader,
    Secret,
    compose_file,
    one_of,
    positive,
)
from schoolnet.inventory import check_host
from schoolnet.wire import ID_RE

#: Default of ``spool.max_bytes``: 8 GiB of compressed lines (see collector/spool.py).
DEFAULT_SPOOL_MAX_BYTES = 8 * 1024**3


def _port(val: int) -> str | None:
    return None if 0 < val < 65536 else "must be a port number 1-65535"


def _port_or_zero(val: int) -> str | None:
    return None if 0 <= val < 65536 else "must be a port number 0-65535 (0: any free port)"


def _at_least_one(val: int) -> str | None:
    return None if val >= 1 else "must be at least 1"


def _url(val: str) -> str | None:
    return None if val.startswith(("http://", "https://")) else "must start with http:// or https://"


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    """How the collector reaches the broker and what it subscribes to."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    #: Client certificate and key (PEM), if the broker requires one.
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: Secret | None = None
    #: Stable id: the broker keeps this client's session (subscriptions and queued
    #: QoS 1 messages) while the collector is down. Two collectors need two ids.
    client_id: str = "schoolnet-collector"
    #: MQTT protocol: "5" (session expiry, receive maximum) or "3.1.1".
    protocol: str = "5"
    #: How long the broker keeps the session while the collector is away (MQTT 5).
    session_expiry_s: int = 7 * 24 * 3600
    #: Tenants to subscribe to (one filter each); empty means all tenants.
    tenants: tuple[str, ...] = ()
    keepalive_s: int = 30
    #: Messages the broker may have in flight to the collector before it waits for
    #: acknowledgements (MQTT 5 receive maximum). Messages are acknowledged only after
    #: their points are written, so this also bounds the collector's memory.
    max_inflight: int = 1000
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True, kw_only=True)
class InfluxSettings:
    """Where and how points are written (InfluxDB ``/api/v2/write`` or compatible)."""

    url: str = "http://127.0.0.1:8086"
    token: Secret | None = None
    org: str = "schoolnet"
    bucket: str = "schoolnet"
    #: A batch is written when it has this many lines, or after flush_interval_s.
    batch_max_lines: int = 5000
    flush_interval_s: float = 1.0
    timeout_s: float = 10.0
    retry_min_s: float = 0.5
    retry_max_s: float = 30.0
    #: Lines kept in memory: without the spool, everything not yet written (when full,
    #: the collector stops taking messages and the broker keeps them queued); with the
    #: spool, what waits to be stored and the front of what waits to be written.
    buffer_max_lines: int = 200_000
    #: How long the database needs to make an acknowledged write durable: 0 for
    #: InfluxDB (its WAL is on disk before it answers); 30 for VictoriaMetrics, which
    #: keeps the last seconds in memory (collector/durability.py). Written lines are
    #: kept this long and written again if the database restarted meanwhile.
    durable_after_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SpoolSettings:
    """The collector's durable spool in ``state_dir`` (collector/spool.py)."""

    #: On: a message is acknowledged once its lines are on disk here, so a database
    #: outage fills this spool instead of the broker's queue. Off: acknowledged once
    #: written to the database (the broker keeps the rest); seq state is not saved.
    enabled: bool = True
    #: Compressed lines on disk at most; when full, intake waits (nothing is dropped).
    max_bytes: int = DEFAULT_SPOOL_MAX_BYTES


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    """The collector's own HTTP endpoint: /healthz, /metrics, /api/status."""

    host: str = "127.0.0.1"
    port: int = 9310
    #: /healthz turns 503 when writes have failed for longer than this.
    write_failing_after_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    """Everything ``schoolnet collector run`` needs."""

    mqtt: MqttSettings = field(default_factory=MqttSettings)
    influx: InfluxSettings = field(default_factory=InfluxSettings)
    inventory: str = "site-configs"
    http: HttpSettings = field(default_factory=HttpSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    state_dir: str = "/var/lib/schoolnet/collector"
    #: At most one log line per drop reason per this many seconds.
    log_interval_s: float = 60.0
    #: Series budget per site: points of new series beyond it are dropped (series_budget).
    max_series_per_site: int = 50_000
    #: Outages and alert mail (SMTP relay, pace); per-tenant settings are in tenant.yaml.
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    source: str = ""


def _read_mqtt(r: MappingReader) -> MqttSettings:
    d = MqttSettings()
    tenants = r.string_list("tenants", ())
    for t in tenants:
        if not ID_RE.match(t):
            r.issues.add(r.node_of("tenants"), r.sub("tenants"), f"{t!r} is not a tenant id")
    m = MqttSettings(
        host=r.value("host", str, d.host, check_host),
        port=r.value("port", int, d.port, _port),
        tls=r.value("tls", bool, d.tls),
        ca_file=r.value("ca_file", str, None),
        cert_file=r.value("cert_file", str, None),
        key_file=r.value("key_file", str, None),
        username=r.value("username", str, None),
        password=r.secret("password", required=False),
        client_id=r.value("client_id", str, d.client_id,
                          lambda v: None if 0 < len(v) <= 64 else "must be 1-64 characters"),
        protocol=str(r.value("protocol", (str, float, int), d.protocol,
                             lambda v: one_of("5", "3.1.1")(str(v)))),
        session_expiry_s=r.value("session_expiry_s", int, d.session_expiry_s, positive),
        tenants=tenants,
        keepalive_s=r.value("keepalive_s", int, d.keepalive_s, positive),
        max_inflight=r.value("max_inflight", int, d.max_inflight,
                             lambda v: None if 1 <= v <= 65535 else "must be 1-65535"),
        reconnect_min_s=r.value("reconnect_min_s", float, d.reconnect_min_s, positive),
        reconnect_max_s=r.value("reconnect_max_s", float, d.reconnect_max_s, positive),
    )
    if (m.cert_file is None) != (m.key_file is None):
        r.issues.add(r.node, r.sub("cert_file"), "give both cert_file and key_file, or neither")
    r.finish()
    return m


def _read_influx(r: MappingReader) -> InfluxSettings:
    d = InfluxSettings()
    i = InfluxSettings(
        url=r.value("url", str, d.url, _url),
        token=r.secret("token", required=False),
        org=r.value("org", str, d.org),
        bucket=r.value("bucket", str, d.bucket),
        batch_max_lines=r.value("batch_max_lines", int, d.batch_max_lines, _at_least_one),
        flush_interval_s=r.value("flush_interval_s", float, d.flush_interval_s, positive),
        timeout_s=r.value("timeout_s", float, d.timeout_s, positive),
        retry_min_s=r.value("retry_min_s", float, d.retry_min_s, positive),
        retry_max_s=r.value("retry_max_s", float, d.retry_max_s, positive),
        buffer_max_lines=r.value("buffer_max_lines", int, d.buffer_max_lines, _at_least_one),
        durable_after_s=r.value("durable_after_s", float, d.durable_after_s,
                                lambda v: None if v >= 0 else "must be 0 or more"),
    )
    if i.buffer_max_lines < i.batch_max_lines:
        r.issues.add(r.node_of("buffer_max_lines"), r.sub("buffer_max_lines"),
                     "must be at least batch_max_lines")
    r.finish()
    return i


def _read_http(r: MappingReader) -> HttpSettings:
    d = HttpSettings()
    h = HttpSettings(
        host=r.value("host", str, d.host, check_host),
        port=r.value("port", int, d.port, _port_or_zero),
        write_failing_after_s=r.value("write_failing_after_s", float,
                                      d.write_failing_after_s, positive),
    )
    r.finish()
    return h


def _read_spool(r: MappingReader) -> SpoolSettings:
    d = SpoolSettings()
    sp = SpoolSettings(
        enabled=r.value("enabled", bool, d.enabled),
        max_bytes=r.value("max_bytes", int, d.max_bytes,
                          lambda v: None if v >= 1024**2 else "must be at least 1048576 (1 MiB)"),
    )
    r.finish()
    return sp


def load_config(path: str | Path, *, resolve_secrets: bool = True) -> CollectorConfig:
    """Load and check a collector config file; raises :class:`ConfigError` listing all.

    A relative ``inventory`` or ``state_dir`` is taken relative to the config file, so
    a config works from any current directory.
    """
    path = Path(path)
    issues = IssueList(resolve_secrets=resolve_secrets)
    node = compose_file(path, issues)
    issues.raise_if_any()
    r = MappingReader(node, "", issues)
    if not r.ok:
        issues.raise_if_any()
    d = CollectorConfig()
    mqtt = _read_mqtt(r.mapping("mqtt"))
    influx = _read_influx(r.mapping("influx"))
    http = _read_http(r.mapping("http"))
    spool = _read_spool(r.mapping("spool"))
    inventory = r.value("inventory", str, d.inventory)
    state_dir = r.value("state_dir", str, d.state_dir)
    log_interval = r.value("log_interval_s", float, d.log_interval_s, positive)
    max_series = r.value("max_series_per_site", int, d.max_series_per_site, _at_least_one)
    alerting = read_alerting_settings(r.mapping("alerting"))
    r.finish()
    issues.raise_if_any()
    base = path.resolve().parent
    return CollectorConfig(
        mqtt=mqtt,
        influx=influx,
        inventory=os.path.normpath(base / inventory),
        http=http,
        spool=spool,
        state_dir=os.path.normpath(base / state_dir),
        log_interval_s=log_interval,
        max_series_per_site=max_series,
        alerting=alerting,
        source=str(path),
    )


__all__ = [
    "CollectorConfig",
    "ConfigError",
    "HttpSettings",
    "InfluxSettings",
    "MqttSettings",
    "SpoolSettings",
    "load_config",
]
