"""The wire contract between site agents and the collector: topics, payloads, limits.

This module is the one definition both sides import. Nobody else parses topics or
payloads.

Topics::

    schoolnet/v1/<tenant>/<site>/<kind>[/<device>]      kind: status|metrics|probe|event

``status`` is retained and carries a :class:`Status`; the agent's MQTT last will sets it
``offline``. The other kinds carry a :class:`Batch`: JSON with ``v`` (schema version),
``site``, a per-site monotonically increasing ``seq`` (assigned when the batch enters
the agent's disk spool), ``epoch`` and the points, in one of two forms.

Version 2 (what :func:`encode_batch` writes): columnar groups. Consecutive points with
the same measurement and timestamp travel as one group; keys appear once per group, not
once per point, which makes a switch poll a quarter of the v1 size and several times
cheaper to parse and check::

    {"v": 2, "site": "gs-park", "seq": 7, "epoch": "3f2a",
     "groups": [{"measurement": "interface", "time_ns": 1763712000000000000,
                 "tags": {"device": "core-sw", "role": "switch"},
                 "tag_columns": ["ifindex", "ifname"],
                 "field_columns": ["in_octets", "in_bps", "alias"],
                 "rows": [["10101", "Gi0/1", 123, 1.5e6, "uplink"],
                          ["10102", "Gi0/2", 456, 0.0, null]]}]}

A row holds the tag column values, then the field column values; ``null`` means the
point has no such tag or field. Each row is one point: the group's ``tags`` plus its
tag column values, its field values, the group's ``time_ns``. A group's columns must
fit the per-point limits (``len(tags) + len(tag_columns) <= max_tags``, ``1 <=
len(field_columns) <= max_fields``), columns must not repeat, every row must have one
value per column and at least one field. Everything else is checked per value exactly
as in v1, with the same ``reason`` codes. Grouping and the group and row checks are in
:mod:`schoolnet.wire_groups`; :func:`decode_batch_groups` keeps the checked groups,
which the collector formats into line protocol row by row.

Version 1: one object per point, still decoded::

    {"v": 1, "site": ..., "seq": ..., "epoch": ...,
     "points": [{"measurement": "interface",
                 "tags": {"device": "core-sw", "ifname": "Gi0/1", ...},
                 "fields": {"in_octets": 123, "in_bps": 1.5e6, "alias": "uplink"},
                 "time_ns": 1763712000000000000}, ...]}

Why a new version number rather than a second shape under ``v: 1``: a collector that
only knows v1 drops a v2 payload as ``bad_version`` (and says so in its drop counter)
instead of a puzzling ``bad_type``, so a rollout in the wrong order is visible at once.
The order is: collectors first (they decode both), then agents. v1 decoding must stay
for at least the agent spool's age bound (7 days) after the last agent is upgraded,
because a spool replays the bytes it stored before the upgrade. ``Batch(v=1)`` still
encodes the v1 form (tests, the benchmark, a collector that cannot be upgraded yet).
Status payloads did not change and stay version 1.

``tenant`` and ``site`` tags are never in the payload: the collector takes them from
the topic (the broker ACL makes the topic trustworthy). Limits (payload size, points per
batch, tag and field counts and lengths, timestamps) are enforced by both sides through
:class:`Limits`; integer fields must fit in 64 bits (line protocol's range); decoding
raises :class:`WireError` with a short ``reason`` code that the collector counts.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

orjson: Any
try:  # 2-3x faster parsing of valid payloads; see _loads for why results stay the same
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None

#: Version 1 of every payload; status payloads are still version 1.
SCHEMA_VERSION: Final = 1
#: Batch payload forms: 1 = one object per point, 2 = columnar groups (module doc).
BATCH_V1: Final = 1
BATCH_V2: Final = 2
#: What :func:`encode_batch` writes unless a batch says otherwise.
BATCH_VERSION: Final = BATCH_V2
#: What :func:`decode_batch` accepts.
BATCH_VERSIONS: Final = (BATCH_V1, BATCH_V2)
#: Integer fields must fit in a signed 64-bit integer (line protocol's range).
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
TOPIC_ROOT: Final = "schoolnet/v1"
KINDS: Final = ("status", "metrics", "probe", "event")
BATCH_KINDS: Final = ("metrics", "probe", "event")

#: Tenant and site ids: lower-case, usable in topics, file names and InfluxDB tags.
ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: Device names as they appear in the inventory and in topics.
DEVICE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: Measurement, tag and field keys.
KEY_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

FieldValue = int | float | bool | str

#: Tags the collector adds from the topic; a payload that carries them is rejected.
TOPIC_TAGS: Final = frozenset({"tenant", "site"})
#: Tags every device point carries (see docs/data-model.md).
DEVICE_TAGS: Final = frozenset({"device", "role", "vendor"})

#: Allowed measurements and the tag keys each may carry. Part of the contract: the
#: collector rejects anything else, so a site credential cannot create new series
#: families. Extend here (and in docs/data-model.md) when a source adds a measurement.
MEASUREMENT_TAGS: Final[Mapping[str, frozenset[str]]] = {
    # One point per polled device and poll: reachable, uptime_s, poll_ms, ...
    "device": DEVICE_TAGS,
    # One point per interface and poll: counters, rates, status.
    "interface": DEVICE_TAGS | {"ifindex", "ifname"},
    # One point per failed SNMP table walk (the device answered other tables).
    "snmp_error": DEVICE_TAGS | {"table", "error", "writes"},
    # The agent's own health: queue depth, spool size, publish counters.
    "agent": frozenset({"version"}),
    # Uplink probes (latency/loss/jitter, DNS, HTTP, throughput, utilization).
    "probe_icmp": frozenset({"target", "target_kind"}),
    "probe_tcp": frozenset({"target", "service"}),
    "probe_http": frozenset({"target", "service"}),
    "probe_dns": frozenset({"target", "resolver"}),
    "probe_throughput": frozenset({"target", "direction"}),
    "uplink": frozenset({"device", "ifname", "kind"}),
    # WLAN and device health (profiles beyond IF-MIB).
    "ap": DEVICE_TAGS | {"ap", "ap_mac", "controller"},
    "ap_radio": DEVICE_TAGS | {"ap", "radio", "band"},
    "ssid": DEVICE_TAGS | {"ssid", "ap"},
    "sensor": DEVICE_TAGS | {"sensor", "sensor_type"},
    "poe": DEVICE_TAGS | {"ifindex", "ifname", "pse"},
    "lldp": DEVICE_TAGS | {"ifname", "remote_name", "remote_port"},
    # The site's LLDP graph, one point per link (agent/topology_source.py).
    "topology": DEVICE_TAGS | {"ifname", "neighbour", "neighbour_port"},
    "health": DEVICE_TAGS,
}


class WireError(ValueError):
    """A topic or payload that breaks the contract.

    ``reason`` is a short stable code (``not_json``, ``too_large``, ...) that the
    collector uses as a counter label; ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Size and count limits of the contract, enforced on both sides."""

    max_payload_bytes: int = 512 * 1024
    max_points: int = 5000
    max_tags: int = 16
    max_fields: int = 64
    max_tag_value_len: int = 256
    max_string_field_len: int = 1024
    #: How far in the past a point may be: the agent's spool keeps ≥ 72 h, replay
    #: after a long outage must still be accepted.
    max_age_s: int = 14 * 24 * 3600
    #: How far in the future: site boxes have NTP, but clocks drift.
    max_future_s: int = 300


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: ``schoolnet/v1/<tenant>/<site>/<kind>[/<device>]``."""

    tenant: str
    site: str
    kind: str
    device: str | None = None

    def __str__(self) -> str:
        base = f"{TOPIC_ROOT}/{self.tenant}/{self.site}/{self.kind}"
        return f"{base}/{self.device}" if self.device else base


