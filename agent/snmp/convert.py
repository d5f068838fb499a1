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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from agent.snmp.client import Oid, Value, format_oid
from agent.snmp.profile import Aggregate, Column, IndexPart, Table
from agent.snmp.rates import Counter, RowSample
from schoolnet.wire import DEFAULT_LIMITS, FieldValue, Limits

INT64_MAX: Final = 2**63 - 1


def _text(raw: bytes) -> str:
    # DisplayStrings are ASCII by the MIB, UTF-8 in practice; NUL padding is common.
    return raw.decode("utf-8", errors="replace").rstrip("\x00")


def _hex(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _printable(raw: bytes) -> bool:
    text = raw.rstrip(b"\x00")
    return bool(text) and all(32 <= b < 127 for b in text)


def as_string(type_: str, value: Value) -> str | None:
    """The text of a value for a string-typed field or any tag.

    ``mac``: six octets as ``aa:bb:cc:dd:ee:ff`` (other lengths as text, for agents that
    send the MAC as a string). ``octets`` (LLDP chassis and port ids, whose format
    depends on a subtype column): printable text as text, six octets as a MAC, anything
    else as hex.
    """
    if isinstance(value, bytes):
        if type_ == "hexstring":
            return _hex(value)
        if type_ == "mac":
            return _hex(value) if len(value) == 6 else _text(value)
        if type_ == "octets":
            if _printable(value):
                return _text(value)
            return _hex(value)
        if type_ == "ipaddress" and len(value) in (4, 16):
            return str(ipaddress.ip_address(value))
        return _text(value)
    if isinstance(value, tuple):
        return format_oid(value)
    if isinstance(value, int):
        return str(value)
    return None


def _named(col: Column, value: int) -> str:
    """An enum's name (its number where the profile names none); for ``bits``, the
    names of the set bits (bit 0 = the most significant bit of the first octet)."""
    assert col.values is not None
    return col.values.get(value, str(value))


def _bits(col: Column, raw: bytes) -> str:
    assert col.values is not None
    names = [col.values.get(n, str(n)) for n in range(len(raw) * 8)
             if raw[n // 8] & (0x80 >> (n % 8))]
    return ",".join(names) or "none"


def convert(col: Column, value: Value, limits: Limits = DEFAULT_LIMITS) -> FieldValue | None:
    """The field value of ``col`` for ``value``, typed as the column says; None if unusable."""
    type_ = col.type
    if type_ == "bits":
        return _bits(col, value)[: limits.max_string_field_len] if isinstance(
            value, bytes) else None
    if col.values is not None:
        return _named(col, value) if isinstance(value, int) and not isinstance(
            value, bool) else None
    if type_ in ("string", "hexstring", "oid", "ipaddress", "mac", "octets"):
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
    if col.values is not None:
        text = convert(col, value, limits)
        return text[: limits.max_tag_value_len] if isinstance(text, str) and text else None
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
        elif part.type in ("string", "address"):
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
        elif part.type == "address":
            # InetAddress / LLDP management address: 4 or 16 octets are IP addresses.
            octets = sub[1:]
            if any(c > 255 for c in octets):
                return None
            raw = bytes(octets)
            text = str(ipaddress.ip_address(raw)) if len(raw) in (4, 16) else (
                _text(raw) if _printable(raw) else _hex(raw))
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
    table_cols = [c for c in table.primary if c.target in with_fallback]
    for col in table_cols:
        target = col.target
        if target is None:
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


def _match(text: str | None, patterns: Sequence[re.Pattern[str]]) -> bool:
    return text is not None and any(p.fullmatch(text) for p in patterns)


def keep_row(table: Table, tags: Mapping[str, str], fields: Mapping[str, FieldValue]) -> bool:
    """Whether a row passes the table's include/exclude filters."""
    for flt in table.filters:
        value = tags.get(flt.target)
        if value is None and flt.target in fields:
            value = str(fields[flt.target])
        if flt.include and not _match(value, flt.include):
            return False
        if _match(value, flt.exclude):
            return False
    return True


def _rescale(table: Table, fields: dict[str, FieldValue]) -> None:
    """multiply_by and si_prefix/precision: scale a field by other fields of its row."""
    for col in table.primary + table.fallbacks:
        if not (col.multiply_by or col.si_prefix or col.precision) or not col.field:
            continue
        value = fields.get(col.field)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        factor = 1.0
        if col.multiply_by:
            other = fields.get(col.multiply_by)
            if not isinstance(other, int | float):
                del fields[col.field]  # unscaled it would be a wrong number, not a rough one
                continue
            factor *= other
        exponent = 0
        prefix = fields.get(col.si_prefix) if col.si_prefix else None
        digits = fields.get(col.precision) if col.precision else None
        if isinstance(prefix, int):
            exponent += 3 * (prefix - 9)
        if isinstance(digits, int):
            exponent -= digits
        fields[col.field] = float(value) * factor * 10.0**exponent


def build_rows(table: Table, data: Mapping[Oid, Mapping[Oid, Value]], time_ns: int,
               limits: Limits = DEFAULT_LIMITS) -> list[Row]:
    """The rows of ``table`` from walked columns (``data``: column OID → suffix → value).

    A tag comes from the first of: the index, the columns in profile order, the
    lookups. A field comes from the first column feeding it that has a usable value.
    Rows without any field, and rows the table's filters refuse, are left out (a point
    needs at least one field). Columns with ``keep: false`` are dropped last.
    """
    speed = table.link_speed
    empty: dict[Oid, Value] = {}
    # Each column's rows looked up once, not once per row.
    columns = [(col, data.get(col.oid, empty)) for col in table.columns]
    lookups = [(lk, data.get(lk.column.oid, empty)) for lk in table.lookups]
    rescale = any(c.multiply_by or c.si_prefix or c.precision for c in table.columns)
    hidden = [c.field for c in table.columns if not c.keep and c.field]
    rows: list[Row] = []
    for suffix in row_keys(table, data):
        index = table.index
        parts = parse_index(suffix, index)
        if parts is None and table.alt_index is not None:
            index = table.alt_index
            parts = parse_index(suffix, index)
        if parts is None:
            continue
        tags: dict[str, str] = {}
        fields: dict[str, FieldValue] = {}
        for part in index:
            if part.tag or part.field:
                index_text = parts[part.name][0].strip()
                if part.tag and index_text:
                    tags[part.tag] = index_text[: limits.max_tag_value_len]
                if part.field and index_text:
                    fields[part.field] = index_text[: limits.max_string_field_len]
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
            keys = [parts.get(name) for name in lookup.index]
            value = values.get(tuple(x for k in keys if k for x in k[1])) if all(keys) else None
            text = tag_value(lookup.column, value, limits) if value is not None else None
            if text and lookup.column.tag:
                tags[lookup.column.tag] = text
        if rescale:
            _rescale(table, fields)
        if table.filters and not keep_row(table, tags, fields):
            continue
        for name in hidden:
            if not table.aggregate:  # aggregation folds helper fields; it drops them itself
                fields.pop(name, None)
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


_FOLD: Final[dict[str, Callable[[list[int | float]], int | float]]] = {
    "mean": lambda v: sum(v) / len(v), "sum": sum, "max": max, "min": min}


def aggregate_rows(aggregates: Sequence[Aggregate], rows: Sequence[Row]) -> dict[str, FieldValue]:
    """The fields of the one point an aggregated table becomes (empty: no point).

    ``count`` counts the rows that have the source field; the others fold its numeric
    values (a field no row has is left out, so an empty table writes nothing).
    """
    out: dict[str, FieldValue] = {}
    for agg in aggregates:
        if agg.fn == "ratio":
            num, den = out.get(agg.source), out.get(agg.other or "")
            if isinstance(num, int | float) and isinstance(den, int | float) and den:
                out[agg.field] = float(num) / float(den) * agg.scale
            continue
        values = [v for r in rows if isinstance(v := r.fields.get(agg.source), int | float)
                  and not isinstance(v, bool)]
        if agg.fn == "count":
            out[agg.field] = len(values)
        elif values:
            folded = _FOLD[agg.fn](values)
            # Sums, minima and maxima of integer columns stay integers (client counts);
            # a field's type must not depend on the values of one poll, and it does not:
            # a column's values are all ints or all floats.
            if agg.fn == "mean" or agg.scale != 1.0 or isinstance(folded, float):
                out[agg.field] = float(folded) * agg.scale
            else:
                out[agg.field] = folded
    return out
