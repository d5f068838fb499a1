"""Per-site seq state across collector restarts, saved with the spooled chunks.

The validator keeps one ``SeqTracker`` per site (schoolnet/wire.py): the agent spool's
epoch, the highest seq seen, the seqs below it that are missing, and the duplicates
counted. Without saving it, a restarted collector would start blind: the broker's
redeliveries and the agents' resends would look new (written twice, not counted as
duplicates) and a gap from before the restart would be forgotten.

:class:`SeqState` is the spool's :class:`~collector.spool.StateSource`: at each persist
it hands over the trackers that changed, encoded compactly (missing seqs as ranges,
zlib), and the spool writes them in the same transaction as the chunks. Because the
snapshot is taken together with the staged chunks, the saved state never contains a
seq whose lines are not stored too; the collector takes care that no message is
between "seq observed" and "chunk staged" at that moment (collector/app.py). So after
a crash a redelivered message counts as a duplicate exactly when its lines are safe.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from collector.metrics import CollectorMetrics
from collector.validate import SiteState
from schoolnet.wire import SeqTracker

log = logging.getLogger("schoolnet.collector.seqstate")

_PREFIX = "seq/"


def _ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted seqs as inclusive ``[first, last]`` ranges (gaps are mostly contiguous)."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def encode_tracker(t: SeqTracker) -> bytes:
    """One tracker as a small compressed JSON document."""
    doc = {"epoch": t.epoch, "highest": t.highest, "duplicates": t.duplicates,
           "missing": _ranges(t.missing)}
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def decode_tracker(blob: bytes, into: SeqTracker) -> None:
    """Restore a tracker saved by :func:`encode_tracker`; raises ValueError if damaged."""
    try:
        doc: Any = json.loads(zlib.decompress(blob))
        epoch, highest, dups = str(doc["epoch"]), int(doc["highest"]), int(doc["duplicates"])
        missing = {s for first, last in doc["missing"] for s in range(int(first), int(last) + 1)}
    except (zlib.error, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"damaged seq state: {exc}") from None
    into.epoch, into.highest, into.duplicates = epoch, highest, dups
    into.missing.clear()
    into.missing.update(missing)


def _signature(t: SeqTracker) -> tuple[str, int, int, int]:
    # Every observe() changes one of these: a new highest, a filled gap (fewer
    # missing), a duplicate, a new epoch.
    return (t.epoch, t.highest, len(t.missing), t.duplicates)


class SeqState:
    """Saves and restores the validator's per-site trackers through the spool."""

    def __init__(self, sites: Mapping[tuple[str, str], SiteState]) -> None:
        self.sites = sites
        self._saved: dict[tuple[str, str], tuple[str, int, int, int]] = {}
        self._taken: dict[tuple[str, str], tuple[str, int, int, int]] = {}

    @staticmethod
    def key(tenant: str, site: str) -> str:
        """The spool's state key of one site."""
        return f"{_PREFIX}{tenant}/{site}"

    def restore(self, saved: Mapping[str, bytes], metrics: CollectorMetrics | None = None) -> int:
        """Load saved trackers into the sites still in the inventory; returns how many.

        The duplicates counter in ``/metrics`` continues from the saved count, so it
        and ``/api/status`` agree.
        """
        n = 0
        for (tenant, site), st in self.sites.items():
            blob = saved.get(self.key(tenant, site))
            if blob is None:
                continue
            try:
                decode_tracker(blob, st.seq)
            except ValueError as exc:
                log.error("seq state of %s/%s not restored: %s", tenant, site, exc)
                continue
            self._saved[(tenant, site)] = _signature(st.seq)
            if metrics is not None and st.seq.duplicates:
                metrics.duplicates.values[(tenant, site)] = float(st.seq.duplicates)
            n += 1
        return n

    def snapshot(self) -> dict[str, bytes]:
        """Trackers changed since the last save, encoded (called by the spool's persist)."""
        out: dict[str, bytes] = {}
        self._taken = {}
        for key, st in self.sites.items():
            sig = _signature(st.seq)
            if self._saved.get(key) != sig:
                out[self.key(*key)] = encode_tracker(st.seq)
                self._taken[key] = sig
        return out

    def committed(self, snapshot: Mapping[str, bytes]) -> None:
        """The snapshot is on disk: remember what was saved (as it was when taken)."""
        self._saved.update(self._taken)
        self._taken = {}
