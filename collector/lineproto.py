"""Points to InfluxDB line protocol strings: pure, table-tested, and cheap.

The collector builds line protocol *strings* itself instead of influxdb-client
``Point`` objects (measured 8x cheaper). One line per point::

    <measurement>[,<tag>=<value>...] <field>=<value>[,<field>=<value>...] <time_ns>

Escaping follows the InfluxDB line protocol reference (1.8, 2.x, 3.x; VictoriaMetrics
parses the same):

* measurement: ``,`` ``space`` and ``\\`` are escaped with a backslash;
* tag keys, tag values, field keys: ``,`` ``=`` ``space`` and ``\\`` likewise;
* string field values are double-quoted, with ``"`` and ``\\`` escaped;
* newline, carriage return and tab cannot be represented anywhere in a line (the
  protocol has no escape for them), so they are written as the two characters
  ``\\n``, ``\\r``, ``\\t``: a hostile tag value can never break a line in two.

Integers get the ``i`` suffix and must fit in a signed 64-bit integer; booleans are
``true``/``false``; floats use Python's shortest round-trip ``repr``. Tags are sorted by
key (the order InfluxDB stores them in, so it need not sort them itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from math import isfinite
from operator import itemgetter
from typing import Any, Final

from schoolnet.wire import FieldValue, Point, PointGroup

try:  # the optional C extension (schoolnet/_speedups.c); same lines, less CPU
    from schoolnet._speedups import format_rows as _format_rows_c
except ImportError:  # pragma: no cover - built wherever a C compiler is present
    _format_rows_c = None  # type: ignore[assignment]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_CONTROL: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPE_MEASUREMENT: Final = str.maketrans({",": "\\,", " ": "\\ ", "\\": "\\\\", **_CONTROL})
_ESCAPE_KEY: Final = str.maketrans(
    {",": "\\,", "=": "\\=", " ": "\\ ", "\\": "\\\\", **_CONTROL}
)
_ESCAPE_STRING: Final = str.maketrans({'"': '\\"', "\\": "\\\\", **_CONTROL})
#: Fast checks whether escaping is needed at all (almost never, for real devices).
_TAG_SPECIAL: Final = re.compile(r"[,= \\\n\r\t]").search
_STRING_SPECIAL: Final = re.compile(r'["\\\n\r\t]').search

#: Escaped forms of recently seen keys and tag values. Device names, interface names and
#: field keys repeat in every message, so a dict lookup replaces most ``translate``
#: calls. Bounded: a flood of unique values (a cardinality bomb) only clears the cache.
_CACHE_MAX: Final = 65536
_escaped: dict[str, str] = {}


class LineProtocolError(ValueError):
    """A value that line protocol cannot carry (NaN, an integer beyond 64 bits, ...)."""


def escape_measurement(name: str) -> str:
    """Escape a measurement name."""
    return name.translate(_ESCAPE_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (they share one rule)."""
    got = _escaped.get(text)
    if got is None:
        got = text.translate(_ESCAPE_KEY)
        if len(_escaped) >= _CACHE_MAX:
            _escaped.clear()
        _escaped[text] = got
    return got


def format_field_value(value: FieldValue) -> str:
    """One field value in line protocol syntax; raises :class:`LineProtocolError`."""
    # bool before int: bool is a subclass of int, and must not become 1i.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not isfinite(value):
            raise LineProtocolError(f"float {value!r} cannot be written")
        return repr(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise LineProtocolError("integer does not fit in 64 bits")
        return f"{value}i"
    if isinstance(value, str):
        return f'"{value.translate(_ESCAPE_STRING)}"'
    raise LineProtocolError(f"unsupported field type {type(value).__name__}")


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    time_ns: int | None = None,
) -> str:
    """One line of line protocol; raises :class:`LineProtocolError`.

    Empty tag values are left out (line protocol cannot carry them); a point needs at
    least one field.
    """
    if not fields:
        raise LineProtocolError("a point needs at least one field")
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        value = tags[key]
        if value:
            parts.append(f"{escape_key(key)}={escape_key(value)}")
    head = ",".join(parts)
    body = ",".join(f"{escape_key(k)}={format_field_value(v)}" for k, v in fields.items())
    return f"{head} {body}" if time_ns is None else f"{head} {body} {time_ns}"


