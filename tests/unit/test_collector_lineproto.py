"""Line protocol: escaping table, value types, and the fast encoder equals the reference."""

from __future__ import annotations

import random
import string

import pytest

from collector.lineproto import (
    GroupEncoder,
    LineEncoder,
    LineProtocolError,
    encode_line,
    escape_key,
    escape_measurement,
    format_field_value,
)
from collector.samples import switch_points
from schoolnet.wire import (
    Batch,
    FieldValue,
    Limits,
    Point,
    PointGroup,
    decode_batch_groups,
    encode_batch,
)
from schoolnet.wire_groups import group_points

T = 1_763_712_000_000_000_000


@pytest.mark.parametrize(("raw", "escaped"), [
    ("plain", "plain"),
    ("a,b", "a\\,b"),
    ("a b", "a\\ b"),
    ("a=b", "a\\=b"),
    ("back\\slash", "back\\\\slash"),
    ("trailing\\", "trailing\\\\"),
    ('"quoted"', '"quoted"'),
    ("new\nline", "new\\nline"),
    ("cr\rtab\t", "cr\\rtab\\t"),
    ("Gi0/1 uplink, floor=2", "Gi0/1\\ uplink\\,\\ floor\\=2"),
    ("Ümlaut ß", "Ümlaut\\ ß"),
])
def test_tag_keys_and_values_are_escaped(raw: str, escaped: str) -> None:
    assert escape_key(raw) == escaped


@pytest.mark.parametrize(("raw", "escaped"), [
    ("interface", "interface"),
    ("a,b c", "a\\,b\\ c"),
    ("a=b", "a=b"),  # '=' needs no escape in a measurement
    ("x\ny", "x\\ny"),
])
def test_measurement_is_escaped(raw: str, escaped: str) -> None:
    assert escape_measurement(raw) == escaped


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"),
    (False, "false"),
    (0, "0i"),
    (-5, "-5i"),
    (2**63 - 1, "9223372036854775807i"),
    (-(2**63), "-9223372036854775808i"),
    (1.5, "1.5"),
    (3.0, "3.0"),
    (1e16, "1e+16"),
    (-2.5e-07, "-2.5e-07"),
    ("room 1", '"room 1"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("C:\\path\\", '"C:\\\\path\\\\"'),
    ("two\nlines", '"two\\nlines"'),
    ("", '""'),
])
def test_field_values_by_type(value: FieldValue, text: str) -> None:
    assert format_field_value(value) == text


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, float("nan"), float("inf"),
                                   float("-inf"), None, b"bytes"])
def test_values_line_protocol_cannot_carry_are_refused(value: object) -> None:
    with pytest.raises(LineProtocolError):
        format_field_value(value)  # type: ignore[arg-type]
    p = Point("m", {"t": "v"}, {"f": value}, T)  # type: ignore[dict-item]
    with pytest.raises(LineProtocolError):
        LineEncoder().encode(p, {"site": "s"})


def test_a_whole_line_sorts_tags_and_ends_with_the_timestamp() -> None:
    line = encode_line("interface", {"site": "s1", "device": "sw 1", "ifname": "Gi0/1"},
                       {"in_octets": 5, "up": True, "alias": "x,y"}, T)
    assert line == (f'interface,device=sw\\ 1,ifname=Gi0/1,site=s1 '
                    f'in_octets=5i,up=true,alias="x,y" {T}')


def test_empty_tag_values_are_left_out_and_a_point_needs_a_field() -> None:
    assert encode_line("m", {"a": "", "b": "1"}, {"f": 1.0}) == "m,b=1 f=1.0"
    with pytest.raises(LineProtocolError):
        encode_line("m", {"a": "1"}, {})


def test_extra_tags_win_over_point_tags() -> None:
    p = Point("device", {"device": "sw", "role": "ap", "site": "forged"}, {"up": 1}, T)
    line = LineEncoder().encode(p, {"tenant": "t", "site": "real", "role": "switch"})
    assert line == f"device,device=sw,role=switch,site=real,tenant=t up=1i {T}"


HOSTILE = [",", " ", "=", "\\", "\n", "\r", "\t", '"', "é", "%", "%s", "a"]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(HOSTILE + list(string.ascii_letters)) for _ in range(rng.randint(1, 8)))


