"""Fuzzing the payload decoder and the collector's validation with hypothesis.

Whatever a site credential can publish, ``decode_batch`` either returns a batch whose
every point passes the contract's own point check, or raises ``WireError`` with a
reason the collector documents; ``Validator.handle`` never raises, and every line it
returns is one line of line protocol. Valid batches survive encode/decode unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.metrics import CollectorMetrics
from collector.validate import Validator
from schoolnet.inventory import load_inventory
from schoolnet.wire import (
    MEASUREMENT_TAGS,
    Batch,
    Point,
    WireError,
    check_point,
    decode_batch,
    encode_batch,
)
from tests.collector_support import write_inventory

NOW = 1_763_712_000_000_000_000
DOCS = Path(__file__).resolve().parents[2] / "docs" / "collector.md"
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def documented_reasons() -> set[str]:
    """The drop reasons in docs/collector.md's table (first column, in backticks)."""
    text = DOCS.read_text()
    table = text[text.index("## Drop reasons"):]
    table = table[:table.index("\n## ", 5)]
    return {r for row in table.splitlines() if row.startswith("| `")
            for r in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


REASONS = documented_reasons()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=25)

field_values = st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), st.text(max_size=40),
                         st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def valid_points(draw: st.DrawFn) -> Point:
    m = draw(st.sampled_from(sorted(MEASUREMENT_TAGS)))
    keys = sorted(MEASUREMENT_TAGS[m])
    tags = draw(st.dictionaries(st.sampled_from(keys), st.text(min_size=1, max_size=30),
                                max_size=min(len(keys), 16)))
    fields = draw(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
                                  field_values, min_size=1, max_size=8))
    t = NOW + draw(st.integers(-(10**15), 10**11))
    return Point(m, tags, fields, t)


batches = st.builds(lambda pts, seq: Batch(site="gy", seq=seq, points=tuple(pts), epoch="e1"),
                    st.lists(valid_points(), min_size=0, max_size=4), st.integers(0, 2**40))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid payload with one random spot replaced by arbitrary JSON."""
    doc: Any = json.loads(encode_batch(draw(batches)))
    holder, key = None, None
    node = doc
    for _ in range(draw(st.integers(1, 6))):
        if isinstance(node, dict) and node:
            k = draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            k = draw(st.integers(0, len(node) - 1))
        else:
            break
        holder, key, node = node, k, node[k]
    if holder is None:
        return json.dumps(draw(json_values)).encode()
    holder[key] = draw(json_values)
    return json.dumps(doc).encode()


def assert_contract(payload: bytes) -> None:
    try:
        batch = decode_batch(payload, now_ns=NOW)
    except WireError as exc:
        assert exc.reason in REASONS, f"undocumented reason {exc.reason!r}"
        return
    for p in batch.points:
        check_point(p, now_ns=NOW)  # nothing the checker would refuse got through


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_batch_or_a_documented_reason(payload: bytes) -> None:
    assert_contract(payload)


@FUZZ
@given(json_values)
def test_arbitrary_json_is_a_batch_or_a_documented_reason(value: object) -> None:
    assert_contract(json.dumps(value).encode())


@FUZZ
@given(mutated())
def test_a_valid_batch_with_any_part_replaced_never_gets_past_the_checks(payload: bytes) -> None:
    assert_contract(payload)


@FUZZ
@given(batches)
def test_valid_batches_survive_encode_and_decode_unchanged(batch: Batch) -> None:
    got = decode_batch(encode_batch(batch), now_ns=NOW)
    assert (got.site, got.seq, got.epoch) == (batch.site, batch.seq, batch.epoch)
    assert [(p.measurement, dict(p.tags), dict(p.fields), p.time_ns) for p in got.points] == [
        (p.measurement, dict(p.tags), dict(p.fields), p.time_ns) for p in batch.points]


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    root = tmp_path_factory.mktemp("inv")
    write_inventory(root, "herne", {"gy": [("core-sw", "switch", "hp")]})
    return Validator(load_inventory(root, resolve_secrets=False), CollectorMetrics(),
                     wall_clock_ns=lambda: NOW)


topics = st.one_of(
    st.just("schoolnet/v1/herne/gy/metrics"), st.just("schoolnet/v1/herne/gy/status"),
    st.just("schoolnet/v1/herne/gy/metrics/core-sw"),
    st.builds(lambda parts: "/".join(parts), st.lists(st.text(max_size=12), max_size=8)))


@FUZZ
@given(topics, st.one_of(mutated(), st.binary(max_size=200),
                         batches.map(lambda b: encode_batch(b))))
def test_the_validator_never_raises_and_emits_only_single_lines(
    validator: Validator, topic: str, payload: bytes,
) -> None:
    verdict = validator.handle(topic, payload)
    if verdict.dropped:
        assert verdict.reason in REASONS and not verdict.lines
    for line in verdict.lines:
        assert "\n" not in line and "\r" not in line
        assert line.split(",", 1)[0].split(" ", 1)[0] in MEASUREMENT_TAGS
