"""The bare pysnmp poll loop the SNMP benches compare the schoolnet poller with.

The floor for any pysnmp-based poller: per round, one GET of the scalars (if any), then
each group of columns walked in parallel with ``bulk_cmd`` (every unfinished column's
cursor in one GETBULK, like agent/snmp/walk.py), values only counted, nothing converted.
``varbinds`` counts the values received that belong to the asked-for columns/scalars,
the same count as the poller's ``stats.varbinds``.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence

#: Repetitions per GETBULK (the poller's default, agent/snmp/walk.py).
MAX_REPETITIONS = 25


def cpu_self() -> float:
    """user+sys CPU seconds of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def bare_poll_loop(
    host: str,
    port: int,
    community: str,
    walks: Sequence[Sequence[str]],
    rounds: int,
    *,
    scalars: Sequence[str] = (),
    warmup: int = 0,
    max_repetitions: int = MAX_REPETITIONS,
) -> tuple[float, int]:
    """``warmup`` uncounted rounds, then ``rounds`` counted: (CPU s, varbinds) of those."""
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        bulk_cmd,
        get_cmd,
    )
    from pysnmp.proto.rfc1902 import ObjectName
    from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

    engine = SnmpEngine()
    target = await UdpTransportTarget.create((host, port), timeout=2, retries=1)
    auth, ctx = CommunityData(community), ContextData()
    groups = [[ObjectName(c) for c in cols] for cols in walks]
    scalar_req = [ObjectType(ObjectIdentity(ObjectName(s))) for s in scalars]
    absent = (EndOfMibView, NoSuchInstance, NoSuchObject)

    async def walk(roots: list[ObjectName]) -> int:
        got = 0
        cursors = list(roots)
        active = list(range(len(roots)))
        while active:
            req = [ObjectType(ObjectIdentity(cursors[i])) for i in active]
            err, status, _idx, table = await bulk_cmd(
                engine, auth, target, ctx, 0, max_repetitions, *req, lookupMib=False
            )
            if err or status:
                raise RuntimeError(f"pysnmp: {err or status}")
            width = len(active)
            still = []
            last: dict[int, ObjectName] = {}
            done: set[int] = set()
            for n, (oid, val) in enumerate(table):
                col = active[n % width]
                if col in done:
                    continue
                if isinstance(val, EndOfMibView) or not roots[col].isPrefixOf(oid):
                    done.add(col)
                    continue
                got += 1
                last[col] = oid
            for col in active:
                if col not in done and col in last:
                    cursors[col] = last[col]
                    still.append(col)
            active = still
        return got

    async def poll() -> int:
        got = 0
        if scalar_req:
            err, status, _idx, values = await get_cmd(
                engine, auth, target, ctx, *scalar_req, lookupMib=False
            )
            if err or status:
                raise RuntimeError(f"pysnmp: {err or status}")
            got += sum(1 for _oid, val in values if not isinstance(val, absent))
        for roots in groups:
            got += await walk(roots)
        return got

    for _ in range(warmup):
        await poll()
    varbinds = 0
    start = cpu_self()
    for _ in range(rounds):
        varbinds += await poll()
    used = cpu_self() - start
    engine.close_dispatcher()
    return used, varbinds
