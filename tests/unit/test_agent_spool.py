"""DiskSpool: seq across restarts, order, acknowledgement, bounds, epoch, splitting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.spool import DiskSpool, Outgoing, SpoolError, route, spool_path
from schoolnet.wire import Limits, Point, decode_batch, parse_topic
from tests.unit.agent_fakes import NS, START_NS

TOPIC = "schoolnet/v1/t1/s1/metrics/sw-1"


class Now:
    """A settable wall clock for the age bound."""

    def __init__(self) -> None:
        self.ns = START_NS

    def __call__(self) -> int:
        return self.ns


def pt(i: int, device: str = "sw-1", *, alias: str = "") -> Point:
    fields: dict[str, int | str] = {"uptime_s": i}
    if alias:
        fields["alias"] = alias
    return Point("device", {"device": device, "role": "switch", "vendor": "x"}, fields,
                 START_NS + i)


def out(*values: int) -> Outgoing:
    return Outgoing(TOPIC, tuple(pt(v) for v in values))


def open_spool(tmp_path: Path, now: Now | None = None, **kw: int | float) -> DiskSpool:
    return DiskSpool(tmp_path / "s.sqlite3", site="s1", now_ns=now or Now(), **kw)  # type: ignore[arg-type]


def test_seq_increases_and_survives_reopen_even_when_everything_was_sent(
    tmp_path: Path,
) -> None:
    with open_spool(tmp_path) as spool:
        epoch = spool.epoch
        assert spool.append([out(1), out(2)]) == [0, 1]
        assert spool.append([out(3)]) == [2]
        assert spool.ack([0, 1, 2]) == 3  # spool now empty
    with open_spool(tmp_path) as spool:
        assert spool.epoch == epoch
        assert spool.stats().batches == 0
        assert spool.append([out(4)]) == [3]  # not 0 again: the collector saw 0..2


def test_a_new_spool_file_has_a_new_epoch_and_starts_at_zero(tmp_path: Path) -> None:
    with DiskSpool(tmp_path / "a.sqlite3", site="s1") as a, \
            DiskSpool(tmp_path / "b.sqlite3", site="s1") as b:
        assert a.epoch != b.epoch and len(a.epoch) == 16
        assert a.append([out(1)]) == [0] and b.append([out(1)]) == [0]


def test_peek_returns_oldest_first_and_removes_nothing_until_ack(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append([out(i) for i in range(5)])
        first = spool.peek(3)
        assert [b.seq for b in first] == [0, 1, 2]
        assert [b.seq for b in spool.peek(3)] == [0, 1, 2]  # peek is not a pop
        assert spool.ack([0, 1]) == 2
        assert [b.seq for b in spool.peek(10)] == [2, 3, 4]
        assert spool.ack([1, 99]) == 0  # gone or never there: ignored
        assert spool.stats().batches == 3


def test_stored_payload_is_the_wire_batch_with_seq_epoch_and_topic(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append([out(7, 8)])
        [b] = spool.peek(1)
        assert b.topic == TOPIC and b.points == 2 and b.created_ns == START_NS
        batch = decode_batch(b.payload, now_ns=START_NS)
        assert (batch.site, batch.seq, batch.epoch) == ("s1", 0, spool.epoch)
        assert [p.fields["uptime_s"] for p in batch.points] == [7, 8]
        assert [p.time_ns for p in batch.points] == [START_NS + 7, START_NS + 8]


def test_unacked_batches_survive_reopen_in_order(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append([out(i) for i in range(4)])
        spool.ack([0])
    with open_spool(tmp_path) as spool:
        got = [decode_batch(b.payload, now_ns=START_NS) for b in spool.peek(10)]
        assert [(b.seq, b.points[0].fields["uptime_s"]) for b in got] == [(1, 1), (2, 2), (3, 3)]


def test_age_bound_drops_oldest_and_counts_it_persistently(tmp_path: Path) -> None:
    now = Now()
    with open_spool(tmp_path, now, max_age_s=3600) as spool:
        spool.append([out(1, 2)])  # seq 0, two points, at t0
        now.ns += 1800 * NS
        spool.append([out(3)])  # seq 1, at t0 + 30 min
        now.ns += 1801 * NS  # seq 0 is now older than an hour, seq 1 not
        spool.append([out(4)])  # seq 2; appending applies the bounds
        assert [b.seq for b in spool.peek(10)] == [1, 2]
        stats = spool.stats()
        assert (stats.dropped_batches, stats.dropped_points) == (1, 2)
    now.ns += 3601 * NS
    with open_spool(tmp_path, now, max_age_s=3600) as spool:  # opening applies them too
        stats = spool.stats()
        assert stats.batches == 0
        assert (stats.dropped_batches, stats.dropped_points) == (3, 4)
        assert spool.append([out(5)]) == [3]


def test_size_bound_keeps_the_newest_and_drops_the_oldest_first(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=10_000) as spool:
        # Incompressible-ish aliases so each batch has a real size.
        for i in range(60):
            spool.append([Outgoing(TOPIC, (pt(i, alias=f"{i * 7919:x}" * 40),))])
        stats = spool.stats()
        assert 0 < stats.bytes <= 10_000
        seqs = [b.seq for b in spool.peek(100)]
        assert seqs == list(range(60 - len(seqs), 60))  # a contiguous run of the newest
        assert stats.dropped_batches == 60 - len(seqs) > 0
        assert stats.dropped_points == stats.dropped_batches


def test_stats_track_bytes_and_oldest_through_append_ack_and_reopen(tmp_path: Path) -> None:
    now = Now()
    with open_spool(tmp_path, now) as spool:
        spool.append([out(1)])
        now.ns += 5 * NS
        spool.append([out(2)])
        s = spool.stats()
        assert s.batches == 2 and s.bytes > 0 and s.oldest_created_ns == START_NS
        spool.ack([0])
        s2 = spool.stats()
        assert s2.oldest_created_ns == START_NS + 5 * NS and 0 < s2.bytes < s.bytes
    with open_spool(tmp_path, now) as spool:
        assert spool.stats().bytes == s2.bytes and spool.stats().next_seq == 2


def test_an_oversized_collection_is_split_into_batches_that_fit(tmp_path: Path) -> None:
    limits = Limits(max_payload_bytes=2000)
    with DiskSpool(tmp_path / "s.sqlite3", site="s1", limits=limits) as spool:
        points = tuple(pt(i, alias="a" * 100) for i in range(40))
        seqs = spool.append([Outgoing(TOPIC, points)])
        assert len(seqs) > 1 and seqs == list(range(len(seqs)))
        batches = spool.peek(100)
        assert all(len(b.payload) <= 2000 for b in batches)
        decoded = [decode_batch(b.payload, limits, now_ns=START_NS) for b in batches]
        assert [b.seq for b in decoded] == seqs
        # Nothing lost, order kept across the split.
        assert [p.fields["uptime_s"] for b in decoded for p in b.points] == list(range(40))


def test_a_point_too_large_for_any_batch_is_rejected_and_counted(tmp_path: Path) -> None:
    limits = Limits(max_payload_bytes=600)
    with DiskSpool(tmp_path / "s.sqlite3", site="s1", limits=limits) as spool:
        seqs = spool.append([Outgoing(TOPIC, (pt(1), pt(2, alias="x" * 800), pt(3)))])
        assert seqs == [0, 1]
        got = [decode_batch(b.payload, limits, now_ns=START_NS) for b in spool.peek(10)]
        assert [p.fields["uptime_s"] for b in got for p in b.points] == [1, 3]
        assert spool.stats().rejected_points == 1


def test_a_corrupt_spool_is_moved_aside_and_a_new_epoch_starts(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database, it is a dying SD card" * 100)
    with DiskSpool(path, site="s1") as spool:
        assert spool.append([out(1)]) == [0]
    kept = list(tmp_path.glob("s.sqlite3.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"this is not")


def test_wal_mode_and_full_sync_are_in_effect(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append([out(1)])
        db = sqlite3.connect(tmp_path / "s.sqlite3")
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_an_unusable_spool_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot open spool"):
        DiskSpool.for_site(blocker / "spool", "t1", "s1")


def test_spool_file_is_per_site() -> None:
    assert spool_path("/var/lib/x", "herne", "gy-a").name == "herne.gy-a.spool.sqlite3"


def test_route_puts_points_on_per_device_probe_and_agent_topics() -> None:
    points = [
        pt(1, "sw-1"), pt(2, "ap-7"), pt(3, "sw-1"),
        Point("probe_icmp", {"target": "dns1"}, {"rtt_ms": 3.5}, START_NS),
        Point("agent", {"version": "0.1.0"}, {"uptime_s": 5}, START_NS),
    ]
    routed = {o.topic: [p.measurement for p in o.points] for o in route("t1", "s1", points)}
    assert routed == {
        "schoolnet/v1/t1/s1/metrics/sw-1": ["device", "device"],
        "schoolnet/v1/t1/s1/metrics/ap-7": ["device"],
        "schoolnet/v1/t1/s1/probe": ["probe_icmp"],
        "schoolnet/v1/t1/s1/metrics": ["agent"],
    }
    for topic in routed:
        parse_topic(topic)  # every topic is valid under the contract


def test_route_splits_a_huge_device_collection() -> None:
    points = [pt(i) for i in range(1000)]
    routed = route("t1", "s1", points)
    assert len(routed) > 1
    assert [p.fields["uptime_s"] for o in routed for p in o.points] == list(range(1000))


# -- the resend window (the broker acknowledges before it saves) ---------------------


def test_acknowledged_batches_are_kept_for_the_window_and_resent_first(tmp_path: Path) -> None:
    now = Now()
    with open_spool(tmp_path, now, keep_sent_s=30) as spool:
        spool.append([out(1), out(2), out(3)])
        assert spool.ack([0, 1]) == 2
        assert [b.seq for b in spool.peek(10)] == [2]  # kept ones are not sent again...
        stats = spool.stats()
        assert (stats.batches, stats.kept) == (1, 2) and stats.dropped_batches == 0
        assert spool.resend() == 2  # ...until a new connection
        assert [b.seq for b in spool.peek(10)] == [0, 1, 2]  # in seq order, first
        spool.ack([0, 1, 2])
        now.ns += 31 * NS
        spool.append([out(4)])
        spool.ack([3])  # acknowledging expires what is older than the window
        assert spool.stats().kept == 1
        assert spool.resend() == 1 and [b.seq for b in spool.peek(10)] == [3]


def test_kept_batches_survive_a_restart_and_go_out_again(tmp_path: Path) -> None:
    now = Now()
    with open_spool(tmp_path, now, keep_sent_s=30) as spool:
        spool.append([out(1), out(2)])
        spool.ack([0])
    with open_spool(tmp_path, now, keep_sent_s=30) as spool:  # a killed agent, restarted
        assert spool.stats().batches == 1 and spool.stats().kept == 1
        assert spool.resend() == 1
        assert [b.seq for b in spool.peek(10)] == [0, 1]


def test_without_a_window_acknowledged_batches_are_deleted(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append([out(1), out(2)])
        spool.ack([0])
        assert spool.resend() == 0 and [b.seq for b in spool.peek(10)] == [1]
        assert spool.stats().kept == 0


def test_bounds_drop_kept_batches_without_counting_them_as_lost(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=4000, keep_sent_s=3600) as spool:
        for i in range(20):
            spool.append([Outgoing(TOPIC, (pt(i, alias=f"{i * 7919:x}" * 40),))])
            spool.ack([i])  # delivered at once, kept for the window
        stats = spool.stats()
        assert stats.bytes <= 4000 and stats.kept < 20
        assert (stats.batches, stats.dropped_batches, stats.dropped_points) == (0, 0, 0)


def test_a_spool_from_before_the_resend_window_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with open_spool(tmp_path) as spool:
        spool.append([out(1), out(2)])
        epoch = spool.epoch
    with sqlite3.connect(path) as db:  # back to the schema-1 layout of older agents
        db.execute("CREATE TABLE b1 AS SELECT seq, topic, payload, points, size, created_ns"
                   " FROM batch")
        db.execute("DROP TABLE batch")
        db.execute("ALTER TABLE b1 RENAME TO batch")
        db.execute("PRAGMA user_version=1")
    with open_spool(tmp_path, keep_sent_s=30) as spool:
        assert spool.epoch == epoch and [b.seq for b in spool.peek(10)] == [0, 1]
        spool.ack([0])
        assert spool.stats().kept == 1