def test_fast_encoder_equals_the_reference_on_random_hostile_points() -> None:
    rng = random.Random(7)
    enc = LineEncoder(max_layouts=8)  # small: the eviction path is exercised too
    for _ in range(2000):
        tags = {_random_text(rng): _random_text(rng) for _ in range(rng.randint(0, 4))}
        fields: dict[str, FieldValue] = {}
        for _ in range(rng.randint(1, 5)):
            fields[_random_text(rng)] = rng.choice([
                rng.randint(-(2**63), 2**63 - 1), rng.uniform(-1e20, 1e20), rng.random(),
                rng.choice([True, False]), _random_text(rng), ""])
        extra = {"tenant": "t", "site": _random_text(rng)}
        p = Point(_random_text(rng), tags, fields, rng.randint(0, 2**62))
        assert enc.encode(p, extra) == encode_line(p.measurement, {**tags, **extra}, fields,
                                                   p.time_ns)


def test_no_value_can_break_a_line() -> None:
    enc = LineEncoder()
    nasty = "a\nb\r\nc\\\n"
    p = Point("m\n", {"k\n": nasty}, {"f\n": nasty, "g": 1}, T)
    line = enc.encode(p, {"site": nasty})
    assert "\n" not in line and "\r" not in line


def test_a_switch_poll_encodes_every_port() -> None:
    points = switch_points(ports=48, time_ns=T)
    lines = LineEncoder().encode_all(points, {"tenant": "t", "site": "s"})
    assert len(lines) == 49
    assert lines[1].startswith("interface,device=core-sw,ifindex=10101,ifname=Gi0/1,role=switch,"
                               "site=s,tenant=t,vendor=cisco in_octets=")
    assert lines[1].endswith(f'alias="Room 1" {T}')


def _group(points: list[Point]) -> PointGroup:
    """A PointGroup as decode_batch_groups makes it (without the wire's checks)."""
    (g,) = group_points(points, Limits(max_tags=1000, max_fields=1000))
    rows, fcols = tuple(g["rows"]), tuple(g["field_columns"])
    decoded = tuple(Point(p.measurement, p.tags, {k: p.fields[k] for k in fcols if k in p.fields},
                          p.time_ns) for p in points)  # fields in column order, as decoded
    return PointGroup(g["measurement"], g["time_ns"], g["tags"], tuple(g["tag_columns"]),
                      fcols, rows, tuple(tuple(map(type, r)) for r in rows), decoded)


def test_group_encoder_equals_the_reference_on_random_hostile_groups() -> None:
    rng = random.Random(11)
    enc = GroupEncoder(max_layouts=8)  # small: the eviction path is exercised too
    tag_keys = [_random_text(rng) for _ in range(5)] + ["site", "role"]
    field_keys = [_random_text(rng) for _ in range(5)]
    for _ in range(1500):
        measurement = _random_text(rng)
        points = []
        for _ in range(rng.randint(1, 5)):
            tags = {k: rng.choice([_random_text(rng), "a", "", "Gi0/1"])
                    for k in rng.sample(tag_keys, rng.randint(0, 4))}
            keys = sorted(rng.sample(range(len(field_keys)), rng.randint(1, 4)))
            fields: dict[str, FieldValue] = {field_keys[k]: rng.choice([
                rng.randint(-(2**63), 2**63 - 1), rng.uniform(-1e20, 1e20), 7,
                rng.choice([True, False]), _random_text(rng), "", "plain"]) for k in keys}
            points.append(Point(measurement, tags, fields, T))
        extra = rng.choice([{"tenant": "t", "site": _random_text(rng)},
                            {"tenant": "t", "site": "s", "role": "switch", "vendor": ""}])
        group = _group(points)
        assert enc.encode(group, extra) == [
            encode_line(p.measurement, {**p.tags, **extra}, p.fields, p.time_ns)
            for p in group.points]


def test_group_encoder_writes_a_switch_poll_like_the_point_encoder() -> None:
    points = switch_points(ports=48, time_ns=T)
    extra = {"tenant": "t", "site": "s", "role": "switch", "vendor": "hp"}
    data = encode_batch(Batch("s", 1, tuple(points)))
    groups = decode_batch_groups(data, now_ns=T).groups
    lines = [line for g in groups for line in GroupEncoder().encode(g, extra)]
    assert all(g._points is None for g in groups)  # lines need no Point objects
    assert lines == LineEncoder().encode_all(points, extra)
    assert len(lines) == 49 and "\n" not in "".join(lines)
