"""The v2 (columnar groups) payload: round trips, v1 equivalence, every rejection reason,
and the fast row checks decide exactly as the reference row check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.samples import switch_points
from schoolnet import wire_groups
from schoolnet.wire import (
    BATCH_V1,
    BATCH_V2,
    MEASUREMENT_TAGS,
    Batch,
    Limits,
    Point,
    WireError,
    decode_batch,
    decode_batch_groups,
    encode_batch,
)
from schoolnet.wire_groups import group_points

NOW = 1_763_712_000_000_000_000


def group(**over: Any) -> dict[str, Any]:
    g: dict[str, Any] = {
        "measurement": "interface", "time_ns": NOW,
        "tags": {"device": "core-sw", "role": "switch"},
        "tag_columns": ["ifindex", "ifname"],
        "field_columns": ["in_octets", "in_bps", "alias", "up"],
        "rows": [["1", "Gi0/1", 123, 1.5e6, "uplink", True],
                 ["2", "Gi0/2", 456, 0.0, None, False]],
    }
    g.update(over)
    return g


def payload(groups: list[Any] | None = None, **over: Any) -> bytes:
    doc: dict[str, Any] = {"v": 2, "site": "gs-park", "seq": 7, "epoch": "e1",
                           "groups": [group()] if groups is None else groups}
    doc.update(over)
    return json.dumps(doc).encode()


def test_a_group_decodes_to_its_points() -> None:
    b = decode_batch(payload(), now_ns=NOW)
    assert (b.v, b.site, b.seq, b.epoch) == (2, "gs-park", 7, "e1")
    assert b.points == (
        Point("interface", {"device": "core-sw", "role": "switch", "ifindex": "1",
                            "ifname": "Gi0/1"},
              {"in_octets": 123, "in_bps": 1.5e6, "alias": "uplink", "up": True}, NOW),
        Point("interface", {"device": "core-sw", "role": "switch", "ifindex": "2",
                            "ifname": "Gi0/2"},
              {"in_octets": 456, "in_bps": 0.0, "up": False}, NOW),  # null: no alias
    )


def mixed_points() -> list[Point]:
    """Points as sources emit them, with the awkward cases a grouping must keep apart."""
    pts = switch_points(ports=4, time_ns=NOW)
    pts += switch_points("edge-sw", ports=2, time_ns=NOW + 5)
    pts.insert(3, Point("snmp_error", {"device": "core-sw", "table": "poe", "error": "timeout"},
                        {"count": 1}, NOW))
    pts.append(Point("interface", {"device": "edge-sw", "ifname": "lo"},  # no ifindex
                     {"in_octets": 1}, NOW + 5))
    pts.append(Point("agent", {"version": "0.1"}, {"queue": 0, "ok": True}, NOW + 9))
    pts.append(Point("probe_icmp", {"target": "a"}, {"rtt_ms": 1.0}, NOW + 9))
    pts.append(Point("probe_icmp", {"target": "b"}, {"loss_pct": 0.0}, NOW + 9))
    return pts


def test_encode_decode_keeps_every_point_in_order() -> None:
    pts = mixed_points()
    for v in (BATCH_V1, BATCH_V2):
        got = decode_batch(encode_batch(Batch("gs-park", 1, tuple(pts), "e", v=v)), now_ns=NOW)
        assert list(got.points) == pts and got.v == v


def test_v2_is_the_default_and_much_smaller() -> None:
    pts = tuple(switch_points(ports=48, time_ns=NOW))
    v2 = encode_batch(Batch("gs-park", 1, pts))
    v1 = encode_batch(Batch("gs-park", 1, pts, v=BATCH_V1))
    assert json.loads(v2)["v"] == 2 and "points" in json.loads(v1)
    assert len(v2) * 3 < len(v1)
    doc = json.loads(v2)
    assert [len(g["rows"]) for g in doc["groups"]] == [1, 48]
    assert doc["groups"][1]["tags"] == {"device": "core-sw", "role": "switch", "vendor": "cisco"}
    assert doc["groups"][1]["tag_columns"] == ["ifindex", "ifname"]


def test_groups_respect_the_per_point_limits() -> None:
    limits = Limits(max_tags=3, max_fields=2)
    pts = [Point("device", {"device": f"d{i}", "role": "ap"}, {f"f{i}": 1}, NOW)
           for i in range(5)]
    groups = group_points(pts, limits)
    assert all(len(g["tags"]) + len(g["tag_columns"]) <= 3 and len(g["field_columns"]) <= 2
               for g in groups)
    data = encode_batch(Batch("s", 1, tuple(pts)), limits)
    assert list(decode_batch(data, limits, now_ns=NOW).points) == pts


def test_encode_refuses_null_values_and_unknown_versions() -> None:
    bad = Point("device", {"device": "sw"}, {"x": None}, NOW)  # type: ignore[dict-item]
    with pytest.raises(WireError, match="bad_type"):
        encode_batch(Batch("s", 1, (bad,)))
    with pytest.raises(WireError, match="bad_version"):
        encode_batch(Batch("s", 1, (), v=9))


BIG = 2**63  # 19 digits, one beyond int64


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (payload(groups={"a": 1}), "bad_type"),  # type: ignore[arg-type]
        (payload([[1]]), "bad_type"),
        (payload([group(extra=1)]), "bad_point"),
        (payload([group(measurement=5)]), "bad_type"),
        (payload([group(measurement="rm_rf")]), "unknown_measurement"),
        (payload([group(tags=[])]), "bad_type"),
        (payload([group(tag_columns="ifname")]), "bad_type"),
        (payload([group(rows={})]), "bad_type"),
        (payload([group(time_ns="1")]), "bad_type"),
        (payload([group(time_ns=NOW + 3600 * 10**9)]), "bad_time"),
        (payload([group(tags={"device": "sw", "site": "x"})]), "topic_tag"),
        (payload([group(tag_columns=["tenant", "ifname"])]), "topic_tag"),
        (payload([group(tag_columns=["colour", "ifname"])]), "unknown_tag"),
        (payload([group(tag_columns=[["x"], "ifname"])]), "bad_type"),
        (payload([group(tag_columns=["ifname", "ifname"])]), "bad_point"),
        (payload([group(tag_columns=["device", "ifname"])]), "bad_point"),
        (payload([group(tags={"device": ""})]), "bad_tag_value"),
        (payload([group(tags={"device": 1})]), "bad_type"),
        (payload([group(field_columns=[])]), "bad_point"),
        (payload([group(field_columns=["Bad Key", "b", "c", "d"])]), "bad_key"),
        (payload([group(field_columns=[1, "b", "c", "d"])]), "bad_type"),
        (payload([group(field_columns=["a", "a", "c", "d"])]), "bad_point"),
        (payload([group(field_columns=[f"f{i}" for i in range(65)])]), "too_many_fields"),
        (payload([group(tag_columns=["ifname"] * 17)]), "too_many_tags"),
        (payload([group(rows=[])]), "bad_point"),
        (payload([group(rows=[{"a": 1}])]), "bad_type"),
        (payload([group(rows=[["1", "Gi0/1", 1, 1.0, "x"]])]), "bad_point"),
        (payload([group(rows=[["1", "Gi0/1", None, None, None, None]])]), "bad_point"),
        (payload([group(rows=[[1, "Gi0/1", 1, 1.0, "x", True]])]), "bad_type"),
        (payload([group(rows=[["", "Gi0/1", 1, 1.0, "x", True]])]), "bad_tag_value"),
        (payload([group(rows=[["1", "G" * 300, 1, 1.0, "x", True]])]), "bad_tag_value"),
        (payload([group(rows=[["1", "Gi0/1", [1], 1.0, "x", True]])]), "bad_type"),
        (payload([group(rows=[["1", "Gi0/1", 1, 1.0, "x" * 2000, True]])]), "bad_field_value"),
        (payload([group(rows=[["1", "Gi0/1", BIG, 1.0, "x", True]])]), "bad_field_value"),
        (payload([group(rows=[["1", "Gi0/1", 10**25, 1.0, "x", True]])]), "bad_field_value"),
        (payload([group(rows=[["1", "Gi0/1", -BIG - 1, 1.0, "x", True]])]), "bad_field_value"),
        (payload([group(rows=[["1", "Gi0/1", 1, 1.0, "x", True]] * 5001)]), "too_many_points"),
        (payload([{"measurement": "agent", "time_ns": NOW, "field_columns": ["x"],
                   "rows": [[1]]}] * 5001), "too_many_points"),
        (payload([group(rows=[["1", "Gi0/1", 1, 1.0, "x", True]])]).replace(b"1.0", b"1e999"),
         "bad_number"),
        (payload(v=2, points=[]).replace(b'"groups"', b'"nothing"'), "bad_type"),
    ],
)
def test_hostile_groups_are_rejected_with_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as exc:
        decode_batch(data, now_ns=NOW)
    assert exc.value.reason == reason


@pytest.mark.parametrize("value", [BIG - 1, -BIG, 9_999_999_999_999_999, 1_763_712_000_000_000_000])
def test_integers_within_64_bits_pass_even_with_19_digits(value: int) -> None:
    g = group(rows=[["1", "Gi0/1", value, 1.0, "x", True]])
    b = decode_batch(payload([g, group(time_ns=NOW - 1)]), now_ns=NOW)
    assert b.points[0].fields["in_octets"] == value


def test_a_19_digit_integer_beside_timestamps_is_still_checked() -> None:
    # Two groups, two 19-digit timestamps, and one 19-digit value beyond 64 bits: the
    # digit-run count must not let it through.
    g = group(rows=[["1", "Gi0/1", BIG, 1.0, "x", True]])
    with pytest.raises(WireError, match="bad_field_value"):
        decode_batch(payload([group(), g]), now_ns=NOW)


# -- the fast row checks against the reference, on random and hostile rows -------------

LIMITS = Limits(max_tags=4, max_fields=5, max_tag_value_len=4, max_string_field_len=4)
values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.lists(st.integers(), max_size=1), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=1),
)
tag_values = st.one_of(st.sampled_from(["a", "", "abcdef", None]), st.integers(), st.none())


@st.composite
def groups(draw: st.DrawFn) -> wire_groups._GroupHead:
    nt = draw(st.integers(0, 2))
    nf = draw(st.integers(1, 3))
    row = st.builds(lambda t, f: t + f, st.lists(tag_values, min_size=nt, max_size=nt),
                    st.lists(values, min_size=nf, max_size=nf))
    odd_row = st.one_of(st.lists(values, min_size=1, max_size=nt + nf + 1).filter(
        lambda r: len(r) != nt + nf), st.integers(), st.none())
    uniform = draw(st.booleans())
    if uniform:  # one row repeated: the whole-group path
        rows = [draw(row)] * draw(st.integers(1, 4))
    else:
        rows = draw(st.lists(st.one_of(row, row, odd_row), min_size=1, max_size=4))
    return wire_groups._GroupHead("interface", NOW, {"device": "sw"},
                           ("ifindex", "ifname")[:nt], tuple(f"f{i}" for i in range(nf)),
                           rows, "groups[0]")


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except WireError as exc:
        return ("error", exc.reason)


def reference(g: wire_groups._GroupHead) -> Any:
    return outcome(lambda: [wire_groups.check_row(r, j, g, LIMITS) for j, r in enumerate(g.rows)])


@settings(max_examples=400, deadline=None)
@given(groups())
def test_fast_row_checks_match_the_reference(g: wire_groups._GroupHead) -> None:
    fast = outcome(wire_groups.check_rows, g, LIMITS, False, False)
    want = reference(g)
    got = ("ok", list(fast[1].points)) if fast[0] == "ok" else fast
    assert got == want
    if fast[0] == "ok":
        assert all(type(p) is Point for p in fast[1].points)
        assert fast[1].types == tuple(tuple(map(type, r)) for r in g.rows)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["interface", "device", "agent"]),
                          st.integers(0, 2),
                          st.dictionaries(st.sampled_from(["device", "ifname", "ifindex"]),
                                          st.sampled_from(["a", "b"]), max_size=3),
                          st.dictionaries(st.sampled_from(["x", "y", "z", "w"]),
                                          st.one_of(st.integers(-5, 5), st.floats(0, 1),
                                                    st.booleans(), st.text(max_size=3)),
                                          min_size=1, max_size=4)),
                max_size=12))
def test_any_valid_points_survive_v2_as_they_survive_v1(
        spec: list[tuple[str, int, dict[str, str], dict[str, Any]]]) -> None:
    pts = [Point(m, {k: v for k, v in tags.items() if k in MEASUREMENT_TAGS[m]}, fields,
                 NOW + dt) for m, dt, tags, fields in spec]
    limits = Limits(max_tags=2, max_fields=3)
    pts = [p for p in pts if len(p.tags) <= 2 and len(p.fields) <= 3]
    v1 = decode_batch(encode_batch(Batch("s", 1, tuple(pts), v=BATCH_V1), limits), limits,
                      now_ns=NOW)
    v2 = decode_batch_groups(encode_batch(Batch("s", 1, tuple(pts), v=BATCH_V2), limits),
                             limits, now_ns=NOW)
    assert v2.count == len(pts)  # before any point is built
    assert list(v1.points) == list(v2.points) == pts
