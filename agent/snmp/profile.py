"""SNMP device-class profiles: YAML data in ``agent/profiles/``, read strictly.

A profile (snmp_exporter's "module") says what to read from a device and how it becomes
points; a device lists the profiles it gets (``profile: [system, if_mib]``, the default).
Adding LLDP, ENTITY-SENSOR, PoE or a vendor's WLAN tables is a new YAML file, not code.
The format, by example::

    profile: if_mib                       # must equal the file name
    scalars:                              # read with one GET of <OID>.0 per group
      system:                             # group name: the `table` tag of snmp_error
        measurement: device
        objects:
          1.3.6.1.2.1.1.3: {field: uptime_s, type: timeticks, role: uptime}  # sysUpTime
    tables:                               # walked with GETBULK, columns in parallel
      interfaces:
        measurement: interface
        index: [{tag: ifindex, type: integer}]        # how the row index becomes tags
        link_speed: {field: speed_mbps, scale: 1000000, rates: [in_bps, out_bps]}
        columns:
          1.3.6.1.2.1.31.1.1.1.1: {tag: ifname, type: string}                     # ifName
          1.3.6.1.2.1.2.2.1.2: {tag: ifname, type: string}                        # ifDescr
          1.3.6.1.2.1.31.1.1.1.6:                                                 # ifHCInOctets
            {field: in_octets, type: counter64, rate: in_bps, rate_scale: 8}
        lookups:                          # tags from another table, keyed by an index part
          - {index: port, oid: 1.3.6.1.2.1.31.1.1.1.1, tag: ifname, type: string}  # ifName

Rules: numeric OIDs only, each with a ``# name`` comment on its line. Several columns may
feed one field or tag: the first listed that has a value in a row wins (HC counters
before 32-bit ones, ifName before ifDescr); the later ones are read only when needed.
``rate: true`` adds ``<field>_ps``; ``rate: NAME`` with ``rate_scale`` names it (octets
times 8 → ``in_bps``). ``role: uptime`` (sysUpTime) and ``role: discontinuity``
(ifCounterDiscontinuityTime) mark the columns rate reset detection watches. Value types
and what a field gets: counter32/counter64/integer/enum → int (float with ``scale``),
gauge → float, timeticks → float seconds, string/hexstring/oid/ipaddress → str.
Unknown keys, bad OIDs, tags the measurement does not allow (``MEASUREMENT_TAGS``) and
the like are errors naming file:line:key.

Beyond that (see agent/profiles/*.yaml for each in use): a column's ``values: {1: up}``
writes enum names (``bits``: the set bits' names), ``multiply_by`` / ``si_prefix`` /
``precision`` scale by other fields of the row, ``keep: false`` reads a helper field
without writing it; value types ``mac`` and ``octets`` decode MACs and LLDP ids. A
table may have ``alt_index`` (a second index layout), ``filters`` (include/exclude
regexes on a tag or field), ``max_rows``, and ``aggregate`` (+ ``group_by``) to fold
its rows into one point (per group). Lookups may key on several index parts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as derived
from pathlib import Path
from typing import Final

from yaml.nodes import MappingNode, Node

from agent.snmp.client import Oid, parse_oid
from agent.snmp.rates import RateSpec
from schoolnet.configfile import ConfigError, IssueList, MappingReader, compose_file, one_of
from schoolnet.wire import DEVICE_TAGS, KEY_RE, MEASUREMENT_TAGS

#: Where the shipped profiles live.
PROFILE_DIR: Final = Path(__file__).resolve().parent.parent / "profiles"

COUNTER_BITS: Final = {"counter32": 32, "counter64": 64}
VALUE_TYPES: Final = ("counter32", "counter64", "gauge", "integer", "enum", "timeticks",
                      "string", "hexstring", "oid", "ipaddress", "mac", "octets", "bits")
STRING_TYPES: Final = frozenset({"string", "hexstring", "oid", "ipaddress", "mac", "octets",
                                 "bits"})
INDEX_TYPES: Final = ("integer", "ipv4", "mac", "string", "implied_string", "address")
#: How a table's rows can be folded into one point (``aggregate:``).
AGGREGATES: Final = ("mean", "sum", "max", "min", "count", "ratio")
#: Fields the poller itself puts on every device point.
RESERVED_DEVICE_FIELDS: Final = frozenset({"reachable", "poll_ms"})

_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_VALUE_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.]{0,62}$")
_COMMENT_RE: Final = re.compile(r"#\s*([A-Za-z][A-Za-z0-9_.-]*)")


@dataclass(frozen=True, slots=True)
class Column:
    """One OID of a profile and what its value becomes."""

    oid: Oid
    mib_name: str  # from the `# name` comment; used in messages and as the counter source
    type: str
    field: str | None = None
    tag: str | None = None
    scale: float | None = None
    rate: RateSpec | None = None
    role: str | None = None
    #: Enum value → readable name (``values:``); the field or tag becomes a string.
    #: For ``bits``: bit number → name, the set bits joined with commas.
    values: Mapping[int, str] | None = None
    #: Multiply by another (integer) field of the same row (hrStorageAllocationUnits).
    multiply_by: str | None = None
    #: ENTITY-SENSOR-MIB style scaling: fields of the row holding the SI prefix
    #: (EntitySensorDataScale: 9 = units, 8 = milli, 10 = kilo …) and the precision
    #: (number of decimals); the value becomes value * 10**(3*(prefix-9) - precision).
    si_prefix: str | None = None
    precision: str | None = None
    #: False: read for filters, scaling or aggregation, but not written as a field.
    keep: bool = True

    @property
    def target(self) -> str | None:
        """``field:NAME`` / ``tag:NAME``: what several columns may feed in turn."""
        if self.field:
            return f"field:{self.field}"
        return f"tag:{self.tag}" if self.tag else None

    @property
    def bits(self) -> int:
        """Counter width (0 for non-counters)."""
        return COUNTER_BITS.get(self.type, 0)


def field_kind(type_: str, scale: float | None, *, values: object = None,
               scaled: bool = False) -> str:
    """The Python type a field of this value type always gets: int, float or str.

    ``values`` (an enum name map) makes it a string; ``scaled`` (multiply_by, si_prefix)
    a float.
    """
    if type_ in STRING_TYPES or values:
        return "str"
    if type_ in ("gauge", "timeticks") or scale is not None or scaled:
        return "float"
    return "int"


def column_kind(col: Column) -> str:
    """:func:`field_kind` of a column."""
    return field_kind(col.type, col.scale, values=col.values,
                      scaled=bool(col.multiply_by or col.si_prefix or col.precision))


@dataclass(frozen=True, slots=True)
class ScalarGroup:
    """Scalars read with one GET, becoming one point of ``measurement``."""

    name: str
    measurement: str
    objects: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class IndexPart:
    """One component of a table's row index."""

    name: str
    type: str
    tag: str | None = None
    #: The part's text also becomes this (string) field: an address in the index.
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """A tag read from another column, keyed by parts of this table's index (their
    sub-identifiers joined in the order given)."""

    index: tuple[str, ...]
    column: Column


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Keep a row only if the text of ``target`` (a tag or field name) full-matches one
    of ``include`` (when given) and none of ``exclude``. A row without the value counts
    as not matching."""

    target: str
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One field of a table folded into one point: ``fn`` over ``source`` of every row
    (``ratio``: ``source`` / ``other`` of the folded values, times ``scale``)."""

    field: str
    fn: str
    source: str
    other: str | None = None
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class LinkSpeed:
    """Which field holds the link speed (times ``scale`` = bit/s) and which rates it bounds."""

    field: str
    scale: float
    rates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    """A conceptual table walked column-wise; one point per row."""

    name: str
    measurement: str
    index: tuple[IndexPart, ...]
    columns: tuple[Column, ...]
    lookups: tuple[Lookup, ...] = ()
    link_speed: LinkSpeed | None = None
    #: A second index layout tried when a row does not fit ``index`` (agents that
    #: leave out index parts, e.g. RouterOS's one-part lldpRemTable index).
    alt_index: tuple[IndexPart, ...] | None = None
    filters: tuple[RowFilter, ...] = ()
    #: At most this many rows (after filters) become points; the rest are counted.
    max_rows: int | None = None
    #: When given, the rows become one point with these fields and no row tags, or
    #: one point per distinct value of the ``group_by`` tags (clients per AP summed
    #: over its radios), carrying those tags.
    aggregate: tuple[Aggregate, ...] = ()
    group_by: tuple[str, ...] = ()
    #: Columns read on every poll: the first source of each field/tag, and roles.
    primary: tuple[Column, ...] = derived(init=False)
    #: Columns read only for rows whose earlier source had no value.
    fallbacks: tuple[Column, ...] = derived(init=False)
    #: One spec per rate field (fallback columns share their primary's); the rates
    #: named in ``link_speed`` are checked against the link speed.
    rate_specs: tuple[RateSpec, ...] = derived(init=False)

    def __post_init__(self) -> None:
        # Derived once here rather than on every poll (the poller's hot path).
        seen: set[str] = set()
        primary: list[Column] = []
        fallbacks: list[Column] = []
        for col in self.columns:
            target = col.target
            (fallbacks if target is not None and target in seen else primary).append(col)
            if target is not None:
                seen.add(target)
        checked = set(self.link_speed.rates) if self.link_speed else set()
        specs: dict[str, RateSpec] = {}
        for col in self.columns:
            if col.rate is not None and col.rate.rate not in specs:
                specs[col.rate.rate] = replace(col.rate, link_checked=col.rate.rate in checked)
        object.__setattr__(self, "primary", tuple(primary))
        object.__setattr__(self, "fallbacks", tuple(fallbacks))
        object.__setattr__(self, "rate_specs", tuple(specs.values()))


