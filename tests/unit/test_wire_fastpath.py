"""The fast paths in schoolnet.wire (orjson, _check_point_fast) decide exactly as before.

Differential tests: for random and hostile points, the fast check returns the same Point
or raises the same reason as the reference check; for hostile payload bytes, the parser
returns the same value or the same reason as the json module alone.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schoolnet import wire
from schoolnet.wire import DEFAULT_LIMITS, Limits, WireError

NOW = 1_763_712_000_000_000_000
LO, HI = NOW - 10**15, NOW + 10**12
LIMITS = Limits(max_tags=4, max_fields=5, max_tag_value_len=8, max_string_field_len=8)


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except WireError as exc:
        return ("error", exc.reason)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                          max_size=2),
)
keys = st.one_of(st.sampled_from(["device", "role", "ifname", "site", "tenant", "x", "in_bps",
                                  "Bad", "a b", ""]), st.text(max_size=6))
points = st.fixed_dictionaries(
    {},
    optional={
        "measurement": st.one_of(st.sampled_from(["interface", "device", "nope"]), scalars),
        "tags": st.one_of(st.dictionaries(keys, st.one_of(st.text(max_size=10), scalars),
                                          max_size=5), scalars),
        "fields": st.one_of(st.dictionaries(keys, scalars, max_size=6), scalars),
        "time_ns": st.one_of(st.integers(min_value=LO - 5, max_value=HI + 5), scalars),
        "junk": scalars,
    },
)


@settings(max_examples=300, deadline=None)
@given(points)
def test_fast_point_check_matches_the_reference(obj: dict[str, Any]) -> None:
    fast = outcome(wire._check_point_fast, obj, 0, LIMITS, LO, HI)
    ref = outcome(wire._check_point, obj, 0, LIMITS, LO, HI)
    assert fast == ref


def json_reference(payload: bytes) -> Any:
    """What the json module alone decides (the behaviour before orjson)."""
    saved = wire.orjson
    wire.orjson = None
    try:
        return outcome(wire._loads, payload, DEFAULT_LIMITS)
    finally:
        wire.orjson = saved


@pytest.mark.parametrize("payload", [
    b'{"a": 1}', b"NaN", b'{"x": Infinity}', b"-Infinity", b"1e999", b"[1e-999]",
    b"18446744073709551615", b"18446744073709551616", b"-9223372036854775808",
    b"-9223372036854775809", b"[123456789012345678901234567890]", b'{"a":1,"a":2}',
    b'"\\ud800"', b'"\xff"', b"\xef\xbb\xbf{}", '{"a": "ü"}'.encode("utf-16"),
    b'"a\x00b"', b"[" * 50 + b"]" * 50, b"[" * 5000 + b"]" * 5000, b"", b" ", b"{,}",
    b"01", b"-0", b"1E5", b"[1.0000000000000000000001]", b'{"t": 1763712000000000000}',
])
def test_parser_matches_the_json_module(payload: bytes) -> None:
    got = outcome(wire._loads, payload, DEFAULT_LIMITS)
    want = json_reference(payload)
    assert got == want
    if got[0] == "ok":
        assert json.dumps(got[1]) == json.dumps(want[1])  # same types (int stays int)


@settings(max_examples=300, deadline=None)
@given(st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=10))
def test_parser_matches_the_json_module_on_random_documents(doc: Any) -> None:
    payload = json.dumps(doc).encode()  # may contain NaN/Infinity: json.dumps allows them
    got = outcome(wire._loads, payload, DEFAULT_LIMITS)
    want = json_reference(payload)
    assert (got[0], json.dumps(got[1])) == (want[0], json.dumps(want[1]))
