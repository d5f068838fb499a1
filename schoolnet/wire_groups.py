"""The v2 payload form of :mod:`schoolnet.wire`: columnar groups of points.

Encoding (:func:`group_points`): consecutive points with the same measurement and
timestamp become one group; tags every point of the group has with the same value are
shared, the other tag keys and all field keys become columns, and each point one row of
values (``None`` where it has no such tag or field). Decoding
(:func:`check_group_head`, :func:`check_rows`): each group is checked once, each row by
the types of its values, with the same reasons as a v1 point; a whole group whose rows
share one layout is checked and turned into points in one pass of C-level map chains.
The fast paths accept only what the reference checks (:func:`check_row`) accept and
hand everything else to them, so the reasons are the same by construction
(tests/unit/test_wire_groups.py checks it on random rows). The uniform-group check runs
in C where the optional extension ``schoolnet._speedups`` is built (the same checks,
tests/unit/test_speedups.py); :func:`uniform_types_py` is its reference and fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Final

try:  # the optional C extension (schoolnet/_speedups.c); same results, less CPU
    from schoolnet._speedups import uniform_types as _uniform_types_c
except ImportError:  # pragma: no cover - built wherever a C compiler is present
    _uniform_types_c = None  # type: ignore[assignment]

from schoolnet.wire import (
    _NO_TAGS,
    DEFAULT_LIMITS,
    INT64_MAX,
    INT64_MIN,
    MEASUREMENT_TAGS,
    TOPIC_TAGS,
    FieldValue,
    Limits,
    Point,
    PointGroup,
    WireError,
    _check_field_value,
    _check_tags,
    _field_keys_ok,
    _good_field_keys,
)

_MISSING: Final = object()


def _group_json(run: list[Point]) -> dict[str, Any]:
    """One v2 group: ``run`` shares measurement and timestamp (see the module doc)."""
    first = run[0].tags
    shared = {k: v for k, v in first.items()
              if all(q.tags.get(k, _MISSING) == v for q in run[1:])}
    tkeys: dict[str, None] = {}
    fkeys: dict[str, None] = {}
    for q in run:
        tkeys.update(dict.fromkeys(q.tags))
        fkeys.update(dict.fromkeys(q.fields))
        if None in q.tags.values() or None in q.fields.values():
            # null means "absent" in a row: refuse it here, as v1 decoding would.
            raise WireError("bad_type", f"a {q.measurement} point has a null value")
    tcols = sorted(k for k in tkeys if k not in shared)
    fcols = list(fkeys)
    return {
        "measurement": run[0].measurement,
        "time_ns": run[0].time_ns,
        "tags": shared,
        "tag_columns": tcols,
        "field_columns": fcols,
        "rows": [[q.tags.get(k) for k in tcols] + [q.fields.get(k) for k in fcols]
                 for q in run],
    }


def group_points(points: tuple[Point, ...] | list[Point],
                 limits: Limits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """The v2 groups of ``points``: runs of consecutive points with the same measurement
    and timestamp, cut where a group's columns would break the per-point limits.

    Points keep their order. Tag columns are sorted (the collector's line encoder can
    then format a row's values in the order they come).
    """
    groups: list[dict[str, Any]] = []
    i, n = 0, len(points)
    while i < n:
        p = points[i]
        tkeys, fkeys = set(p.tags), set(p.fields)
        j = i + 1
        while j < n:
            q = points[j]
            if q.measurement != p.measurement or q.time_ns != p.time_ns:
                break
            tkeys2, fkeys2 = tkeys | q.tags.keys(), fkeys | q.fields.keys()
            if len(tkeys2) > limits.max_tags or len(fkeys2) > limits.max_fields:
                break
            tkeys, fkeys = tkeys2, fkeys2
            j += 1
        groups.append(_group_json(list(points[i:j])))
        i = j
    return groups


_GROUP_KEYS: Final = frozenset(
    {"measurement", "time_ns", "tags", "tag_columns", "field_columns", "rows"})


@dataclass(frozen=True, slots=True)
class _GroupHead:
    """The checked parts of a v2 group other than its rows."""

    measurement: str
    time_ns: int
    tags: dict[str, str]
    tag_columns: tuple[str, ...]
    field_columns: tuple[str, ...]
    rows: list[Any]
    where: str


def check_group_head(obj: Any, i: int, limits: Limits, lo_ns: int, hi_ns: int) -> _GroupHead:
    where = f"groups[{i}]"
    if not isinstance(obj, dict):
        raise WireError("bad_type", f"{where} is not an object")
    if not obj.keys() <= _GROUP_KEYS:
        raise WireError("bad_point", f"{where} has unknown keys")
    m = obj.get("measurement")
    ts = obj.get("time_ns")
    tags, tcols = obj.get("tags", _NO_TAGS), obj.get("tag_columns", [])
    fcols, rows = obj.get("field_columns"), obj.get("rows")
    if not isinstance(m, str):
        raise WireError("bad_type", f"{where}.measurement is not a string")
    allowed = MEASUREMENT_TAGS.get(m)
    if allowed is None:
        raise WireError("unknown_measurement", f"{where}: {m[:64]!r}")
    if not (isinstance(tags, dict) and isinstance(tcols, list) and isinstance(fcols, list)
            and isinstance(rows, list)):
        raise WireError("bad_type", f"{where}: tags must be an object; tag_columns, "
                                    "field_columns and rows lists")
    if type(ts) is not int:
        raise WireError("bad_type", f"{where}.time_ns is not an integer")
    if not lo_ns <= ts <= hi_ns:
        raise WireError("bad_time", f"{where}.time_ns is out of the accepted window")
    if len(tags) + len(tcols) > limits.max_tags:
        raise WireError("too_many_tags", f"{where} has {len(tags) + len(tcols)} tag keys")
    _check_tags(tags, allowed, m, where, limits)
    for k in tcols:
        if not isinstance(k, str):
            raise WireError("bad_type", f"{where}.tag_columns holds a non-string")
        if k not in allowed:
            reason = "topic_tag" if k in TOPIC_TAGS else "unknown_tag"
            raise WireError(reason, f"{where}: tag {k[:64]!r} not allowed on {m}")
    if len(set(tcols)) != len(tcols) or not tags.keys().isdisjoint(tcols):
        raise WireError("bad_point", f"{where}: a tag column repeats a tag key")
    if not fcols:
        raise WireError("bad_point", f"{where} has no field columns")
    if len(fcols) > limits.max_fields:
        raise WireError("too_many_fields", f"{where} has {len(fcols)} field columns")
    for k in fcols:
        if not isinstance(k, str):
            raise WireError("bad_type", f"{where}.field_columns holds a non-string")
        if k not in _good_field_keys and not _field_keys_ok((k,)):
            raise WireError("bad_key", f"{where}: field key {k[:64]!r}")
    if len(set(fcols)) != len(fcols):
        raise WireError("bad_point", f"{where}: a field column repeats")
    if not rows:
        raise WireError("bad_point", f"{where} has no rows")
    return _GroupHead(m, ts, tags, tuple(tcols), tuple(fcols), rows, where)


def check_row(row: Any, j: int, g: _GroupHead, limits: Limits) -> Point:
    """One row of a group, every check in order: the reference for the reasons."""
    where = f"{g.where}.rows[{j}]"
    if not isinstance(row, list):
        raise WireError("bad_type", f"{where} is not a list")
    nt, nf = len(g.tag_columns), len(g.field_columns)
    if len(row) != nt + nf:
        raise WireError("bad_point", f"{where} has {len(row)} values for {nt + nf} columns")
    tags = dict(g.tags)
    for k, v in zip(g.tag_columns, row, strict=False):
        if v is None:
            continue
        if not isinstance(v, str):
            raise WireError("bad_type", f"{where}.tags.{k} is not a string")
        if not v or len(v) > limits.max_tag_value_len:
            raise WireError("bad_tag_value", f"{where}.tags.{k} is empty or too long")
        tags[k] = v
    fields: dict[str, FieldValue] = {}
    for k, v in zip(g.field_columns, row[nt:], strict=True):
        if v is not None:
            _check_field_value(k, v, where, limits)
            fields[k] = v
    if not fields:
        raise WireError("bad_point", f"{where} has no fields")
    return Point(g.measurement, tags, fields, g.time_ns)


@dataclass(frozen=True, slots=True)
class _RowLayout:
    """What the fast row check needs to know about one sequence of value types."""

    full: bool  # no None: tags are row[:nt], fields row[nt:]
    tag_idx: tuple[int, ...]  # present tag columns (str values)
    field_idx: tuple[int, ...]  # present field values, as indices into the row
    tag_pick: Callable[[list[Any]], tuple[Any, ...]] | None
    field_pick: Callable[[list[Any]], tuple[Any, ...]] | None
    field_strs: Callable[[list[Any]], tuple[Any, ...]] | None
    floats: Callable[[list[Any]], tuple[Any, ...]] | None
    ints: Callable[[list[Any]], tuple[Any, ...]] | None


#: Stands for "no valid row has these types" in a dict of layouts.
_NO_LAYOUT: Final = _RowLayout(False, (), (), None, None, None, None, None)
_TAG_TYPES: Final = frozenset({str, type(None)})
_FIELD_TYPES: Final = frozenset({int, float, bool, str, type(None)})
#: Row layouts by (tag column count, value types); bounded like the key caches.
_row_layouts: dict[tuple[int, tuple[type, ...]], _RowLayout | None] = {}


def _pick(indices: tuple[int, ...] | list[int]) -> Callable[[list[Any]], tuple[Any, ...]] | None:
    """A C-speed picker returning a tuple (itemgetter returns a scalar for one index)."""
    if not indices:
        return None
    if len(indices) == 1:
        i = indices[0]
        return lambda r: (r[i],)
    return itemgetter(*indices)


def _row_layout(nt: int, types: tuple[type, ...]) -> _RowLayout | None:
    """The layout of rows with these value types; None if such a row is never valid."""
    key = (nt, types)
    if key in _row_layouts:
        return _row_layouts[key]
    lay: _RowLayout | None = None
    none = type(None)
    if set(types[:nt]) <= _TAG_TYPES and set(types[nt:]) <= _FIELD_TYPES:
        tag_idx = tuple(i for i in range(nt) if types[i] is str)
        field_idx = tuple(i for i in range(nt, len(types)) if types[i] is not none)
        if field_idx:
            lay = _RowLayout(
                full=none not in types, tag_idx=tag_idx, field_idx=field_idx,
                tag_pick=_pick(tag_idx), field_pick=_pick(field_idx),
                field_strs=_pick([i for i in field_idx if types[i] is str]),
                floats=_pick([i for i in field_idx if types[i] is float]),
                ints=_pick([i for i in field_idx if types[i] is int]))
    if len(_row_layouts) >= 4096:
        _row_layouts.clear()
    _row_layouts[key] = lay
    return lay


#: Builds a Point without the frozen dataclass's four object.__setattr__ calls (half the
#: cost; :func:`check_rows` makes one per row). Same object as ``Point(...)`` makes.
_new_point: Final = object.__new__
_set_measurement: Final = Point.__dict__["measurement"].__set__
_set_tags: Final = Point.__dict__["tags"].__set__
_set_fields: Final = Point.__dict__["fields"].__set__
_set_time: Final = Point.__dict__["time_ns"].__set__


def _make_point(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue],
                time_ns: int) -> Point:
    """``Point(measurement, tags, fields, time_ns)``, twice as fast (see _new_point)."""
    p = _new_point(Point)
    _set_measurement(p, measurement)
    _set_tags(p, tags)
    _set_fields(p, fields)
    _set_time(p, time_ns)
    return p


def uniform_types_py(rows: list[Any], nt: int, nf: int, max_tag_len: int, max_str_len: int,
                     check_floats: bool, check_ints: bool) -> tuple[type, ...] | None:
    """The value types of ``rows`` when one layout fits all of them and every check
    passes, else None: the reference of the C ``uniform_types``.

    Every row a list of ``nt + nf`` values of the same types; the first ``nt`` (tag
    columns) non-empty ``str`` of at most ``max_tag_len`` characters; the others bool,
    int, float or str (at most ``max_str_len`` characters); no null; floats finite when
    ``check_floats``, ints within 64 bits when ``check_ints``. Whole-group checks in C
    map chains, no Python loop per row.
    """
    if not rows or set(map(type, rows)) != {list}:
        return None
    all_types = list(map(tuple, map(map, repeat(type), rows)))
    types = all_types[0]
    if all_types.count(types) != len(all_types) or len(types) != nt + nf:
        return None
    lay = _row_layout(nt, types)
    if lay is None or not lay.full:
        return None
    if lay.tag_pick is not None:
        lens = list(map(len, chain.from_iterable(map(lay.tag_pick, rows))))
        if min(lens) == 0 or max(lens) > max_tag_len:
            return None
    if lay.field_strs is not None and max(map(
            len, chain.from_iterable(map(lay.field_strs, rows)))) > max_str_len:
        return None
    if check_floats and lay.floats is not None and not all(map(
            math.isfinite, chain.from_iterable(map(lay.floats, rows)))):
        return None
    if check_ints and lay.ints is not None:
        vals = list(chain.from_iterable(map(lay.ints, rows)))
        if max(vals) > INT64_MAX or min(vals) < INT64_MIN:
            return None
    return types


#: The uniform-group check: C where built, else its Python reference.
uniform_types: Final = _uniform_types_c if _uniform_types_c is not None else uniform_types_py


def check_uniform_rows(g: _GroupHead, limits: Limits, floats_ok: bool, ints_ok: bool,
                        ) -> PointGroup | None:
    """:func:`check_rows` for a group whose rows all have the same value types and no
    null: every check is made for the whole group at once (:data:`uniform_types`), and
    the points are left to :func:`make_points`. None when the group is not like that or
    any check fails: then :func:`check_rows` looks at each row.
    """
    rows = g.rows
    types = uniform_types(rows, len(g.tag_columns), len(g.field_columns),
                          limits.max_tag_value_len, limits.max_string_field_len,
                          not floats_ok, not ints_ok)
    if types is None:
        return None
    # The points are built on first use, by make_points.
    return PointGroup(g.measurement, g.time_ns, g.tags, g.tag_columns, g.field_columns,
                      tuple(rows), (types,) * len(rows))


def make_points(g: PointGroup) -> tuple[Point, ...]:
    """The points of a group :func:`check_uniform_rows` accepted (one layout, no null):
    built for the whole group in C-level map chains. Other groups get theirs from
    :func:`check_rows` right away."""
    rows, nt = g.rows, len(g.tag_columns)
    keys = (*g.tags, *g.tag_columns)
    tags = map(dict, map(zip, repeat(keys), map(chain, repeat(tuple(g.tags.values())), rows)))
    fields = map(dict, map(zip, repeat(g.field_columns), map(itemgetter(slice(nt, None)), rows)))
    return tuple(map(_make_point, repeat(g.measurement), tags, fields, repeat(g.time_ns)))


def check_rows(g: _GroupHead, limits: Limits, floats_ok: bool, ints_ok: bool,
                ) -> PointGroup:
    """Every row of a checked group head: the fast path of :func:`check_row`.

    Accepts only rows :func:`check_row` accepts (the value types of a row pick a
    precomputed layout; lengths, emptiness and ranges are checked per row in C); any
    doubt goes to :func:`check_row`, which finds the exact reason. ``floats_ok`` and
    ``ints_ok`` say the parser already rules out non-finite floats and integers beyond
    64 bits.
    """
    m, ts, shared = g.measurement, g.time_ns, g.tags
    tcols, fcols = g.tag_columns, g.field_columns
    nt, ncols = len(tcols), len(tcols) + len(fcols)
    max_tag, max_str = limits.max_tag_value_len, limits.max_string_field_len
    uniform = check_uniform_rows(g, limits, floats_ok, ints_ok)
    if uniform is not None:
        return uniform
    layouts: dict[tuple[type, ...], _RowLayout] = {}
    names: dict[_RowLayout, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    points: list[Point] = []
    all_types: list[tuple[type, ...]] = []
    new, set_m, set_tags, set_fields, set_time = (
        _new_point, _set_measurement, _set_tags, _set_fields, _set_time)
    for j, row in enumerate(g.rows):
        if type(row) is not list or len(row) != ncols:
            all_types.append(tuple(map(type, row)) if isinstance(row, list) else ())
            points.append(check_row(row, j, g, limits))  # raises
            continue
        types = tuple(map(type, row))
        all_types.append(types)
        lay = layouts.get(types)
        if lay is None:
            lay = layouts[types] = _row_layout(nt, types) or _NO_LAYOUT
        if lay is _NO_LAYOUT:
            points.append(check_row(row, j, g, limits))  # raises
            continue
        ok = True
        if lay.tag_pick is not None:
            lens = tuple(map(len, lay.tag_pick(row)))
            ok = min(lens) > 0 and max(lens) <= max_tag
        if ok and lay.field_strs is not None:
            ok = max(map(len, lay.field_strs(row))) <= max_str
        if ok and not floats_ok and lay.floats is not None:
            ok = math.isfinite(sum(lay.floats(row)))  # an overflow: check_row decides
        if ok and not ints_ok and lay.ints is not None:
            vals = lay.ints(row)
            ok = max(vals) <= INT64_MAX and min(vals) >= INT64_MIN
        if not ok:
            points.append(check_row(row, j, g, limits))
            continue
        tags = shared.copy()
        if lay.full:
            tags.update(zip(tcols, row, strict=False))  # the first nt values
            fields = dict(zip(fcols, row[nt:], strict=True))
        else:
            got = names.get(lay)
            if got is None:
                got = names[lay] = (tuple(tcols[i] for i in lay.tag_idx),
                                    tuple(fcols[i - nt] for i in lay.field_idx))
            if lay.tag_pick is not None:
                tags.update(zip(got[0], lay.tag_pick(row), strict=True))
            assert lay.field_pick is not None
            fields = dict(zip(got[1], lay.field_pick(row), strict=True))
        p = new(Point)
        set_m(p, m)
        set_tags(p, tags)
        set_fields(p, fields)
        set_time(p, ts)
        points.append(p)
    return PointGroup(m, ts, shared, tcols, fcols, tuple(g.rows), tuple(all_types),
                      tuple(points))  # built here: rows may differ in layout