@dataclass(frozen=True, slots=True)
class Profile:
    """One profile file."""

    name: str
    scalars: tuple[ScalarGroup, ...]
    tables: tuple[Table, ...]
    source: str = ""


class _Reader:
    """Reads one profile file; every problem goes to ``issues`` with file:line."""

    def __init__(self, path: Path, issues: IssueList) -> None:
        self.path = path
        self.issues = issues
        try:
            self.lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            self.lines = []

    def profile(self) -> Profile | None:
        node = compose_file(self.path, self.issues)
        if node is None:
            return None
        r = MappingReader(node, "", self.issues)
        if not r.ok:
            return None
        name = r.value("profile", str)
        if name is not None and name != self.path.stem:
            self.issues.add(r.node_of("profile"), "profile",
                            f"must match the file name {self.path.stem!r}")
        r.value("description", str, "")
        scalars = [self.scalar_group(r.mapping("scalars"), g) for g in self._names(r, "scalars")]
        tables = [self.table(r.mapping("tables"), t) for t in self._names(r, "tables")]
        r.finish()
        if not scalars and not tables:
            self.issues.add(node, "", "has neither scalars nor tables")
        groups = [g.name for g in scalars if g] + [t.name for t in tables if t]
        if len(set(groups)) < len(groups):
            self.issues.add(node, "", "a name is used for a scalar group and for a table")
            return None
        if name is None or None in scalars or None in tables:
            return None
        return Profile(name=name, scalars=tuple(g for g in scalars if g),
                       tables=tuple(t for t in tables if t), source=str(self.path))

    def _names(self, r: MappingReader, key: str) -> list[str]:
        sub = r.mapping(key)
        names = list(sub.keys()) if sub.ok else []
        for n in names:
            if not _NAME_RE.match(n):
                self.issues.add(sub.node_of(n), sub.sub(n), "must be a lower_case identifier")
        return names

    def _measurement(self, r: MappingReader) -> str | None:
        def check(m: str) -> str | None:
            allowed = MEASUREMENT_TAGS.get(m)
            if allowed is None:
                return f"unknown measurement {m!r} (see MEASUREMENT_TAGS in schoolnet/wire.py)"
            if not allowed >= DEVICE_TAGS:
                return f"measurement {m!r} does not carry the device tags"
            return None
        return r.value("measurement", str, check=check)  # type: ignore[no-any-return]

    def _oid_map(self, node: Node | None, path: str) -> list[tuple[Node, Oid, str, Node]]:
        """The entries of a mapping keyed by numeric OIDs, each with its `# name`."""
        if node is None:
            self.issues.add(None, path, "is required", file=str(self.path))
            return []
        if not isinstance(node, MappingNode):
            self.issues.add(node, path, "must be a mapping of OID: {…}")
            return []
        out = []
        seen: set[Oid] = set()
        for knode, vnode in node.value:
            text = str(knode.value)
            try:
                oid = parse_oid(text)
            except ValueError:
                self.issues.add(knode, f"{path}[{text}]", "keys must be numeric OIDs")
                continue
            if len(oid) < 2 or oid in seen:
                self.issues.add(knode, f"{path}[{text}]",
                                "duplicate OID" if oid in seen else "OID is too short")
                continue
            seen.add(oid)
            mib_name = self._comment(knode)
            if mib_name is None:
                self.issues.add(knode, f"{path}[{text}]", "needs a `# name` comment on its line")
                continue
            out.append((knode, oid, mib_name, vnode))
        return out

    def _comment(self, knode: Node) -> str | None:
        line = knode.start_mark.line
        if line >= len(self.lines):
            return None
        m = _COMMENT_RE.search(self.lines[line], knode.end_mark.column)
        return m.group(1) if m else None

    def column(self, oid: Oid, mib_name: str, vnode: Node, path: str, measurement: str | None,
               *, table: bool) -> Column | None:
        r = MappingReader(vnode, path, self.issues)
        if not r.ok:
            return None
        type_ = r.value("type", str, check=one_of(*VALUE_TYPES))
        field = r.value("field", str, None, _check_key)
        tag = r.value("tag", str, None)
        role = r.value("role", str, None, one_of("discontinuity") if table else one_of("uptime"))
        scale = r.value("scale", float, None, _check_positive)
        rate_opt = r.value("rate", (bool, str), False)
        rate_scale = r.value("rate_scale", float, None, _check_positive)
        values = self._values(r, path)
        multiply_by = r.value("multiply_by", str, None, _check_key)
        si_prefix = r.value("si_prefix", str, None, _check_key)
        precision = r.value("precision", str, None, _check_key)
        keep = r.value("keep", bool, True)
        r.finish()
        ok = type_ is not None and values is not False
        if (multiply_by or si_prefix or precision or not keep) and not (table and field):
            self.issues.add(vnode, path, "multiply_by, si_prefix, precision and keep are "
                                         "for table fields")
            ok = False
        if values and type_ not in ("enum", "integer", "bits"):
            self.issues.add(r.node_of("values"), f"{path}.values",
                            "only enum, integer and bits columns have values")
            ok = False
        if type_ == "bits" and not values:
            self.issues.add(vnode, path, "a bits column needs values (bit number: name)")
            ok = False
        if field and tag:
            self.issues.add(vnode, path, "give field or tag, not both")
            ok = False
        elif not field and not tag and not role:
            self.issues.add(vnode, path, "needs a field, a tag or a role")
            ok = False
        if tag is not None and not table:
            self.issues.add(r.node_of("tag"), f"{path}.tag", "scalars have no tags")
            ok = False
        elif tag is not None:
            ok = self._check_tag(r.node_of("tag"), f"{path}.tag", tag, measurement) and ok
        if measurement == "device" and field in RESERVED_DEVICE_FIELDS:
            self.issues.add(r.node_of("field"), f"{path}.field", "is set by the poller")
            ok = False
        if role is not None and type_ != "timeticks":
            self.issues.add(r.node_of("role"), f"{path}.role", "a role column must be timeticks")
            ok = False
        if scale is not None and type_ in STRING_TYPES:
            self.issues.add(r.node_of("scale"), f"{path}.scale", "strings cannot be scaled")
            ok = False
        rate = None
        if rate_opt is not False and not table:
            self.issues.add(r.node_of("rate"), f"{path}.rate", "scalars have no rates")
            ok = False
        elif rate_opt is not False:
            if type_ not in COUNTER_BITS or not field:
                self.issues.add(r.node_of("rate"), f"{path}.rate", "only counter fields have rates")
                ok = False
            else:
                rate_name = f"{field}_ps" if rate_opt is True else str(rate_opt)
                if _check_key(rate_name):
                    self.issues.add(r.node_of("rate"), f"{path}.rate", _check_key(rate_name) or "")
                    ok = False
                rate = RateSpec(counter=field, rate=rate_name, scale=rate_scale or 1.0)
        elif rate_scale is not None:
            self.issues.add(r.node_of("rate_scale"), f"{path}.rate_scale", "needs rate")
            ok = False
        if not ok or type_ is None or isinstance(values, bool):
            return None
        return Column(oid=oid, mib_name=mib_name, type=type_, field=field, tag=tag,
                      scale=scale, rate=rate, role=role, values=values,
                      multiply_by=multiply_by, si_prefix=si_prefix, precision=precision,
                      keep=keep)

    def _values(self, r: MappingReader, path: str) -> dict[int, str] | bool | None:
        """``values: {1: up, 2: down}``: None when absent, False when broken."""
        node = r.node_of("values")
        if node is None:
            return None
        if not isinstance(node, MappingNode) or not node.value:
            self.issues.add(node, f"{path}.values", "must be a mapping of number: name")
            return False
        out: dict[int, str] = {}
        for knode, vnode in node.value:
            key, name = str(knode.value), str(vnode.value)
            if not key.lstrip("-").isdigit() or not _VALUE_NAME_RE.match(name):
                self.issues.add(knode, f"{path}.values[{key}]",
                                "keys must be numbers and names lower_case words")
                return False
            out[int(key)] = name
        return out

    def _check_tag(self, node: Node | None, path: str, tag: str, measurement: str | None) -> bool:
        if measurement is None:
            return True
        if tag in DEVICE_TAGS:
            self.issues.add(node, path, f"{tag!r} is set by the poller from the inventory")
            return False
        if tag not in MEASUREMENT_TAGS[measurement]:
            allowed = sorted(MEASUREMENT_TAGS[measurement] - DEVICE_TAGS)
            self.issues.add(node, path, f"measurement {measurement!r} allows no tag {tag!r} "
                                        f"(allowed: {', '.join(allowed) or 'none'})")
            return False
        return True

    def _columns(self, r: MappingReader, key: str, measurement: str | None,
                 *, table: bool) -> list[Column] | None:
        entries = self._oid_map(r.node_of(key), r.sub(key))
        pairs = [(self.column(oid, name, v, f"{r.sub(key)}[{k.value}]", measurement,
                              table=table), k) for k, oid, name, v in entries]
        if not entries or any(c is None for c, _ in pairs):
            if not entries and r.node_of(key) is not None:
                self.issues.add(r.node_of(key), r.sub(key), "is empty")
            return None
        columns = [(c, k) for c, k in pairs if c is not None]
        ok = self._consistent(r.node_of(key), r.sub(key), columns)
        return [c for c, _ in columns] if ok else None

    def _consistent(self, node: Node | None, path: str,
                    columns: Sequence[tuple[Column, Node]]) -> bool:
        """Columns feeding one field agree on its type and rate; names do not clash."""
        first: dict[str, Column] = {}
        ok = True
        for col, knode in columns:
            if col.field is None:
                continue
            prev = first.setdefault(col.field, col)
            where = f"{path}[{knode.value}]"
            if column_kind(prev) != column_kind(col):
                self.issues.add(knode, where, f"{col.mib_name} gives field {col.field!r} "
                                              f"another type than {prev.mib_name}")
                ok = False
            elif (prev.rate and (prev.rate.rate, prev.rate.scale)) != (
                    col.rate and (col.rate.rate, col.rate.scale)):
                self.issues.add(knode, where, f"{col.mib_name} and {prev.mib_name} feed "
                                              f"{col.field!r} with different rates")
                ok = False
        for col, knode in columns:
            for ref in (col.multiply_by, col.si_prefix, col.precision):
                if ref is not None and ref not in first:
                    self.issues.add(knode, f"{path}[{knode.value}]",
                                    f"{col.mib_name} refers to no field {ref!r} of this table")
                    ok = False
        rates = {c.rate.rate for c, _ in columns if c.rate}
        clash = rates & set(first)
        if clash:
            self.issues.add(node, path, f"rate and field names clash: {', '.join(sorted(clash))}")
            ok = False
        if not first:
            self.issues.add(node, path, "has no field: its points would be empty")
            ok = False
        return ok

    def scalar_group(self, parent: MappingReader, name: str) -> ScalarGroup | None:
        r = parent.mapping(name)
        if not r.ok:
            return None
        measurement = self._measurement(r)
        objects = self._columns(r, "objects", measurement, table=False)
        r.finish()
        if measurement is None or objects is None:
            return None
        return ScalarGroup(name=name, measurement=measurement, objects=tuple(objects))

    def table(self, parent: MappingReader, name: str) -> Table | None:
        r = parent.mapping(name)
        if not r.ok:
            return None
        measurement = self._measurement(r)
        index = self._index(r, measurement)
        columns = self._columns(r, "columns", measurement, table=True)
        alt_index = self._index(r, measurement, "alt_index") if r.has("alt_index") else None
        parts = list(index or ()) + list(alt_index or ())
        lookups = self._lookups(r, measurement, parts)
        speed_ok, speed = self._link_speed(r.mapping("link_speed"), columns or [])
        max_rows = r.value("max_rows", int, None, _check_positive)
        filters = self._filters(r, columns or [], parts)
        aggregate = self._aggregate(r.mapping("aggregate"), columns or [])
        group_by = r.string_list("group_by")
        r.finish()
        tags = {c.tag for c in columns or [] if c.tag} | {p.tag for p in parts if p.tag} | {
            lk.column.tag for lk in lookups or ()}
        if group_by and (not aggregate or not set(group_by) <= tags):
            self.issues.add(r.node_of("group_by"), r.sub("group_by"),
                            "needs aggregate: and tags of this table")
            return None
        if measurement is None or index is None or columns is None or lookups is None:
            return None
        if not speed_ok or filters is None or aggregate is None:
            return None
        if r.has("alt_index") and alt_index is None:
            return None
        if aggregate and any(c.rate for c in columns):
            self.issues.add(r.node_of("aggregate"), r.sub("aggregate"),
                            "a table with rates cannot be aggregated")
            return None
        return Table(name=name, measurement=measurement, index=index, columns=tuple(columns),
                     lookups=lookups, link_speed=speed, alt_index=alt_index,
                     filters=filters, max_rows=max_rows, aggregate=aggregate,
                     group_by=group_by)

    def _filters(self, r: MappingReader, columns: Sequence[Column],
                 parts: Sequence[IndexPart]) -> tuple[RowFilter, ...] | None:
        """``filters: [{target: if_type, exclude: ["24"]}, …]``: regexes, full match."""
        known = {c.field for c in columns if c.field} | {c.tag for c in columns if c.tag}
        known |= {p.tag for p in parts if p.tag} | {p.field for p in parts if p.field}
        out: list[RowFilter] = []
        ok = True
        for i, node in enumerate(r.sequence("filters")):
            fr = MappingReader(node, f"{r.sub('filters')}[{i}]", self.issues)
            target = fr.value("target", str)
            pats: dict[str, list[re.Pattern[str]]] = {}
            for key in ("include", "exclude"):
                pats[key] = []
                for text in fr.string_list(key):
                    try:
                        pats[key].append(re.compile(text))
                    except re.error as exc:
                        self.issues.add(fr.node_of(key), fr.sub(key), f"bad regex: {exc}")
                        ok = False
            fr.finish()
            if target not in known:
                self.issues.add(node, fr.sub("target"), f"no tag or field {target!r} in this "
                                                        "table (lookup tags cannot be filtered)")
                ok = False
            elif not pats["include"] and not pats["exclude"]:
                self.issues.add(node, fr.path, "needs include or exclude")
                ok = False
            else:
                out.append(RowFilter(target, tuple(pats["include"]), tuple(pats["exclude"])))
        return tuple(out) if ok else None

    def _aggregate(self, r: MappingReader,
                   columns: Sequence[Column]) -> tuple[Aggregate, ...] | None:
        """``aggregate: {cpu_load_pct: {fn: mean, source: load}, …}``."""
        if r.node is None:
            return ()
        fields = {c.field for c in columns if c.field}
        out: list[Aggregate] = []
        ok = True
        for name in list(r.keys()):
            ar = r.mapping(name)
            fn = ar.value("fn", str, check=one_of(*AGGREGATES))
            source = ar.value("source", str)
            other = ar.value("other", str, None)
            scale = ar.value("scale", float, 1.0, _check_positive)
            ar.finish()
            earlier = {a.field for a in out}
            pool = earlier if fn == "ratio" else fields
            missing = [x for x in (source, other) if x is not None and x not in pool]
            if _check_key(name) or fn is None or missing or (fn == "ratio") != (other is not None):
                self.issues.add(ar.node, ar.path, _check_key(name) or (
                    f"no field {missing[0]!r} to fold" + (" (ratio takes earlier aggregates)"
                                                          if fn == "ratio" else "")
                    if missing else "ratio needs other:, other functions none"))
                ok = False
                continue
            out.append(Aggregate(field=name, fn=fn, source=source, other=other, scale=scale))
        return tuple(out) if ok else None

    def _index(self, r: MappingReader, measurement: str | None,
               key: str = "index") -> tuple[IndexPart, ...] | None:
        nodes = r.sequence(key)
        if not nodes:
            self.issues.add(r.node, r.sub(key), "is required (a list of index parts)")
            return None
        parts: list[IndexPart] = []
        for i, node in enumerate(nodes):
            pr = MappingReader(node, f"{r.sub(key)}[{i}]", self.issues)
            type_ = pr.value("type", str, check=one_of(*INDEX_TYPES))
            tag = pr.value("tag", str, None)
            field = pr.value("field", str, None, _check_key)
            pname = pr.value("name", str, tag or field or f"part{i}", _check_key)
            pr.finish()
            if type_ is None or (tag and not self._check_tag(pr.node_of("tag"), pr.sub("tag"),
                                                             tag, measurement)):
                return None
            if type_ == "implied_string" and i != len(nodes) - 1:
                self.issues.add(node, pr.sub("type"), "implied_string must be the last part")
                return None
            if any(p.name == pname for p in parts):
                self.issues.add(node, pr.sub("name"), f"duplicate index part {pname!r}")
                return None
            parts.append(IndexPart(name=pname, type=type_, tag=tag, field=field))
        return tuple(parts)

    def _lookups(self, r: MappingReader, measurement: str | None,
                 index: Sequence[IndexPart] | None) -> tuple[Lookup, ...] | None:
        out: list[Lookup] = []
        ok = True
        for i, node in enumerate(r.sequence("lookups")):
            path = f"{r.sub('lookups')}[{i}]"
            lr = MappingReader(node, path, self.issues)
            index_parts = lr.string_list("index")
            oid_text = lr.value("oid", (str, float))
            oid_node = lr.node_of("oid")
            mib_name = self._comment(oid_node) if oid_node is not None else None
            tag = lr.value("tag", str)
            type_ = lr.value("type", str, "string", one_of(*VALUE_TYPES))
            lr.finish()
            try:
                oid = parse_oid(str(oid_text))
            except ValueError:
                self.issues.add(lr.node_of("oid"), f"{path}.oid", "must be a numeric OID")
                ok = False
                continue
            if mib_name is None:
                self.issues.add(lr.node_of("oid"), f"{path}.oid", "needs a `# name` comment")
                ok = False
            unknown = [p for p in index_parts if p not in {x.name for x in index or ()}]
            if index is not None and (unknown or not index_parts):
                self.issues.add(lr.node_of("index") or node, f"{path}.index",
                                f"no index part {unknown[0]!r}" if unknown else "is required")
                ok = False
            if tag is None or type_ is None or not self._check_tag(
                    lr.node_of("tag"), f"{path}.tag", tag, measurement):
                ok = False
                continue
            if ok and index_parts and mib_name:
                out.append(Lookup(index=index_parts, column=Column(oid=oid, mib_name=mib_name,
                                                            type=type_, tag=tag)))
        return tuple(out) if ok else None

    def _link_speed(self, r: MappingReader,
                    columns: Sequence[Column]) -> tuple[bool, LinkSpeed | None]:
        if r.node is None:
            return True, None  # absent: only the global plausibility bound applies
        field = r.value("field", str)
        scale = r.value("scale", float, 1.0, _check_positive)
        rates = tuple(r.string_list("rates"))
        r.finish()
        fields = {c.field for c in columns if c.field}
        known_rates = {c.rate.rate for c in columns if c.rate}
        if field not in fields:
            self.issues.add(r.node_of("field") or r.node, r.sub("field"),
                            f"no field {field!r} in this table")
            return False, None
        unknown = [x for x in rates if x not in known_rates]
        if unknown or not rates:
            self.issues.add(r.node_of("rates") or r.node, r.sub("rates"),
                            f"not rates of this table: {unknown}" if unknown else "is required")
            return False, None
        return True, LinkSpeed(field=field, scale=scale, rates=rates)


