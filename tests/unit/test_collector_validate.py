"""Validation: every drop reason, trusted tags, seq duplicates, rate-limited logging."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from collector.metrics import CollectorMetrics
from collector.samples import switch_payload, switch_points
from collector.validate import RateLimitedLog, Validator
from schoolnet.inventory import load_inventory
from schoolnet.wire import (
    BATCH_V1,
    BATCH_V2,
    Batch,
    Limits,
    Point,
    Status,
    encode_batch,
    encode_status,
)
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
    (TOPIC, payload(v=3), "bad_version"),
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


def _both_forms(points: tuple[Point, ...], seq: int) -> list[bytes]:
    return [encode_batch(Batch("gy", seq, points, "e", v=v)) for v in (BATCH_V1, BATCH_V2)]


@pytest.mark.parametrize("device_topic", [False, True])
def test_v1_and_v2_payloads_give_the_same_lines_and_points(validator: Validator,
                                                           device_topic: bool) -> None:
    points = switch_points("core-sw", ports=3, time_ns=NOW, vendor="payload-vendor")
    points.append(Point("snmp_error", {"device": "core-sw", "table": "lldp", "error": "a b,c"},
                        {"count": 1, "msg": 'say "hi"\n'}, NOW))
    if not device_topic:  # a group with a device column: two devices, one timestamp
        points.insert(1, Point("device", {"device": "router"}, {"reachable": False}, NOW))
        points.append(Point("agent", {"version": "1.0"}, {"queue": 0}, NOW))
    topic = f"{TOPIC}/core-sw" if device_topic else TOPIC
    v1 = validator.handle(topic, _both_forms(tuple(points), 1)[0])
    v2 = validator.handle(topic, _both_forms(tuple(points), 2)[1])
    assert not v1.dropped and not v2.dropped
    assert v2.lines == v1.lines and len(v1.lines) == len(points)
    assert v2.decoded == v1.decoded == tuple(points)
    assert v1.lines[1].startswith("device,device=router,role=router,site=gy,tenant=herne "
                                  if not device_topic else "interface,device=core-sw,")


@pytest.mark.parametrize("form", [BATCH_V1, BATCH_V2])
def test_a_foreign_device_is_dropped_in_either_form(validator: Validator, form: int) -> None:
    ghost = (Point("device", {"device": "core-sw"}, {"up": 1}, NOW),
             Point("device", {"device": "ghost"}, {"up": 1}, NOW))
    assert validator.handle(TOPIC, _both_forms(ghost, 1)[form - 1]).reason == "unknown_device"
    other = (Point("device", {"device": "router"}, {"up": 1}, NOW),)
    assert validator.handle(f"{TOPIC}/core-sw",
                            _both_forms(other, 2)[form - 1]).reason == "unknown_device"
