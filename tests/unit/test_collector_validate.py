"""Validation: every drop reason, trusted tags, seq duplicates, rate-limited logging."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from collector.metrics import CollectorMetrics
from collector.samples import switch_payload
from collector.validate import RateLimitedLog, Validator
from schoolnet.inventory import load_inventory
from schoolnet.wire import Limits, Status, encode_status
from tests.collector_support import write_inventory

NOW = 1_763_712_000_000_000_000
TOPIC = "schoolnet/v1/herne/gy/metrics"


@pytest.fixture()
def validator(tmp_path: Path) -> Validator:
    write_inventory(tmp_path, "herne", {
        "gy": [("core-sw", "switch", "hp"), ("router", "router", "")],
        "gs": [("ap1", "ap", "aruba")],
    })
    inv = load_inventory(tmp_path, resolve_secrets=False)
    return Validator(inv, CollectorMetrics(), limits=Limits(max_payload_bytes=64 * 1024),
                     wall_clock_ns=lambda: NOW)


def payload(site: str = "gy", seq: int = 1, **over: Any) -> bytes:
    doc = json.loads(switch_payload(site, seq, ports=2, time_ns=NOW))
    doc.update(over)
    return json.dumps(doc).encode()


def point_payload(tags: dict[str, str], measurement: str = "device") -> bytes:
    p = {"measurement": measurement, "tags": tags, "fields": {"up": 1}, "time_ns": NOW}
    return json.dumps({"v": 1, "site": "gy", "seq": 9, "points": [p]}).encode()


@pytest.mark.parametrize(("topic", "data", "reason"), [
    ("schoolnet/v1/herne/gy", payload(), "bad_topic"),
    ("other/v1/herne/gy/metrics", payload(), "bad_topic"),
    ("schoolnet/v1/herne/nope/metrics", payload(), "unknown_site"),
    ("schoolnet/v1/dortmund/gy/metrics", payload(), "unknown_site"),
    (TOPIC, b"{not json", "not_json"),
    (TOPIC, b"[1, 2]", "bad_type"),
    (TOPIC, payload(seq="7"), "bad_type"),
    (TOPIC, payload(v=2), "bad_version"),
    (TOPIC, b" " * (64 * 1024 + 1), "too_large"),
    (TOPIC, payload(site="gs"), "site_mismatch"),
    (TOPIC, point_payload({"device": "ghost"}), "unknown_device"),
    ("schoolnet/v1/herne/gy/metrics/ghost", payload(), "unknown_device"),
    ("schoolnet/v1/herne/gy/metrics/router", payload(), "unknown_device"),
    (TOPIC, point_payload({"device": "core-sw", "site": "gs"}), "topic_tag"),
    (TOPIC, point_payload({}, measurement="bogus"), "unknown_measurement"),
    ("schoolnet/v1/herne/gy/status", b'{"v":1,"site":"gy","state":"dancing"}', "bad_status"),
    ("schoolnet/v1/herne/gy/status", encode_status(Status(site="gs", state="online")),
     "site_mismatch"),
])
def test_each_bad_message_is_dropped_with_its_reason(validator: Validator, topic: str,
                                                     data: bytes, reason: str) -> None:
    v = validator.handle(topic, data)
    assert v.dropped and v.reason == reason and v.lines == []
    assert validator.metrics.dropped.get(reason) == 1
    # The stream goes on: the next good message is accepted.
    assert not validator.handle(TOPIC, payload(seq=100)).dropped


def test_an_integer_line_protocol_cannot_carry_is_a_bad_field_value(validator: Validator) -> None:
    p = {"measurement": "device", "tags": {"device": "router"}, "fields": {"c": 2**64},
         "time_ns": NOW}
    data = json.dumps({"v": 1, "site": "gy", "seq": 1, "points": [p]}).encode()
    assert validator.handle(TOPIC, data).reason == "bad_field_value"


def test_tenant_and_site_come_from_the_topic_role_and_vendor_from_the_inventory(
    validator: Validator,
) -> None:
    v = validator.handle(TOPIC, payload())
    assert not v.dropped and v.points == 3 and len(v.lines) == 3
    assert v.lines[0].startswith(
        "device,device=core-sw,role=switch,site=gy,tenant=herne,vendor=hp ")
    # A device without an inventory vendor keeps the payload's.
    v = validator.handle(TOPIC, point_payload({"device": "router", "role": "ap",
                                               "vendor": "mikrotik"}))
    assert v.lines[0].startswith("device,device=router,role=router,site=gy,tenant=herne,"
                                 "vendor=mikrotik ")


def test_a_device_topic_accepts_that_device_only(validator: Validator) -> None:
    assert not validator.handle(f"{TOPIC}/core-sw", payload()).dropped


def test_duplicates_are_skipped_and_counted_gaps_are_visible(validator: Validator) -> None:
    for seq in (1, 2, 5):
        assert validator.handle(TOPIC, payload(seq=seq)).lines
    dup = validator.handle(TOPIC, payload(seq=2))
    assert dup.duplicate and dup.lines == [] and not dup.dropped
    assert validator.metrics.duplicates.get("herne", "gy") == 1
    state = validator.sites[("herne", "gy")]
    assert (state.seq.gaps, state.messages, state.points) == (2, 3, 9)
    assert 'schoolnet_collector_seq_gaps{tenant="herne",site="gy"} 2' in \
        validator.metrics.registry.render()


def test_status_topic_sets_online_and_offline(validator: Validator) -> None:
    topic = "schoolnet/v1/herne/gs/status"
    validator.handle(topic, encode_status(Status(site="gs", state="online", time_ns=NOW - 5)))
    state = validator.sites[("herne", "gs")]
    assert (state.state, state.state_since_ns) == ("online", NOW - 5)
    validator.handle(topic, encode_status(Status(site="gs", state="offline")))
    assert (state.state, state.state_since_ns, state.last_seen_ns) == ("offline", NOW, NOW)


def test_drops_are_logged_at_most_once_per_reason_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t.rl"), 60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t.rl"):
        assert rl.warning("not_json", "first")
        assert not rl.warning("not_json", "second")
        assert rl.warning("too_large", "other reason")
        now[0] = 61
        assert rl.warning("not_json", "third")
    assert [r.getMessage() for r in caplog.records] == [
        "first", "other reason", "third (and 1 more since the last report)"]