def _check_key(val: str) -> str | None:
    return None if KEY_RE.match(val) else f"{val!r} is not a valid field name (a-z, 0-9, _)"


def _check_positive(val: float) -> str | None:
    return None if val > 0 else "must be greater than 0"


def load_profiles(dirs: Iterable[Path] = (PROFILE_DIR,)) -> dict[str, Profile]:
    """Every ``*.yaml`` profile below ``dirs`` (later dirs override earlier names).

    Raises :class:`ConfigError` listing every problem of every file.
    """
    issues = IssueList()
    profiles: dict[str, Profile] = {}
    for d in dirs:
        for path in sorted(Path(d).glob("*.yaml")):
            profile = _Reader(path, issues).profile()
            if profile is not None:
                profiles[profile.name] = profile
    issues.raise_if_any()
    return profiles


def resolve(
    names: Sequence[str], profiles: Mapping[str, Profile], *, where: str, file: str = ""
) -> tuple[Profile, ...]:
    """The profiles a device lists, checked: known names, no group name used twice.

    ``where`` names the device in the inventory (``devices[2].profile``).
    """
    issues = IssueList()
    out: list[Profile] = []
    groups: dict[str, str] = {}
    for name in names:
        profile = profiles.get(name)
        if profile is None:
            known = ", ".join(sorted(profiles)) or "none"
            issues.add(None, where, f"unknown profile {name!r} (known: {known})", file=file)
            continue
        for group in [g.name for g in profile.scalars] + [t.name for t in profile.tables]:
            if group in groups:
                issues.add(None, where, f"profiles {groups[group]!r} and {name!r} both define "
                                        f"{group!r}", file=file)
            groups[group] = name
        out.append(profile)
    issues.raise_if_any()
    return tuple(out)


__all__ = ["ConfigError", "Profile", "ScalarGroup", "Table", "load_profiles", "resolve"]
