"""The C extension schoolnet._speedups gives exactly what the Python code it replaces gives.

Both sides are production code: the C functions run wherever the extension was built
(everywhere ./scripts/setup ran with a C compiler), the Python ones elsewhere. Each C
function is compared with its Python reference on random and hostile input.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import lineproto, validate
from collector.lineproto import GroupEncoder
from collector.samples import switch_points
from schoolnet import wire_groups
from schoolnet.wire import (
    DEFAULT_LIMITS,
    Batch,
    Point,
    PointGroup,
    decode_batch_groups,
    encode_batch,
)
from tests.unit.test_wire_groups import groups

try:
    from schoolnet import _speedups
except ImportError:  # pragma: no cover - the test below says why this matters
    _speedups = None  # type: ignore[assignment]

LIMITS = DEFAULT_LIMITS
T = 1_700_000_000_000_000_000


def test_the_extension_is_built_and_used() -> None:
    # Without it the collector still works, at ~2.5x the CPU per message
    # (bench/collector_cpu.py): a silent build failure must not go unnoticed here.
    assert _speedups is not None, "schoolnet._speedups not built: is a C compiler installed?"
    assert wire_groups.uniform_types is _speedups.uniform_types
    assert lineproto._format_rows_c is _speedups.format_rows
    assert validate._row_keys_c is _speedups.row_keys


needs_c = pytest.mark.skipif(_speedups is None, reason="schoolnet._speedups not built")


def _c_and_py(rows: list[Any], nt: int, nf: int, check: bool) -> tuple[Any, Any]:
    args = (rows, nt, nf, LIMITS.max_tag_value_len, LIMITS.max_string_field_len, check, check)
    assert _speedups is not None
    return _speedups.uniform_types(*args), wire_groups.uniform_types_py(*args)


@needs_c
@settings(max_examples=600, deadline=None)
@given(groups(), st.booleans())
def test_uniform_types_matches_its_python_reference(g: wire_groups._GroupHead,
                                                    check: bool) -> None:
    c, py = _c_and_py(g.rows, len(g.tag_columns), len(g.field_columns), check)
    assert c == py


@needs_c
@pytest.mark.parametrize("value", [
    float("nan"), float("inf"), -float("inf"), 2**63, -(2**63) - 1, None, "", "x" * 5000,
    True, [], {}, 1.5, 7, "ok"])
def test_uniform_types_refuses_what_the_checks_refuse(value: Any) -> None:
    for column in range(3):
        rows = [["Gi0/1", 1, 2.5], ["Gi0/2", 3, 4.5]]
        rows[1][column] = value
        c, py = _c_and_py(rows, 1, 2, True)
        assert c == py, (column, value)


_FLOAT_BITS = st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("d", struct.pack("Q", b))[0])
_METRIC_FLOATS = st.builds(lambda n, k: n / 10**k, st.integers(-(2**53), 2**53), st.integers(0, 4))


def _fmt(value: Any, kind: bytes) -> str | None:
    assert _speedups is not None
    got = _speedups.format_rows([[value]], (0,), kind, (b"x=", b""), b"")
    return None if got is None else got[0].removeprefix("x=")


@needs_c
@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), _FLOAT_BITS, _METRIC_FLOATS,
                 st.floats(-(2.0**44), 2.0**44).map(lambda f: round(f, 3))))
def test_floats_are_written_exactly_as_repr(value: float) -> None:
    if math.isfinite(value):
        assert _fmt(value, b"f") == repr(value)
    else:
        assert _fmt(value, b"f") is None  # not line protocol: the Python path refuses it


@needs_c
def test_floats_near_the_fast_path_edges() -> None:
    rng = random.Random(5)
    edges = [0.0, -0.0, 0.001, 0.0005, 0.1 + 0.2, 2.0**43, 2.0**43 - 0.001, 2.0**43 - 1,
             -(2.0**43) + 0.5, 1e15, 1e16, 9007199254740993.0, 5e-324]
    edges += [rng.randint(-(2**43) * 1000, 2**43 * 1000) / 1000 for _ in range(20000)]
    edges += [math.nextafter(x, math.inf) for x in edges[:5000]]
    assert [v for v in edges if _fmt(v, b"f") != repr(v)] == []


@needs_c
@settings(max_examples=1000, deadline=None)
@given(st.integers(-(2**70), 2**70))
def test_integers_are_written_like_python_within_64_bits(value: int) -> None:
    fits = -(2**63) <= value < 2**63
    assert _fmt(value, b"i") == (str(value) if fits else None)


@needs_c
def test_values_of_another_kind_or_needing_escapes_go_to_python() -> None:
    assert _fmt(True, b"i") is None and _fmt(1, b"f") is None and _fmt(1.0, b"i") is None
    assert _fmt(True, b"b") == "true" and _fmt(False, b"b") == "false" and _fmt(1, b"b") is None
    assert _fmt("Gi0/1", b"t") == "Gi0/1" and _fmt("Raum Ü", b"s") == "Raum Ü"
    for bad in ("", "a b", "a,b", "a=b", "a\\b", "a\nb", "a\tb", "a\rb"):
        assert _fmt(bad, b"t") is None, bad
    for bad in ('a"b', "a\\b", "a\nb", "a\tb"):
        assert _fmt(bad, b"s") is None, bad
    assert _fmt("a b,c=d", b"s") == "a b,c=d"  # fine inside a quoted string field
    assert _fmt("\ud800", b"t") is None  # a lone surrogate is not UTF-8


def _random_group(rng: random.Random) -> Any:
    n = rng.randint(1, 6)
    row_kinds = [rng.choice("ifbs") for _ in range(rng.randint(1, 5))]
    rows = []
    for _ in range(n):
        row: list[Any] = [rng.choice(["Gi0/1", "x y", "", "Ü", "a,b"]), str(rng.randint(1, 99))]
        for k in row_kinds:
            row.append({"i": lambda: rng.randint(-(2**63), 2**63 - 1),
                        "f": lambda: rng.choice([rng.uniform(-1e20, 1e20),
                                                 round(rng.uniform(0, 1e9), 3)]),
                        "b": lambda: rng.random() < 0.5,
                        "s": lambda: rng.choice(["plain", 'quo"te', "back\\slash", "",
                                                 "Raum 1"])}[k]())
        rows.append(row)
    head = wire_groups._GroupHead("interface", T, {"device": "sw"}, ("ifname", "ifindex"),
                                  tuple(f"f{i}" for i in range(len(row_kinds))), rows, "g")
    return wire_groups.check_rows(head, LIMITS, False, False)


@needs_c
def test_group_encoder_writes_the_same_lines_with_and_without_c(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    built = []
    for _ in range(3000):
        try:
            built.append(_random_group(rng))
        except Exception:  # rows the contract refuses (an empty tag): not this test's case
            continue
    extra = {"tenant": "t", "site": "s", "role": "switch"}
    with_c = [GroupEncoder().encode(g, extra) for g in built]
    monkeypatch.setattr(lineproto, "_format_rows_c", None)
    without = [GroupEncoder().encode(g, extra) for g in built]
    assert with_c == without
    assert len(built) > 1000


@needs_c
def test_a_switch_poll_decodes_and_encodes_the_same_with_and_without_c(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_batch(Batch("s", 1, tuple(switch_points(ports=48, time_ns=T))))
    extra = {"tenant": "t", "site": "s", "role": "switch", "vendor": "hp"}

    def lines() -> list[str]:
        groups = decode_batch_groups(data, now_ns=T).groups
        return [line for g in groups for line in GroupEncoder().encode(g, extra)]

    with_c = lines()
    monkeypatch.setattr(lineproto, "_format_rows_c", None)
    monkeypatch.setattr(wire_groups, "uniform_types", wire_groups.uniform_types_py)
    assert lines() == with_c and len(with_c) == 49


@needs_c
@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=2, max_size=2),
                min_size=1, max_size=6),
       st.dictionaries(st.sampled_from(["device", "role", "vendor"]), st.text(max_size=4)))
def test_series_hashes_match_their_python_reference(rows: list[list[Any]],
                                                    shared: dict[str, str]) -> None:
    g = PointGroup("interface", T, shared, ("ifindex", "ifname"), ("in_octets",),
                   tuple([*r, 1] for r in rows), tuple((str, str, int) for _ in rows))
    assert validate._group_keys(g) == validate._group_keys_py(g)
    # and a row hashes like the same point sent as v1 (one series, whatever the form)
    for row, key in zip(rows, validate._group_keys(g), strict=True):
        tags = {**shared, **{k: v for k, v in zip(("ifindex", "ifname"), row, strict=True)
                             if v is not None}}
        assert key == validate._point_key(Point("interface", tags, {"in_octets": 1}, T))
