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


def _budget_validator(tmp_path: Path, limit: int, clock: list[float]) -> Validator:
    write_inventory(tmp_path, "herne", {"gy": [("core-sw", "switch", "hp")],
                                        "gs": [("ap1", "ap", "aruba")]})
    inv = load_inventory(tmp_path, resolve_secrets=False)
    return Validator(inv, CollectorMetrics(), limits=Limits(max_payload_bytes=1 << 20),
                     wall_clock_ns=lambda: NOW, monotonic=lambda: clock[0],
                     max_series_per_site=limit, series_window_s=100.0)


def _bomb(seq: int, first: int, count: int, v: int) -> bytes:
    """A poll of core-sw plus ``count`` interfaces with fresh names from ``first`` on."""
    points = switch_points(ports=4, time_ns=NOW)
    points += [Point("interface", {"device": "core-sw", "ifindex": str(i), "ifname": f"x{i}"},
                     {"in_octets": i}, NOW) for i in range(first, first + count)]
    return encode_batch(Batch(site="gy", seq=seq, points=tuple(points), epoch="e1", v=v))


@pytest.mark.parametrize("v", [BATCH_V1, BATCH_V2])
def test_series_budget_drops_new_series_and_keeps_known_ones(tmp_path: Path, v: int) -> None:
    clock = [0.0]
    val = _budget_validator(tmp_path, 20, clock)
    known = switch_payload("gy", 1, v=v, ports=4, time_ns=NOW)  # 5 series
    assert val.handle(TOPIC, known).points == 5
    # A cardinality bomb: 1,000 new interface names; 15 fit, 985 are dropped.
    bomb = val.handle(TOPIC, _bomb(2, 0, 1000, v))
    assert not bomb.dropped and bomb.points == 5 + 15 and len(bomb.lines) == 20
    assert len(bomb.decoded) == 20  # the outage engine sees only what is written
    assert val.metrics.dropped_points.get("series_budget") == 985
    state = val.sites[("herne", "gy")]
    assert state.to_json()["series"] == 20 and state.series_dropped == 985
    # Known series keep flowing, new ones stay out; other sites have their own budget.
    again = val.handle(TOPIC, _bomb(3, 0, 1000, v))
    assert again.points == 20 and val.metrics.dropped_points.get("series_budget") == 1970
    assert val.handle(TOPIC, switch_payload("gy", 4, v=v, ports=4, time_ns=NOW)).points == 5
    other = encode_batch(Batch(site="gs", seq=1, epoch="e1", v=v, points=tuple(
        Point("interface", {"device": "ap1", "ifname": f"w{i}"}, {"in_octets": 1}, NOW)
        for i in range(20))))
    assert val.handle("schoolnet/v1/herne/gs/metrics", other).points == 20
    assert 'schoolnet_collector_site_series{tenant="herne",site="gy"} 20' in (
        val.metrics.registry.render())


def test_series_budget_logs_at_most_once_per_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    val = _budget_validator(tmp_path, 10, [0.0])
    with caplog.at_level(logging.WARNING, logger="schoolnet.collector"):
        for seq in range(1, 6):
            val.handle(TOPIC, _bomb(seq, seq * 100, 50, BATCH_V2))
    lines = [r.getMessage() for r in caplog.records if "series_budget" in r.getMessage()]
    assert len(lines) == 1 and "max_series_per_site" in lines[0]


def test_series_not_seen_for_two_windows_are_forgotten(tmp_path: Path) -> None:
    clock = [0.0]
    val = _budget_validator(tmp_path, 10, clock)
    assert val.handle(TOPIC, _bomb(1, 0, 5, BATCH_V2)).points == 10  # budget full
    assert val.handle(TOPIC, _bomb(2, 100, 5, BATCH_V2)).points == 5
    clock[0] = 150.0  # next window: the known ones move over, still full
    assert val.handle(TOPIC, _bomb(3, 0, 5, BATCH_V2)).points == 10
    assert val.handle(TOPIC, _bomb(4, 100, 5, BATCH_V2)).points == 5
    clock[0] = 300.0  # the switch lost x0..x4 for good; after two windows they are gone
    assert val.handle(TOPIC, switch_payload("gy", 5, ports=4, time_ns=NOW)).points == 5
    clock[0] = 450.0
    assert val.handle(TOPIC, _bomb(6, 100, 5, BATCH_V2)).points == 10
