"""Across every shipped profile, one measurement field always has one type.

InfluxDB fixes a field's type per shard: if one vendor profile wrote ``ap_radio.channel``
as a string and another as an integer, the collector's writes for the second kind of
device would be refused. This guards the whole profile set, including profiles added
later.
"""

from __future__ import annotations

from collections import defaultdict

from agent.snmp.profile import column_kind, load_profiles


def test_each_measurement_field_has_one_type_across_all_profiles() -> None:
    kinds: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for name, profile in load_profiles().items():
        groups = [(g.measurement, g.objects) for g in profile.scalars]
        # A table with `aggregate:` writes only its aggregates, not its columns.
        groups += [(t.measurement, t.columns) for t in profile.tables if not t.aggregate]
        for measurement, columns in groups:
            for col in columns:
                if col.field and col.keep:
                    kinds[(measurement, col.field)].add((column_kind(col), f"{name}:{col.mib_name}"))
    assert kinds, "no profiles found"
    clashes = {
        f"{m}.{f}": sorted(where)
        for (m, f), where in kinds.items()
        if len({k for k, _ in where}) > 1
    }
    assert clashes == {}
