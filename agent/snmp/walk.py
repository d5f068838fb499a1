"""Walking table columns in parallel with GETBULK, and reading scalars with GET.

A table walk asks for every column at once: one GETBULK carries the current position of
each column that is not finished yet, the agent answers ``max_repetitions`` successors
per column, repetition by repetition. Each column ends on its own (an OID outside the
column, ``endOfMibView``), so a sparse ``ifXTable`` or a column the device lacks costs
nothing extra. Agents may truncate a GETBULK response anywhere (snmpsim stops at 64
varbinds, net-snmp at its message size); the walk simply continues each column from
the last OID it got.

Works on any :class:`~agent.snmp.client.SnmpClient`: the pysnmp one and the fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.snmp.client import END_OF_MIB, Oid, SnmpClient, SnmpError, Target, Value, format_oid

#: Repetitions per GETBULK: snmp_exporter's default; agents truncate what does not fit.
MAX_REPETITIONS = 25
#: A column with more rows than this is cut off (a looping or hostile agent).
MAX_ROWS = 10_000


@dataclass
class WalkResult:
    """What a walk got: per column, ``index suffix → value``; plus protocol counters
    (``varbinds`` counts the values that belong to the columns, as a bare walk would).

    ``warnings`` lists non-fatal trouble (an agent that returned a non-increasing OID
    or too many rows): the rows before it are kept, the column ends there.
    """

    columns: dict[Oid, dict[Oid, Value]]
    requests: int = 0
    varbinds: int = 0
    warnings: list[SnmpError] = field(default_factory=list)


async def walk_columns(
    client: SnmpClient,
    target: Target,
    columns: Sequence[Oid],
    *,
    max_repetitions: int = MAX_REPETITIONS,
    max_rows: int = MAX_ROWS,
) -> WalkResult:
    """Walk ``columns`` in parallel; raises :class:`SnmpError` if a request fails.

    A ``tooBig`` answer halves the repetitions and asks again, down to one. A request
    that fails after others of the walk were answered raises with ``answered_before``
    set to how many were.
    """
    result = WalkResult(columns={col: {} for col in columns})
    cursor: dict[Oid, Oid] = {col: col for col in columns}
    active = list(dict.fromkeys(columns))
    reps = max(1, max_repetitions)
    while active:
        try:
            varbinds = await client.get_bulk(target, [cursor[c] for c in active], reps)
        except SnmpError as exc:
            if exc.code == "too_big" and reps > 1:
                reps //= 2
                continue
            if result.requests and not exc.answered_before:
                # Cut off mid-walk: say how far it got (the caller decides what the
                # partial columns are worth; the poller drops them).
                raise SnmpError(exc.code, exc.message, answered=exc.answered,
                                index=exc.index, answered_before=result.requests) from exc
            raise
        result.requests += 1
        width = len(active)
        done: set[Oid] = set()
        progressed: set[Oid] = set()
        for n, (oid, value) in enumerate(varbinds):
            col = active[n % width]
            if col in done:
                continue
            prefix = len(col)
            if value is END_OF_MIB or oid[:prefix] != col:
                done.add(col)
                continue
            if oid <= cursor[col]:
                # An agent bug; following it could loop forever.
                result.warnings.append(SnmpError(
                    "oid_not_increasing", f"{format_oid(oid)} after {format_oid(cursor[col])}",
                    answered=True))
                done.add(col)
                continue
            rows = result.columns[col]
            if len(rows) >= max_rows:
                result.warnings.append(SnmpError(
                    "too_many_rows", f"{format_oid(col)}: more than {max_rows} rows",
                    answered=True))
                done.add(col)
                continue
            rows[oid[prefix:]] = value
            result.varbinds += 1
            cursor[col] = oid
            progressed.add(col)
        # Columns cut off by a truncated answer simply ask again. An answer that moved
        # no column at all (empty, or all values refused) would repeat forever: stop.
        if not progressed and not done:
            break
        active = [c for c in active if c not in done]
    result.warnings = _one_per_code(result.warnings)
    return result


def _one_per_code(warnings: list[SnmpError]) -> list[SnmpError]:
    """One warning per code (the first, saying how many columns it hit): they become
    ``snmp_error`` points of one table and poll, which would otherwise share a series
    and a timestamp."""
    first: dict[str, SnmpError] = {}
    counts: dict[str, int] = {}
    for w in warnings:
        first.setdefault(w.code, w)
        counts[w.code] = counts.get(w.code, 0) + 1
    out = []
    for code, w in first.items():
        more = counts[code] - 1
        out.append(w if not more else SnmpError(
            code, f"{w.message} (and {more} more column(s))", answered=w.answered))
    return out


async def get_scalars(client: SnmpClient, target: Target, oids: Sequence[Oid]) -> dict[Oid, Value]:
    """GET ``oids``; returns the ones that have a value.

    A device that answers a missing object with the SNMPv1-style ``noSuchName`` error
    (seen on old firmware even over v2c) loses that OID and is asked again for the rest.
    """
    remaining = list(dict.fromkeys(oids))
    answered = 0
    while remaining:
        try:
            varbinds = await client.get(target, remaining)
        except SnmpError as exc:
            if exc.code == "no_such_name" and 0 < exc.index <= len(remaining):
                del remaining[exc.index - 1]
                answered += 1
                continue
            if answered and not exc.answered_before:
                raise SnmpError(exc.code, exc.message, answered=exc.answered,
                                index=exc.index, answered_before=answered) from exc
            raise
        return {oid: value for oid, value in varbinds
                if value is not None and value is not END_OF_MIB}
    return {}
