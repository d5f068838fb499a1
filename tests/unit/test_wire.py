"""The wire contract: topics, batch round trips, and every rejection reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schoolnet.wire import (
    Batch,
    Limits,
    Point,
    SeqTracker,
    Status,
    Topic,
    WireError,
    decode_batch,
    decode_status,
    encode_batch,
    encode_status,
    parse_topic,
    split_points,
)

NOW = 1_763_712_000_000_000_000


def point(**over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "measurement": "interface",
        "tags": {"device": "core-sw", "role": "switch", "ifname": "Gi0/1", "ifindex": "1"},
        "fields": {"in_octets": 123, "in_bps": 1.5e6, "alias": "uplink", "up": True},
        "time_ns": NOW,
    }
    p.update(over)
    return p


def payload(points: list[Any] | None = None, **over: Any) -> bytes:
    doc: dict[str, Any] = {"v": 1, "site": "gs-park", "seq": 7, "points": points or [point()]}
    doc.update(over)
    return json.dumps(doc).encode()


def test_batch_round_trip_keeps_types() -> None:
    p = Point("interface", {"device": "sw", "ifname": "Gi0/1"},
              {"in_octets": 2**62, "in_bps": 0.0, "alias": "a,b c=d", "ok": False}, NOW)
    data = encode_batch(Batch(site="gs-park", seq=3, points=(p,), epoch="e1"))
    got = decode_batch(data, now_ns=NOW)
    assert got.seq == 3 and got.epoch == "e1" and got.site == "gs-park"
    assert got.points[0] == p
    assert type(got.points[0].fields["in_bps"]) is float
    assert type(got.points[0].fields["in_octets"]) is int


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "bad_type"),
        (payload(v=3), "bad_version"),
        (payload(v=True), "bad_version"),
        (payload(site="Gs Park"), "bad_type"),
        (payload(seq="7"), "bad_type"),
        (payload(seq=-1), "bad_type"),
        (payload(points={"a": 1}), "bad_type"),
        (payload([point(measurement="rm_rf")]), "unknown_measurement"),
        (payload([point(tags={"device": "sw", "site": "other"})]), "topic_tag"),
        (payload([point(tags={"device": "sw", "colour": "red"})]), "unknown_tag"),
        (payload([point(tags={"device": "x" * 300})]), "bad_tag_value"),
        (payload([point(tags={"device": 5})]), "bad_type"),
        (payload([point(fields={})]), "bad_point"),
        (payload([point(fields={"a": [1]})]), "bad_type"),
        (payload([point(fields={"a": {"b": 1}})]), "bad_type"),
        (payload([point(fields={"Bad Key": 1})]), "bad_key"),
        (payload([point(fields={"s": "x" * 2000})]), "bad_field_value"),
        (payload([point(fields={"c": 2**63})]), "bad_field_value"),
        (payload([point(fields={"c": -(2**63) - 1})]), "bad_field_value"),
        (payload([point(time_ns=NOW + 3600 * 10**9)]), "bad_time"),
        (payload([point(time_ns=NOW - 30 * 86400 * 10**9)]), "bad_time"),
        (payload([point(time_ns=1.5)]), "bad_type"),
        (payload([point(extra=1)]), "bad_point"),
        (b'{"v":1,"site":"s","seq":1,"points":[{"measurement":"device","tags":{},'
         b'"fields":{"x":NaN},"time_ns":1}]}', "bad_number"),
        (b'{"v":1,"site":"s","seq":1,"points":[],"x":Infinity}', "bad_number"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (payload([{"measurement": "device", "fields": {"x": 1}, "time_ns": NOW}] * 5001),
         "too_many_points"),
        (b" " * (600 * 1024), "too_large"),
    ],
)
def test_hostile_payloads_are_rejected_with_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as exc:
        decode_batch(data, now_ns=NOW)
    assert exc.value.reason == reason


def test_limits_are_configurable() -> None:
    small = Limits(max_points=2)
    with pytest.raises(WireError, match="too_many_points"):
        decode_batch(payload([point()] * 3), small, now_ns=NOW)
    assert len(decode_batch(payload([point()] * 2), small, now_ns=NOW).points) == 2


def test_encode_refuses_what_decode_would_refuse() -> None:
    p = Point("device", {"device": "sw"}, {"reachable": 1}, NOW)
    with pytest.raises(WireError) as exc:
        encode_batch(Batch(site="s", seq=0, points=(p,) * 3), Limits(max_points=2))
    assert exc.value.reason == "too_many_points"


def test_split_points_keeps_order_and_respects_limits() -> None:
    pts = [Point("device", {"device": f"d{i}"}, {"reachable": 1}, NOW) for i in range(10)]
    limits = Limits(max_points=4)
    chunks = split_points(pts, limits)
    assert [p for c in chunks for p in c] == pts
    assert all(len(c) <= 4 for c in chunks)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("schoolnet/v1/herne/gs-park/status", Topic("herne", "gs-park", "status")),
        ("schoolnet/v1/herne/gs-park/metrics/core-sw",
         Topic("herne", "gs-park", "metrics", "core-sw")),
        ("schoolnet/v1/herne/gs-park/probe", Topic("herne", "gs-park", "probe")),
    ],
)
def test_topics_parse_and_print_back(topic: str, expected: Topic) -> None:
    assert parse_topic(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "schoolnet/v2/herne/gs-park/status",
        "schoolnet/v1/Herne/gs-park/status",
        "schoolnet/v1/herne/gs-park/secrets",
        "schoolnet/v1/herne/gs-park/status/dev",
        "schoolnet/v1/herne/gs-park/metrics/a b",
        "schoolnet/v1/herne/gs-park",
        "schoolnet/v1/herne/gs-park/metrics/a/b",
    ],
)
def test_bad_topics_are_rejected(topic: str) -> None:
    with pytest.raises(WireError, match="bad_topic"):
        parse_topic(topic)


def test_status_round_trip_and_rejection() -> None:
    s = Status(site="gs-park", state="offline", time_ns=NOW, reason="lost", version="0.1.0")
    assert decode_status(encode_status(s)) == s
    with pytest.raises(WireError, match="bad_status"):
        decode_status(b'{"v":1,"site":"gs-park","state":"sleeping"}')


def test_seq_tracker_counts_gaps_fills_them_and_drops_duplicates() -> None:
    t = SeqTracker()
    assert [t.observe(s, "e") for s in (0, 1, 4)] == [True, True, True]
    assert t.gaps == 2
    assert t.observe(2, "e") is True
    assert t.gaps == 1
    assert t.observe(4, "e") is False and t.observe(1, "e") is False
    assert t.duplicates == 2
    # A new spool (new epoch) starts again at 0 without being taken for replays.
    assert t.observe(0, "f") is True and t.gaps == 0