@dataclass(frozen=True, slots=True)
class _Head:
    """How to build the measurement+tags part for one tag-key layout."""

    fmt: str  # "interface,device=%s,ifname=%s,site=%s": keys escaped, values %s
    pick: Callable[[tuple[str, ...]], tuple[str, ...]]  # values in sorted-key order


@dataclass(frozen=True, slots=True)
class _Body:
    """How to build the field part for one field-key-and-type layout."""

    fmt: str  # "in_octets=%di,in_bps=%r,alias=\"%s\"": keys escaped
    ints: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None
    floats: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None
    bools: tuple[int, ...]
    strs: tuple[int, ...]


def _getter(indices: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
    """A C-speed picker returning a tuple (itemgetter returns a scalar for one index)."""
    if not indices:
        return None
    if len(indices) == 1:
        i = indices[0]
        return lambda t: (t[i],)
    return itemgetter(*indices)


class LineEncoder:
    """Encodes wire points with extra tags (tenant, site, role, vendor) added.

    Same output as :func:`encode_line`, several times cheaper: points of one source
    share a few layouts (the same tag keys, the same field keys and types), so the
    format string of each layout is built once and every point is one ``%``
    formatting. Escaping is only done when a (rare) special character is present.
    Extra tags win over tags of the same key in the point: they come from the topic and
    the inventory, which the collector trusts more than a payload.
    """

    def __init__(self, max_layouts: int = 4096) -> None:
        self._heads: dict[tuple[str, tuple[str, ...], tuple[str, ...]], _Head] = {}
        self._bodies: dict[tuple[tuple[str, ...], tuple[type, ...]], _Body] = {}
        # A hostile site could invent layouts (field keys) without end; bound the caches.
        self._max_layouts = max_layouts

    def encode(self, point: Point, extra_tags: Mapping[str, str]) -> str:
        """One line for ``point`` with ``extra_tags`` merged in; may raise LineProtocolError."""
        return self.encode_all((point,), extra_tags)[0]

    def encode_all(self, points: Iterable[Point], extra_tags: Mapping[str, str], *,
                   finite: bool = False) -> list[str]:
        """Lines for ``points``, all with the same ``extra_tags``; may raise LineProtocolError.

        ``finite=True`` skips the NaN/infinity check, for points that passed
        :func:`schoolnet.wire.decode_batch` (which refuses them).
        """
        ekeys = tuple(extra_tags)
        evals = tuple(extra_tags.values())
        heads, bodies = self._heads, self._bodies
        out = []
        for p in points:
            tags = p.tags
            head = heads.get((p.measurement, tuple(tags), ekeys))
            if head is None:
                head = self._make_head(p.measurement, tuple(tags), ekeys)
            tvals = head.pick((*tags.values(), *evals))
            if _TAG_SPECIAL("\x00".join(tvals)) or "" in tvals:
                line_head = _slow_head(p.measurement, {**tags, **extra_tags})
            else:
                line_head = head.fmt % tvals
            fields = p.fields
            fvals = tuple(fields.values())
            body = bodies.get((tuple(fields), tuple(map(type, fvals))))
            if body is None:
                body = self._make_body(tuple(fields), tuple(map(type, fvals)))
            if body.ints is not None:
                ints = body.ints(fvals)
                if max(ints) > INT64_MAX or min(ints) < INT64_MIN:
                    raise LineProtocolError("integer does not fit in 64 bits")
            if not finite and body.floats is not None and not isfinite(sum(body.floats(fvals))):
                # A sum can overflow to inf from finite values: check one by one.
                for v in body.floats(fvals):
                    format_field_value(v)
            if body.bools or body.strs:
                vals: list[Any] = list(fvals)
                for i in body.bools:
                    vals[i] = "true" if vals[i] else "false"
                for i in body.strs:
                    if _STRING_SPECIAL(vals[i]):
                        vals[i] = vals[i].translate(_ESCAPE_STRING)
                fvals = tuple(vals)
            out.append(f"{line_head} {body.fmt % fvals} {p.time_ns}")
        return out

    def _make_head(self, measurement: str, keys: tuple[str, ...],
                   ekeys: tuple[str, ...]) -> _Head:
        if not keys + ekeys:
            raise LineProtocolError("no tags")  # never: the topic always adds two
        # Position of each key in (*point tag values, *extra values); extra wins.
        pos = {k: i for i, k in enumerate(keys)}
        pos.update({k: len(keys) + i for i, k in enumerate(ekeys)})
        order = sorted(pos)
        fmt = ",".join([_pct(escape_measurement(measurement)),
                        *(f"{_pct(escape_key(k))}=%s" for k in order)])
        indices = [pos[k] for k in order]
        pick = _getter(indices)
        assert pick is not None
        head = _Head(fmt, pick)
        if len(self._heads) >= self._max_layouts:
            self._heads.clear()
        self._heads[(measurement, keys, ekeys)] = head
        return head

    def _make_body(self, keys: tuple[str, ...], types: tuple[type, ...]) -> _Body:
        if not keys:
            raise LineProtocolError("a point needs at least one field")
        parts, ints, floats, bools, strs = [], [], [], [], []
        for i, (k, t) in enumerate(zip(keys, types, strict=True)):
            key = _pct(escape_key(k))
            if t is bool:
                parts.append(f"{key}=%s")
                bools.append(i)
            elif t is int:
                parts.append(f"{key}=%di")
                ints.append(i)
            elif t is float:
                parts.append(f"{key}=%r")
                floats.append(i)
            elif t is str:
                parts.append(f'{key}="%s"')
                strs.append(i)
            else:
                raise LineProtocolError(f"unsupported field type {t.__name__}")
        body = _Body(",".join(parts), _getter(ints), _getter(floats), tuple(bools), tuple(strs))
        if len(self._bodies) >= self._max_layouts:
            self._bodies.clear()
        self._bodies[(keys, types)] = body
        return body


def _pct(text: str) -> str:
    """Protect ``%`` in a key that goes into a %-format string."""
    return text.replace("%", "%%")


def _slow_head(measurement: str, tags: Mapping[str, str]) -> str:
    """The measurement+tags part with full escaping (rare: special characters present)."""
    parts = [escape_measurement(measurement)]
    parts += [f"{escape_key(k)}={escape_key(tags[k])}" for k in sorted(tags) if tags[k]]
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class _RowFormat:
    """How to format the rows of one v2 group layout (keys and value types)."""

    fmt: str  # the whole line but the timestamp; values as % placeholders
    pick: Callable[[Any], tuple[Any, ...]] | None  # args from a row; None: tuple(row)
    ntags: int  # the first ntags args are tag values
    strs: tuple[int, ...]  # args that are string field values
    bools: tuple[int, ...]  # args that are booleans
    # The same line for the C formatter (schoolnet/_speedups.c format_rows): the text
    # around the values (UTF-8), the row index of each value and its kind (t, s, i, f, b).
    segments: tuple[bytes, ...]
    cols: tuple[int, ...]
    kinds: bytes


class GroupEncoder:
    """Lines straight from the rows of checked v2 groups (:class:`schoolnet.wire.PointGroup`).

    The same lines as :func:`encode_line` of each point with the extra tags merged in
    (extra tags win), without building them point by point: per group layout (shared
    tags, extra tags, columns, value types) one format string with every key escaped,
    so a row is one ``%`` formatting; a group whose rows share one layout and hold no
    special characters is formatted in one pass. Rows with characters to escape take
    :func:`encode_line`. Only for groups :func:`schoolnet.wire.decode_batch_groups`
    returned: values are not checked again (finite floats, 64-bit integers).
    """

    def __init__(self, max_layouts: int = 4096) -> None:
        self._formats: dict[tuple[Any, ...], _RowFormat] = {}
        self._max_layouts = max_layouts

    def encode(self, group: PointGroup, extra_tags: Mapping[str, str]) -> list[str]:
        """The lines of ``group``'s points with ``extra_tags``; may raise LineProtocolError."""
        rows, all_types = group.rows, group.types
        ts = f" {group.time_ns}"
        first = all_types[0]
        if all_types.count(first) == len(all_types):
            rf = self._format(group, extra_tags, first)
            if _format_rows_c is not None:
                got = _format_rows_c(rows, rf.cols, rf.kinds, rf.segments, ts.encode())
                if got is not None:
                    return got
            elif not rf.bools:
                args = list(map(tuple, rows)) if rf.pick is None else list(map(rf.pick, rows))
                if not self._special(rf, args):
                    return list(map((rf.fmt + ts).__mod__, args))
        out = []
        for j, (row, types) in enumerate(zip(rows, all_types, strict=True)):
            rf = self._format(group, extra_tags, types)
            vals = tuple(row) if rf.pick is None else rf.pick(row)
            if self._special(rf, [vals]):
                p = group.points[j]
                out.append(encode_line(p.measurement, {**p.tags, **extra_tags}, p.fields,
                                       p.time_ns))
                continue
            if rf.bools:
                as_list = list(vals)
                for i in rf.bools:
                    as_list[i] = "true" if as_list[i] else "false"
                vals = tuple(as_list)
            out.append(rf.fmt % vals + ts)
        return out

    @staticmethod
    def _special(rf: _RowFormat, args: list[tuple[Any, ...]]) -> bool:
        """Whether any tag value or string field of ``args`` needs escaping (or is empty)."""
        if rf.ntags:
            tags = list(chain.from_iterable(map(itemgetter(slice(0, rf.ntags)), args)))
            if "" in tags or _TAG_SPECIAL("\x00".join(tags)):
                return True
        return any(_STRING_SPECIAL("\x00".join(map(itemgetter(i), args))) for i in rf.strs)

    def _format(self, group: PointGroup, extra: Mapping[str, str],
                types: tuple[type, ...]) -> _RowFormat:
        key = (group.measurement, tuple(group.tags.items()), group.tag_columns,
               group.field_columns, tuple(extra.items()), types)
        rf = self._formats.get(key)
        if rf is None:
            rf = self._make_format(group, extra, types)
            if len(self._formats) >= self._max_layouts:
                self._formats.clear()
            self._formats[key] = rf
        return rf

    @staticmethod
    def _make_format(group: PointGroup, extra: Mapping[str, str],
                     types: tuple[type, ...]) -> _RowFormat:
        nt = len(group.tag_columns)
        fixed = {**group.tags, **extra}
        columns = {k: i for i, k in enumerate(group.tag_columns)
                   if types[i] is str and k not in extra}
        # The line as literal text and (value index, kind) slots, in order; the %-format
        # string and the C formatter's segments are both made from it.
        text: list[str] = [escape_measurement(group.measurement)]
        slots: list[tuple[int, str]] = []
        sep = ","
        for k in sorted({*fixed, *columns}):
            if k in columns:
                text[-1] += f"{sep}{escape_key(k)}="
                slots.append((columns[k], "t"))
                text.append("")
            elif fixed[k]:
                text[-1] += f"{sep}{escape_key(k)}={escape_key(fixed[k])}"
        ntags = len(slots)
        sep = " "
        for i, k in enumerate(group.field_columns, start=nt):
            t = types[i]
            if t is type(None):
                continue
            kind = _KINDS.get(t)
            if kind is None:
                raise LineProtocolError(f"unsupported field type {t.__name__}")
            quote = '"' if kind == "s" else ""
            text[-1] += f"{sep}{escape_key(k)}={quote}"
            slots.append((i, kind))
            text.append(f"{quote}i" if kind == "i" else quote)
            sep = ","
        if len(slots) == ntags:
            raise LineProtocolError("a point needs at least one field")
        indices = [i for i, _ in slots]
        fmt = "".join(_pct(seg) + _PLACEHOLDER[kind]
                      for seg, (_, kind) in zip(text, slots, strict=False)) + _pct(text[-1])
        pick = None if indices == list(range(len(types))) else _getter(indices)
        return _RowFormat(
            fmt, pick, ntags,
            strs=tuple(n for n, (_, kind) in enumerate(slots) if kind == "s"),
            bools=tuple(n for n, (_, kind) in enumerate(slots) if kind == "b"),
            segments=tuple(seg.encode() for seg in text), cols=tuple(indices),
            kinds="".join(kind for _, kind in slots).encode())


#: Value kinds of the C formatter by field type, and their %-format placeholders.
_KINDS: Final[Mapping[type, str]] = {bool: "b", int: "i", float: "f", str: "s"}
_PLACEHOLDER: Final[Mapping[str, str]] = {"t": "%s", "s": "%s", "i": "%d", "f": "%r",
                                         "b": "%s"}