def status_topic(tenant: str, site: str) -> str:
    """The retained status topic of a site (birth ``online``, last will ``offline``)."""
    return str(Topic(tenant, site, "status"))


def site_filter(tenant: str, site: str) -> str:
    """The subscription filter for everything one site publishes."""
    return f"{TOPIC_ROOT}/{tenant}/{site}/#"


def tenant_filter(tenant: str | None = None) -> str:
    """The subscription filter for one tenant, or all tenants when ``tenant`` is None."""
    return f"{TOPIC_ROOT}/{tenant}/#" if tenant else f"{TOPIC_ROOT}/#"


def parse_topic(topic: str) -> Topic:
    """Parse and check a topic string; raises :class:`WireError` (``bad_topic``)."""
    parts = topic.split("/")
    if len(parts) not in (5, 6) or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise WireError("bad_topic", f"not {TOPIC_ROOT}/<tenant>/<site>/<kind>[/<device>]")
    tenant, site, kind = parts[2], parts[3], parts[4]
    device = parts[5] if len(parts) == 6 else None
    if not ID_RE.match(tenant) or not ID_RE.match(site):
        raise WireError("bad_topic", "tenant or site id is not a valid id")
    if kind not in KINDS:
        raise WireError("bad_topic", f"unknown kind {kind[:32]!r}")
    if device is not None and (kind == "status" or not DEVICE_RE.match(device)):
        raise WireError("bad_topic", "bad device part")
    return Topic(tenant, site, kind, device)


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement at one time: what a source emits and the collector writes."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this point on the wire."""
        return {
            "measurement": self.measurement,
            "tags": dict(self.tags),
            "fields": dict(self.fields),
            "time_ns": self.time_ns,
        }


