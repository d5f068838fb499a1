"""Per-site seq state across restarts: compact encoding, only what changed, restored
with the spool, and never ahead of the lines it belongs to."""

from __future__ import annotations

import asyncio
from pathlib import Path

from collector.buffer import Chunk
from collector.metrics import CollectorMetrics
from collector.seqstate import SeqState, decode_tracker, encode_tracker
from collector.spool import DiskBuffer
from collector.validate import Validator
from schoolnet.inventory import load_inventory
from schoolnet.wire import Batch, Point, SeqTracker, encode_batch
from tests.collector_support import write_inventory

NOW = 1_763_712_000_000_000_000
TOPIC = "schoolnet/v1/herne/gy/metrics"


def validator(root: Path) -> Validator:
    write_inventory(root, "herne", {"gy": [("sw", "switch", "hp")], "gs": [("ap", "ap", "")]})
    return Validator(load_inventory(root, resolve_secrets=False), CollectorMetrics(),
                     wall_clock_ns=lambda: NOW)


def msg(seq: int, epoch: str = "e1") -> bytes:
    p = Point("device", {"device": "sw"}, {"up": 1}, NOW + seq)
    return encode_batch(Batch(site="gy", seq=seq, points=(p,), epoch=epoch))


def test_a_tracker_round_trips_with_its_gaps_as_ranges() -> None:
    t = SeqTracker()
    for s in [0, 1, 5, 9, 3, 3, 1000]:
        t.observe(s, "ep")
    blob = encode_tracker(t)
    assert len(blob) < 120  # 990 missing seqs, a handful of ranges
    back = SeqTracker()
    decode_tracker(blob, back)
    assert (back.epoch, back.highest, back.duplicates, back.missing) == (
        t.epoch, t.highest, t.duplicates, t.missing)


def test_only_changed_sites_are_saved(tmp_path: Path) -> None:
    v = validator(tmp_path)
    state = SeqState(v.sites)
    assert set(state.snapshot()) == {"seq/herne/gs", "seq/herne/gy"}  # never saved yet
    state.committed({})
    assert state.snapshot() == {}
    v.handle(TOPIC, msg(1))
    snap = state.snapshot()
    assert list(snap) == ["seq/herne/gy"]
    state.committed(snap)
    assert state.snapshot() == {}
    v.handle(TOPIC, msg(1))  # a duplicate changes the count: saved again
    assert list(state.snapshot()) == ["seq/herne/gy"]


def test_after_a_restart_replays_are_duplicates_and_gaps_are_still_gaps(tmp_path: Path) -> None:
    async def scenario() -> None:
        v = validator(tmp_path / "inv")
        spool = DiskBuffer(tmp_path / "spool.sqlite3")
        spool.state_source = SeqState(v.sites)
        for seq in (0, 1, 2, 5):  # 3 and 4 missing
            spool.add(Chunk(v.handle(TOPIC, msg(seq)).lines))
        await spool.persist()
        v.handle(TOPIC, msg(6))  # observed, but the crash comes before it is stored
        spool.close()

        again = validator(tmp_path / "inv2")
        spool2 = DiskBuffer(tmp_path / "spool.sqlite3")
        metrics = again.metrics
        assert SeqState(again.sites).restore(spool2.loaded_state, metrics) == 2
        gy = again.sites[("herne", "gy")].seq
        assert (gy.highest, sorted(gy.missing)) == (5, [3, 4])
        assert again.handle(TOPIC, msg(2)).duplicate  # stored before the crash
        assert not again.handle(TOPIC, msg(6)).duplicate  # never stored: new
        assert not again.handle(TOPIC, msg(3)).duplicate  # fills a real gap
        assert gy.gaps == 1 and gy.duplicates == 1
        assert metrics.duplicates.get("herne", "gy") == 1
        spool2.close()
    asyncio.run(scenario())


def test_a_damaged_saved_state_is_skipped_not_fatal(tmp_path: Path) -> None:
    v = validator(tmp_path)
    assert SeqState(v.sites).restore({"seq/herne/gy": b"garbage"}) == 0
    assert v.sites[("herne", "gy")].seq.highest == -1
