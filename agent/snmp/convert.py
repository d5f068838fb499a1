"""From varbinds to typed fields, tags and table rows, as a profile says.

Pure functions over plain values (see :data:`~agent.snmp.client.Value`): what an OID's
value becomes depends only on the column's declared type, so a field keeps one Python
type across polls and devices (InfluxDB refuses a field that changes type):
counters and enums are ``int`` (clamped below 2^63, InfluxDB's integer range), gauges
and timeticks ``float``, strings ``str`` truncated to the wire's limits. A value of the
wrong kind (a counter answered as a string by broken firmware) is dropped, not guessed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from agent.snmp.client import Oid, Value, format_oid
from agent.snmp.profile import Column, IndexPart, Table
from agent.snmp.rates import Counter, RowSample
from schoolnet.wire import DEFAULT_LIMITS, FieldValue, Limits

INT64_MAX: Final = 2**63 - 1


def _text(raw: bytes) -> str:
    # DisplayStrings are ASCII by the MIB, UTF-8 in practice; NUL padding is common.
    return raw.decode("utf-8", errors="replace").rstrip("\x00")


def as_string(type_: str, value: Value) -> str | None:
    """The text of a value for a string-typed field or any tag."""
    if isinstance(value, bytes):
        if type_ == "hexstring":
            return ":".join(f"{b:02x}" for b in value)
        if type_ == "ipaddress" and len(value) in (4, 16):
            return str(ipaddress.ip_address(value))
        return _text(value)
    if isinstance(value, tuple):
        return format_oid(value)
    if isinstance(value, int):
        return str(value)
    return None


def convert(col: Column, value: Value, limits: Limits = DEFAULT_LIMITS) -> FieldValue | None:
    """The field value of ``col`` for ``value``, typed as the column says; None if unusable."""
    type_ = col.type
    if type_ in ("string", "hexstring", "oid", "ipaddress"):
        text = as_string(type_, value)
        return None if text is None else text[: limits.max_string_field_len]
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if type_ == "timeticks":
        return value / 100.0 * (col.scale or 1.0)
    if type_ == "gauge":
        return float(value) * (col.scale or 1.0)
    if col.scale is not None:
        return float(value) * col.scale
    return min(value, INT64_MAX)


def tag_value(col: Column, value: Value, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The tag value of ``col`` for ``value``: non-empty text within the tag limit, or None."""
    text = as_string(col.type, value)
    if not text:
        return None
    return text.strip()[: limits.max_tag_value_len] or None


def parse_index(suffix: Oid, parts: Sequence[IndexPart]) -> dict[str, tuple[str, Oid]] | None:
    """Split a row's index suffix into its parts: name → (text, sub-identifiers).

    None when the suffix does not fit the declared parts (a malformed row).
    """
    out: dict[str, tuple[str, Oid]] = {}
    pos = 0
    for part in parts:
        rest = suffix[pos:]
        if part.type == "integer":
            take = 1
        elif part.type == "ipv4":
            take = 4
        elif part.type == "mac":
            take = 6
        elif part.type == "string":
            if not rest:
                return None
            take = 1 + rest[0]
        else:  # implied_string: everything that is left
            take = len(rest)
        sub = rest[:take]
        if len(sub) != take or take == 0:
            return None
        if part.type == "integer":
            text = str(sub[0])
        elif part.type == "ipv4":
            text = ".".join(map(str, sub))
        elif part.type == "mac":
            text = ":".join(f"{b:02x}" for b in sub)
        else:
            chars = sub[1:] if part.type == "string" else sub
            if any(c > 255 for c in chars):
                return None
            text = _text(bytes(chars))
        out[part.name] = (text, sub)
        pos += take
    return out if pos == len(suffix) else None


@dataclass
class Row:
    """One table row as it will become a point, plus what rate tracking needs."""

    key: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    sample: RowSample


def missing_targets(table: Table, data: Mapping[Oid, Mapping[Oid, Value]],
                    limits: Limits = DEFAULT_LIMITS) -> set[str]:
    """Field/tag targets that some row lacks after reading the primary columns.

    The poller reads the fallback columns of exactly these targets, so a device with a
    full ifXTable never costs a walk of the 32-bit counters.
    """
    with_fallback = {c.target for c in table.fallbacks}
    if not with_fallback:
        return set()
    keys = row_keys(table, data)
    missing: set[str] = set()
    for col in table.primary:
        target = col.target
        if target not in with_fallback or target is None:
            continue
        rows = data.get(col.oid, {})
        for key in keys:
            value = rows.get(key)
            usable = (tag_value(col, value, limits) if col.tag
                      else convert(col, value, limits)) if value is not None else None
            if usable is None:
                missing.add(target)
                break
    return missing


def row_keys(table: Table, data: Mapping[Oid, Mapping[Oid, Value]]) -> list[Oid]:
    """Every row index seen in any (non-lookup) column, in OID order."""
    keys: set[Oid] = set()
    for col in table.columns:
        keys.update(data.get(col.oid, {}))
    return sorted(keys)


def build_rows(table: Table, data: Mapping[Oid, Mapping[Oid, Value]], time_ns: int,
               limits: Limits = DEFAULT_LIMITS) -> list[Row]:
    """The rows of ``table`` from walked columns (``data``: column OID → suffix → value).

    A tag comes from the first of: the index, the columns in profile order, the
    lookups. A field comes from the first column feeding it that has a usable value.
    Rows without any field are left out (a point needs at least one field).
    """
    speed = table.link_speed
    empty: dict[Oid, Value] = {}
    # Each column's rows looked up once, not once per row.
    columns = [(col, data.get(col.oid, empty)) for col in table.columns]
    lookups = [(lk, data.get(lk.column.oid, empty)) for lk in table.lookups]
    rows: list[Row] = []
    for suffix in row_keys(table, data):
        parts = parse_index(suffix, table.index)
        if parts is None:
            continue
        tags: dict[str, str] = {}
        for part in table.index:
            if part.tag:
                index_text = parts[part.name][0].strip()[: limits.max_tag_value_len]
                if index_text:
                    tags[part.tag] = index_text
        fields: dict[str, FieldValue] = {}
        counters: dict[str, Counter] = {}
        discontinuity: int | None = None
        for col, values in columns:
            value = values.get(suffix)
            if value is None:
                continue
            if col.role == "discontinuity" and isinstance(value, int):
                discontinuity = value
            if col.tag and col.tag not in tags:
                col_text = tag_value(col, value, limits)
                if col_text:
                    tags[col.tag] = col_text
            elif col.field and col.field not in fields:
                converted = convert(col, value, limits)
                if converted is None:
                    continue
                fields[col.field] = converted
                if col.rate is not None and isinstance(value, int):
                    counters[col.field] = Counter(value, col.bits, col.mib_name)
        for lookup, values in lookups:
            if lookup.column.tag in tags:
                continue
            key = parts.get(lookup.index)
            value = values.get(key[1]) if key else None
            text = tag_value(lookup.column, value, limits) if value is not None else None
            if text and lookup.column.tag:
                tags[lookup.column.tag] = text
        if not fields:
            continue
        speed_bps = None
        if speed is not None:
            raw_speed = fields.get(speed.field)
            if isinstance(raw_speed, int | float) and raw_speed > 0:
                speed_bps = float(raw_speed) * speed.scale
        rows.append(Row(key=format_oid(suffix), tags=tags, fields=fields,
                        sample=RowSample(time_ns, counters, discontinuity, speed_bps)))
    return rows