@dataclass(frozen=True, slots=True)
class Batch:
    """The payload of a ``metrics``, ``probe`` or ``event`` message."""

    site: str
    seq: int
    points: tuple[Point, ...]
    #: Identifies the agent spool that numbered this batch; a new spool (a wiped or
    #: replaced site box) starts again at seq 0 with a new epoch.
    epoch: str = ""
    #: The payload form: :data:`BATCH_V2` (groups) or :data:`BATCH_V1` (points).
    v: int = BATCH_VERSION


@dataclass(frozen=True, slots=True)
class PointGroup:
    """One v2 group after :func:`decode_batch_groups` checked it.

    ``rows`` are the row lists as received (tag column values, then field column values,
    ``None`` where a point has no such tag or field) and ``types`` the type of every
    value of each row. The collector's line encoder formats ``rows`` directly;
    :attr:`points` are the same points as :class:`Point` objects, built on first use.
    """

    measurement: str
    time_ns: int
    tags: Mapping[str, str]
    tag_columns: tuple[str, ...]
    field_columns: tuple[str, ...]
    rows: tuple[list[Any], ...]
    types: tuple[tuple[type, ...], ...]
    #: The points once built (the checks build them right away for rows with nulls).
    _points: tuple[Point, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def points(self) -> tuple[Point, ...]:
        """The group's points: built on first use, since a collector that only writes
        lines never needs them (its outage engine does)."""
        got = self._points
        if got is None:
            got = _groups.make_points(self)
            object.__setattr__(self, "_points", got)
        return got


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A batch payload after :func:`decode_batch_groups`: v1 points or v2 groups."""

    site: str
    seq: int
    epoch: str
    v: int
    groups: tuple[PointGroup, ...] = ()
    v1_points: tuple[Point, ...] = ()

    @property
    def count(self) -> int:
        """How many points the batch holds (without building them)."""
        return sum(len(g.rows) for g in self.groups) if self.groups else len(self.v1_points)

    @property
    def points(self) -> tuple[Point, ...]:
        """All points in payload order (v2: built on first use, see PointGroup.points)."""
        if not self.groups:
            return self.v1_points
        return tuple(p for g in self.groups for p in g.points)


@dataclass(frozen=True, slots=True)
class Status:
    """The retained payload of a site's ``status`` topic."""

    site: str
    state: str  # "online" | "offline"
    time_ns: int | None = None
    reason: str = ""
    version: str = ""
    v: int = SCHEMA_VERSION


STATUS_STATES: Final = ("online", "offline")


def _reject_constant(name: str) -> Any:
    raise WireError("bad_number", f"{name} is not allowed")


#: Digits to "0", "-" kept, everything else to " ": finds long digit runs with bytes.find.
_DIGIT_RUNS: Final = bytes(
    0x30 if 0x30 <= b <= 0x39 else (0x2D if b == 0x2D else 0x20) for b in range(256)
)
_RUN19: Final = b"0" * 19


def _digit_runs(payload: bytes) -> int:
    """-1 if the payload may hold an integer beyond 64 bits, else how many 19-digit runs.

    orjson turns integers beyond 64 bits into floats (losing digits) where the json
    module keeps them exact; such payloads take the json path. 20 digits, or 19 after a
    minus sign, is the shortest such integer (timestamps in ns have 19 digits and no
    sign). The count of 19-digit runs lets :func:`decode_batch_groups` skip the int64
    check of every value when the only 19-digit numbers are the groups' timestamps.
    """
    runs = payload.translate(_DIGIT_RUNS)
    if runs.find(b"00000000000000000000") >= 0 or runs.find(b"-0000000000000000000") >= 0:
        return -1
    return runs.count(_RUN19)


def _loads_counted(payload: bytes, limits: Limits) -> tuple[Any, int]:
    """The parsed document, and :func:`_digit_runs` if orjson parsed it, else -1.

    A document parsed by orjson holds no non-finite float (orjson refuses them).
    """
    if len(payload) > limits.max_payload_bytes:
        raise WireError("too_large", f"{len(payload)} bytes > {limits.max_payload_bytes}")
    runs = _digit_runs(payload) if orjson is not None else -1
    if runs >= 0:
        # Fast path for the common case. Anything orjson refuses (NaN, Infinity, 1e999,
        # lone surrogates, UTF-16, broken JSON, nesting deeper than 1024) is parsed
        # again by the json module below, so values and error reasons are those of the
        # json module; the one difference: nesting between Python's recursion limit and
        # 1024 levels parses here (and is then rejected or ignored like any other value).
        try:
            return orjson.loads(payload), runs
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(payload, parse_constant=_reject_constant), -1
    except WireError:
        raise
    except RecursionError:
        raise WireError("too_deep", "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError("not_json", str(exc)[:120]) from None


def _loads(payload: bytes, limits: Limits) -> Any:
    return _loads_counted(payload, limits)[0]


def encode_batch(batch: Batch, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Serialise a batch in the form ``batch.v`` names; raises :class:`WireError` if it
    breaks a limit.

    The agent calls this before a batch enters its spool, so an oversized batch is
    split there (see :func:`split_points`) rather than refused by the collector.
    """
    if len(batch.points) > limits.max_points:
        raise WireError("too_many_points", f"{len(batch.points)} > {limits.max_points}")
    doc: dict[str, Any] = {"v": batch.v, "site": batch.site, "seq": batch.seq,
                           "epoch": batch.epoch}
    if batch.v == BATCH_V2:
        doc["groups"] = _groups.group_points(batch.points, limits)
    elif batch.v == BATCH_V1:
        doc["points"] = [p.to_json() for p in batch.points]
    else:
        raise WireError("bad_version", f"cannot encode schema version {batch.v!r}")
    data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if len(data) > limits.max_payload_bytes:
        raise WireError("too_large", f"{len(data)} bytes > {limits.max_payload_bytes}")
    return data


def split_points(points: list[Point], limits: Limits = DEFAULT_LIMITS) -> list[list[Point]]:
    """Split points into chunks that each fit in one batch by count (and rough size)."""
    # ~2 KiB per point is a generous upper bound for points within the tag/field limits
    # of typical sources (v1 form; v2 is smaller); encode_batch still has the final word.
    per_batch = max(1, min(limits.max_points, limits.max_payload_bytes // 2048))
    return [points[i : i + per_batch] for i in range(0, len(points), per_batch)] or [[]]


def _check_tags(tags: dict[Any, Any], allowed: frozenset[str], measurement: str, where: str,
                limits: Limits) -> None:
    for k, v in tags.items():
        if k not in allowed:
            reason = "topic_tag" if k in TOPIC_TAGS else "unknown_tag"
            raise WireError(reason, f"{where}: tag {k[:64]!r} not allowed on {measurement}")
        if not isinstance(v, str):
            raise WireError("bad_type", f"{where}.tags.{k} is not a string")
        if not v or len(v) > limits.max_tag_value_len:
            raise WireError("bad_tag_value", f"{where}.tags.{k} is empty or too long")


def _check_field_value(k: str, v: Any, where: str, limits: Limits) -> None:
    if isinstance(v, str):
        if len(v) > limits.max_string_field_len:
            raise WireError("bad_field_value", f"{where}.fields.{k} is too long")
    elif isinstance(v, float):
        if not math.isfinite(v):  # only via the json module's 1e999, or direct callers
            raise WireError("bad_number", f"{where}.fields.{k} is not finite")
    elif isinstance(v, bool):
        pass
    elif isinstance(v, int):
        if not INT64_MIN <= v <= INT64_MAX:
            raise WireError("bad_field_value", f"{where}.fields.{k} does not fit in 64 bits")
    else:
        raise WireError("bad_type", f"{where}.fields.{k} has type {type(v).__name__}")


def _check_point(obj: Any, i: int, limits: Limits, lo_ns: int, hi_ns: int) -> Point:
    if not isinstance(obj, dict):
        raise WireError("bad_type", f"points[{i}] is not an object")
    measurement = obj.get("measurement")
    tags = obj.get("tags", {})
    fields = obj.get("fields")
    ts = obj.get("time_ns")
    if len(obj) > 4 or not set(obj) <= {"measurement", "tags", "fields", "time_ns"}:
        raise WireError("bad_point", f"points[{i}] has unknown keys")
    if not isinstance(measurement, str):
        raise WireError("bad_type", f"points[{i}].measurement is not a string")
    allowed = MEASUREMENT_TAGS.get(measurement)
    if allowed is None:
        raise WireError("unknown_measurement", f"points[{i}]: {measurement[:64]!r}")
    if not isinstance(tags, dict) or not isinstance(fields, dict):
        raise WireError("bad_type", f"points[{i}]: tags and fields must be objects")
    if type(ts) is not int:
        raise WireError("bad_type", f"points[{i}].time_ns is not an integer")
    if not lo_ns <= ts <= hi_ns:
        raise WireError("bad_time", f"points[{i}].time_ns is out of the accepted window")
    if len(tags) > limits.max_tags:
        raise WireError("too_many_tags", f"points[{i}] has {len(tags)} tags")
    _check_tags(tags, allowed, measurement, f"points[{i}]", limits)
    if not fields:
        raise WireError("bad_point", f"points[{i}] has no fields")
    if len(fields) > limits.max_fields:
        raise WireError("too_many_fields", f"points[{i}] has {len(fields)} fields")
    for k, v in fields.items():
        if not KEY_RE.match(k):
            raise WireError("bad_key", f"points[{i}]: field key {k[:64]!r}")
        _check_field_value(k, v, f"points[{i}]", limits)
    return Point(measurement, tags, fields, ts)


def check_point(point: Point, limits: Limits = DEFAULT_LIMITS, *,
                now_ns: int | None = None) -> None:
    """Check one point exactly as :func:`decode_batch` will; raises :class:`WireError`.

    The agent checks each point before it enters the spool: the collector rejects a
    payload whole when one point is bad, so a bad point must not travel with good ones.
    """
    now = time.time_ns() if now_ns is None else now_ns
    lo, hi = now - limits.max_age_s * 10**9, now + limits.max_future_s * 10**9
    _check_point(point.to_json(), 0, limits, lo, hi)


_POINT_KEYS: Final = frozenset({"measurement", "tags", "fields", "time_ns"})
_NO_TAGS: Final[dict[str, Any]] = {}
#: Field keys already seen to match KEY_RE (bounded: a hostile site cannot grow it much).
_good_field_keys: set[str] = set()


def _field_keys_ok(fields: Iterable[str]) -> bool:
    for k in fields:
        if k not in _good_field_keys:
            if not isinstance(k, str) or not KEY_RE.match(k):
                return False
            if len(_good_field_keys) >= 4096:
                _good_field_keys.clear()
            _good_field_keys.add(k)
    return True


def _check_point_fast(obj: Any, i: int, limits: Limits, lo_ns: int, hi_ns: int) -> Point:
    """:func:`_check_point` for the common case (a valid point), several times cheaper.

    Accepts only what every check of :func:`_check_point` accepts, mostly with set
    operations in C; anything else goes to :func:`_check_point`, which finds the exact
    reason. So results and error reasons are the same by construction.
    """
    if type(obj) is dict and len(obj) <= 4 and obj.keys() <= _POINT_KEYS:
        m = obj.get("measurement")
        tags = obj.get("tags", _NO_TAGS)
        fields = obj.get("fields")
        ts = obj.get("time_ns")
        allowed = MEASUREMENT_TAGS.get(m) if type(m) is str else None
        if (
            allowed is not None
            and type(tags) is dict
            and type(fields) is dict
            and type(ts) is int
            and lo_ns <= ts <= hi_ns
            and len(tags) <= limits.max_tags
            and tags.keys() <= allowed
            and 0 < len(fields) <= limits.max_fields
            and (fields.keys() <= _good_field_keys or _field_keys_ok(fields))
        ):
            ok = True
            max_tag = limits.max_tag_value_len
            for v in tags.values():
                if type(v) is not str or not v or len(v) > max_tag:
                    ok = False
                    break
            if ok:
                max_str = limits.max_string_field_len
                for v in fields.values():
                    t = type(v)
                    if t is float:
                        if v - v != 0.0:  # inf or nan
                            ok = False
                            break
                    elif t is str:
                        if len(v) > max_str:
                            ok = False
                            break
                    elif t is int:
                        if v > INT64_MAX or v < INT64_MIN:
                            ok = False
                            break
                    elif t is not bool:
                        ok = False
                        break
            if ok:
                assert isinstance(m, str)
                return Point(m, tags, fields, ts)
    return _check_point(obj, i, limits, lo_ns, hi_ns)


def _check_batch_head(doc: Any) -> tuple[str, int, str, int]:
    if not isinstance(doc, dict):
        raise WireError("bad_type", "payload is not a JSON object")
    v = doc.get("v")
    if type(v) is not int or v not in BATCH_VERSIONS:
        raise WireError("bad_version", f"schema version {str(v)[:16]!r}")
    site, seq = doc.get("site"), doc.get("seq")
    epoch = doc.get("epoch", "")
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise WireError("bad_type", "epoch is not a short string")
    if not isinstance(site, str) or not ID_RE.match(site):
        raise WireError("bad_type", "site is not a valid id")
    if type(seq) is not int or seq < 0:
        raise WireError("bad_type", "seq is not a non-negative integer")
    return site, seq, epoch, v


def decode_batch_groups(
    payload: bytes, limits: Limits = DEFAULT_LIMITS, *, now_ns: int | None = None
) -> CheckedBatch:
    """Check a batch payload exactly as :func:`decode_batch` does; v2 stays in groups.

    The collector formats line protocol from the groups' rows directly and builds
    :class:`Point` objects only for a consumer that asks (``CheckedBatch.points``).
    """
    doc, runs = _loads_counted(payload, limits)
    site, seq, epoch, v = _check_batch_head(doc)
    now = time.time_ns() if now_ns is None else now_ns
    lo, hi = now - limits.max_age_s * 10**9, now + limits.max_future_s * 10**9
    if v == BATCH_V1:
        points = doc.get("points")
        if not isinstance(points, list):
            raise WireError("bad_type", "points is not a list")
        if len(points) > limits.max_points:
            raise WireError("too_many_points", f"{len(points)} > {limits.max_points}")
        checked = tuple(_check_point_fast(p, i, limits, lo, hi) for i, p in enumerate(points))
        return CheckedBatch(site, seq, epoch, v, v1_points=checked)
    groups = doc.get("groups")
    if not isinstance(groups, list):
        raise WireError("bad_type", "groups is not a list")
    if len(groups) > limits.max_points:
        raise WireError("too_many_points", f"{len(groups)} groups > {limits.max_points}")
    heads = [_groups.check_group_head(g, i, limits, lo, hi) for i, g in enumerate(groups)]
    rows = sum(len(g.rows) for g in heads)
    if rows > limits.max_points:
        raise WireError("too_many_points", f"{rows} > {limits.max_points}")
    # Parsed by orjson: no float is infinite; no integer has 20 digits (or 19 after a
    # minus). If the only 19-digit numbers are the groups' timestamps, every integer
    # value fits in 64 bits.
    floats_ok = runs >= 0
    ints_ok = floats_ok and runs <= sum(1 for g in heads if g.time_ns >= 10**18)
    checked_groups = tuple(_groups.check_rows(g, limits, floats_ok, ints_ok) for g in heads)
    return CheckedBatch(site, seq, epoch, v, groups=checked_groups)


def decode_batch(
    payload: bytes, limits: Limits = DEFAULT_LIMITS, *, now_ns: int | None = None
) -> Batch:
    """Parse and validate a batch payload (v1 or v2) against the contract.

    All-or-nothing per payload: a payload with one broken point is rejected whole, so
    what the collector writes is always exactly what one agent batch said.
    """
    b = decode_batch_groups(payload, limits, now_ns=now_ns)
    return Batch(site=b.site, seq=b.seq, points=b.points, epoch=b.epoch, v=b.v)


def encode_status(status: Status) -> bytes:
    """Serialise a status payload."""
    doc: dict[str, Any] = {"v": status.v, "site": status.site, "state": status.state}
    if status.time_ns is not None:
        doc["time_ns"] = status.time_ns
    if status.reason:
        doc["reason"] = status.reason
    if status.version:
        doc["version"] = status.version
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_status(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Status:
    """Parse and validate a status payload; raises :class:`WireError`."""
    doc = _loads(payload, limits)
    if not isinstance(doc, dict) or doc.get("v") != SCHEMA_VERSION:
        raise WireError("bad_status", "not a v1 status object")
    site, state = doc.get("site"), doc.get("state")
    ts, reason, version = doc.get("time_ns"), doc.get("reason", ""), doc.get("version", "")
    if not isinstance(site, str) or not ID_RE.match(site) or state not in STATUS_STATES:
        raise WireError("bad_status", "site or state missing or invalid")
    if ts is not None and type(ts) is not int:
        raise WireError("bad_status", "time_ns is not an integer")
    if not isinstance(reason, str) or not isinstance(version, str):
        raise WireError("bad_status", "reason and version must be strings")
    return Status(site=site, state=state, time_ns=ts, reason=reason[:200], version=version[:64])


@dataclass
class SeqTracker:
    """Per-site sequence bookkeeping: proves nothing was lost and drops replays.

    ``observe`` returns False for a duplicate (a seq already seen), so the caller can
    skip re-writing it. Gaps are counted; a seq arriving later fills its gap.
    """

    epoch: str = ""
    highest: int = -1
    missing: set[int] = field(default_factory=set)
    duplicates: int = 0
    #: Missing seqs older than this many below ``highest`` are given up on (counted lost).
    window: int = 100_000

    def observe(self, seq: int, epoch: str = "") -> bool:
        """Record ``seq`` of spool ``epoch``; False if it was seen before."""
        if epoch != self.epoch:
            # A new spool numbers from 0 again; what the old one left missing stays lost.
            self.epoch, self.highest = epoch, -1
            self.missing.clear()
        if seq > self.highest:
            if self.highest >= 0 and seq > self.highest + 1:
                self.missing.update(range(max(self.highest + 1, seq - self.window), seq))
            self.highest = seq
            return True
        if seq in self.missing:
            self.missing.discard(seq)
            return True
        self.duplicates += 1
        return False

    @property
    def gaps(self) -> int:
        """How many seqs below the highest have not arrived (yet)."""
        return len(self.missing)


# The v2 machinery lives in its own module, which imports from this one; imported last,
# so either module may be imported first.
from schoolnet import wire_groups as _groups  # noqa: E402
