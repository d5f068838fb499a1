"""DiskSpool: the durable, ordered store between the agent's queue and its publisher.

Everything a site measures goes through here, whether the broker is reachable or not::

    sources -> Intake queue -> DiskSpool.append (assigns seq, encodes, stores)
                               DiskSpool.peek (oldest first) -> Publisher -> PUBACK
                               DiskSpool.ack (delete)

* **seq.** A batch gets the next per-site ``seq`` when it enters the spool. The next
  value is persisted in the same transaction as the batch, so seq increases across
  restarts and power cuts and the collector can prove nothing was lost. Each spool
  database has a random ``epoch`` created with it; a wiped or replaced box starts a new
  epoch at seq 0 (see ``Batch.epoch`` and ``SeqTracker`` in schoolnet/wire.py).
* **Durability.** SQLite in WAL mode with ``synchronous=FULL``: every commit is fsynced
  before ``append`` returns. ``NORMAL`` would survive a crashed process but not a power
  cut: the last commits could roll back, including the stored next seq, and the agent
  would hand out seqs the collector already saw (it drops those as duplicates: data
  lost). The price is one fsync per ``append``/``ack`` call; the agent batches both (a
  whole queue drain per append, a publish window per ack), so it is a few per second.
* **Bounds.** By age (``max_age_s``) and by stored bytes (``max_bytes``); when either is
  exceeded the oldest batches are deleted first and counted (persisted, so the count
  survives restarts). Payloads are stored zlib-compressed: a switch's batch shrinks
  5-10x, which is what makes days of buffering fit on a small box (docs/agent.md).
* **Threads.** The methods are blocking and thread-safe (one connection behind a lock);
  async callers run them with ``asyncio.to_thread`` so disk waits never stall the loop.

The store is transactional in Telegraf's sense: ``peek`` does not remove anything, only
``ack`` does, so a batch leaves the spool only after the broker acknowledged it.

* **Resend window.** A PUBACK does not mean the broker has the message on disk:
  Mosquitto keeps queued messages in memory and saves them every ``autosave_interval``;
  a broker killed meanwhile has forgotten messages it acknowledged (measured: all 200
  acknowledged messages queued for an offline subscriber were gone after a SIGKILL).
  With ``keep_sent_s`` > 0 an acknowledged batch is kept that long, marked sent, and
  :meth:`DiskSpool.resend` (called by the forwarder after every new connection, which is
  how a broker restart shows itself) queues the kept ones again, in seq order. The
  collector drops what it already has by seq, and fills its gaps with the rest.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from schoolnet.sqlitefile import open_durable
from schoolnet.wire import (
    DEFAULT_LIMITS,
    DEVICE_RE,
    Batch,
    Limits,
    Point,
    Topic,
    encode_batch,
    split_points,
)

log = logging.getLogger(__name__)

#: 2 GiB holds 86 h of a 100-device site at 60 s polls even if every device were a
#: 52-port switch; a typical site fills it in two weeks (docs/agent.md, "Spool sizing").
DEFAULT_MAX_BYTES = 2 * 1024**3
#: A week: a long holiday weekend or a broken uplink over the autumn break; the
#: collector accepts points up to 14 days old (wire.Limits.max_age_s).
DEFAULT_MAX_AGE_S = 7 * 24 * 3600
SCHEMA_VERSION = 2  # 2: batch.sent_ns (the resend window); 1 is upgraded in place
_NS = 1_000_000_000


class SpoolError(Exception):
    """The spool cannot be opened or used (permissions, full disk, ...)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Points bound for one topic, before they get a seq."""

    topic: str
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One stored batch: the encoded payload (JSON, as sent) and its topic."""

    seq: int
    topic: str
    payload: bytes
    points: int
    created_ns: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What the self-health source reports about the spool."""

    batches: int  # waiting to be published
    bytes: int  # stored (compressed) payload + topic bytes
    next_seq: int
    oldest_created_ns: int | None
    dropped_batches: int  # by the bounds, since the spool was created
    dropped_points: int
    rejected_points: int  # points that could not be encoded at all, since start
    kept: int = 0  # sent and acknowledged, kept for the resend window


def route(tenant: str, site: str, points: Iterable[Point]) -> list[Outgoing]:
    """Group one collection's points by topic: ``metrics/<device>``, ``metrics``, ``probe``.

    Device points go to their device's topic (the collector and ACLs can then work per
    device); probes to ``probe``; everything else (the ``agent`` point) to ``metrics``.
    A topic's points are split so each batch stays within the contract's limits.
    """
    groups: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        kind = "probe" if p.measurement.startswith("probe_") else "metrics"
        device = p.tags.get("device")
        if kind != "metrics" or device is None or not DEVICE_RE.match(device):
            device = None
        groups[str(Topic(tenant, site, kind, device))].append(p)
    return [
        Outgoing(topic, tuple(chunk))
        for topic, pts in groups.items()
        for chunk in split_points(pts)
        if chunk
    ]


def spool_path(spool_dir: str | Path, tenant: str, site: str) -> Path:
    """Where the spool of one site lives: one SQLite file per site."""
    return Path(spool_dir) / f"{tenant}.{site}.spool.sqlite3"


class DiskSpool:
    """A per-site SQLite spool: assigns seq, stores encoded batches, hands them out in order.

    Open it with :meth:`for_site` (one file per site below the spool directory) or with
    a path. ``now_ns`` is the wall clock used for the age bound (injected in tests).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        site: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        now_ns: Callable[[], int] = time.time_ns,
        limits: Limits = DEFAULT_LIMITS,
        compress_level: int = 6,
        keep_sent_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.site = site
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._now_ns = now_ns
        self._limits = limits
        self._level = compress_level
        self.keep_sent_s = keep_sent_s
        self._lock = threading.Lock()
        self.rejected_points = 0
        # An unreadable file is moved aside and a new spool, with a new epoch, begins.
        self._db = open_durable(self.path, self._setup, SpoolError, log)
        self._load_state()
        self._trim()

    @classmethod
    def for_site(cls, spool_dir: str | Path, tenant: str, site: str, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_age_s: float = DEFAULT_MAX_AGE_S,
                 now_ns: Callable[[], int] = time.time_ns,
                 keep_sent_s: float = 0.0) -> DiskSpool:
        """The spool of ``tenant``/``site`` below ``spool_dir`` (created if missing)."""
        return cls(spool_path(spool_dir, tenant, site), site=site, max_bytes=max_bytes,
                   max_age_s=max_age_s, now_ns=now_ns, keep_sent_s=keep_sent_s)

    # -- opening -----------------------------------------------------------------------

    def _setup(self, db: sqlite3.Connection, version: int) -> None:
        """Create or migrate the schema (schoolnet/sqlitefile.py opens the file)."""
        if version == 0:
            self._create_schema(db)
        elif version == 1:
            # A spool from before the resend window: nothing in it was sent yet.
            db.execute("BEGIN IMMEDIATE")
            db.execute("ALTER TABLE batch ADD COLUMN sent_ns INTEGER")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        elif version != SCHEMA_VERSION:
            raise SpoolError(f"spool {self.path} has schema {version}, "
                             f"this agent knows {SCHEMA_VERSION}")

    def _create_schema(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS batch ("
            " seq INTEGER PRIMARY KEY,"  # rowid alias: ordered reads are a b-tree walk
            " topic TEXT NOT NULL, payload BLOB NOT NULL,"
            " points INTEGER NOT NULL, size INTEGER NOT NULL, created_ns INTEGER NOT NULL,"
            " sent_ns INTEGER)"  # NULL: not acknowledged yet; else: kept to resend
        )
        meta = {"epoch": secrets.token_hex(8), "next_seq": "0", "site": self.site,
                "created_ns": str(self._now_ns()), "dropped_batches": "0",
                "dropped_points": "0"}
        db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", meta.items())
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")

    def _load_state(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self.epoch: str = meta["epoch"]
        self._next_seq = int(meta["next_seq"])
        self._dropped_batches = int(meta["dropped_batches"])
        self._dropped_points = int(meta["dropped_points"])
        count, size, kept = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(sent_ns) FROM batch").fetchone()
        # _count: batches waiting to be sent; _kept: sent, in the resend window;
        # _bytes: everything stored (the size bound counts the kept ones too).
        self._count, self._kept, self._bytes = int(count) - int(kept), int(kept), int(size)

    # -- the three operations ----------------------------------------------------------

    def append(self, outgoing: Sequence[Outgoing]) -> list[int]:
        """Number, encode and store batches in one transaction; returns their seqs.

        A batch that still encodes too large is halved until it fits; a single point
        that cannot be encoded is dropped and counted (``rejected_points``). Applies the
        bounds afterwards, so the new data may push out the oldest.
        """
        with self._lock:
            now = self._now_ns()
            rows: list[tuple[int, str, bytes, int, int, int]] = []
            for out in outgoing:
                for payload, n in self._encode(out.points, self._next_seq + len(rows)):
                    blob = zlib.compress(payload, self._level)
                    seq = self._next_seq + len(rows)
                    rows.append((seq, out.topic, blob, n, len(blob) + len(out.topic), now))
            if not rows:
                return []
            next_seq = rows[-1][0] + 1
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO batch (seq, topic, payload, points, size, created_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'",
                                 (str(next_seq),))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot write to spool {self.path}: {exc}") from exc
            self._next_seq = next_seq
            self._count += len(rows)
            self._bytes += sum(r[4] for r in rows)
            self._trim()
            return [r[0] for r in rows]

    def _encode(self, points: tuple[Point, ...], first_seq: int) -> list[tuple[bytes, int]]:
        """Encode points as one or more payloads numbered from ``first_seq``.

        split_points only estimates sizes; a chunk that still breaks a limit is halved
        until it fits, and a single point that cannot be encoded is dropped (counted).
        """
        out: list[tuple[bytes, int]] = []
        todo = [points]
        while todo:
            chunk = todo.pop()
            batch = Batch(self.site, first_seq + len(out), chunk, self.epoch)
            try:
                out.append((encode_batch(batch, self._limits), len(chunk)))
            except ValueError as exc:  # WireError, or a value json cannot encode
                if len(chunk) > 1:
                    half = len(chunk) // 2
                    todo += [chunk[half:], chunk[:half]]  # a stack: first half next
                    continue
                self.rejected_points += 1
                log.error("spool: dropped a point that cannot be encoded: %s", exc)
        return out

    def peek(self, limit: int) -> list[SpooledBatch]:
        """The ``limit`` oldest unsent batches, in seq order; nothing is removed."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, payload, points, created_ns FROM batch"
                    " WHERE sent_ns IS NULL ORDER BY seq LIMIT ?", (limit,)).fetchall()
                return [SpooledBatch(s, t, zlib.decompress(p), n, c) for s, t, p, n, c in rows]
            except (sqlite3.Error, zlib.error) as exc:
                raise SpoolError(f"cannot read spool {self.path}: {exc}") from exc

    def ack(self, seqs: Iterable[int]) -> int:
        """Batches the broker acknowledged leave the queue; returns how many were there.

        Deleted, or with ``keep_sent_s`` marked sent and kept for the resend window. A
        seq that is gone already (pushed out by the bounds meanwhile) is ignored.
        """
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            now = self._now_ns()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                marks = ",".join("?" * len(seqs))
                size, count = self._db.execute(
                    "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM batch"
                    f" WHERE sent_ns IS NULL AND seq IN ({marks})", seqs).fetchone()
                if self.keep_sent_s > 0:
                    self._db.execute(f"UPDATE batch SET sent_ns = ? WHERE sent_ns IS NULL"
                                     f" AND seq IN ({marks})", [now, *seqs])
                    expired = self._expire_kept(now)
                else:
                    self._db.execute(f"DELETE FROM batch WHERE seq IN ({marks})", seqs)
                    expired = (0, 0)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot update spool {self.path}: {exc}") from exc
            self._count -= int(count)
            if self.keep_sent_s > 0:
                self._kept += int(count) - expired[0]
                self._bytes -= expired[1]
            else:
                self._bytes -= int(size)
            return int(count)

    def _expire_kept(self, now: int) -> tuple[int, int]:
        """Delete kept batches older than the window (in the caller's transaction)."""
        cutoff = now - int(self.keep_sent_s * _NS)
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM batch"
            " WHERE sent_ns IS NOT NULL AND sent_ns < ?", (cutoff,)).fetchone()
        if count:
            self._db.execute("DELETE FROM batch WHERE sent_ns IS NOT NULL AND sent_ns < ?",
                             (cutoff,))
        return int(count), int(size)

    def resend(self) -> int:
        """Queue the kept batches again (a new connection: the broker may have lost them).

        They go out first, in seq order, before anything newer. Returns how many.
        """
        if self.keep_sent_s <= 0:
            return 0
        with self._lock:
            now = self._now_ns()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                count, size = self._expire_kept(now)
                self._kept -= count
                self._bytes -= size
                n = self._db.execute(
                    "UPDATE batch SET sent_ns = NULL WHERE sent_ns IS NOT NULL").rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot update spool {self.path}: {exc}") from exc
            self._kept -= int(n)
            self._count += int(n)
            return int(n)

    # -- bounds and stats --------------------------------------------------------------

    def _trim(self) -> None:
        """Drop the oldest batches beyond the age and size bounds (caller holds the lock)."""
        cutoff = self._now_ns() - int(self.max_age_s * _NS)
        last = self._db.execute(
            "SELECT MAX(seq) FROM batch WHERE created_ns < ?", (cutoff,)).fetchone()[0]
        excess = self._bytes - self.max_bytes
        if excess > 0:
            # Walk from the oldest until enough bytes are freed.
            freed = 0
            for seq, size in self._db.execute("SELECT seq, size FROM batch ORDER BY seq"):
                freed += size
                if freed >= excess:
                    last = seq if last is None else max(last, seq)
                    break
        if last is None:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            # Kept batches (already delivered) are not data lost: not counted as drops.
            count, size, points, kept = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0),"
                " COALESCE(SUM(CASE WHEN sent_ns IS NULL THEN points ELSE 0 END), 0),"
                " COUNT(sent_ns) FROM batch WHERE seq <= ?", (last,)).fetchone()
            count -= kept
            self._db.execute("DELETE FROM batch WHERE seq <= ?", (last,))
            self._db.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                (str(self._dropped_batches + count), "dropped_batches"),
                (str(self._dropped_points + points), "dropped_points"),
            ])
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise SpoolError(f"cannot trim spool {self.path}: {exc}") from exc
        self._count -= count
        self._kept -= kept
        self._bytes -= size
        self._dropped_batches += count
        self._dropped_points += points
        if count:
            log.warning("spool full or too old: dropped the %d oldest batch(es), %d point(s)",
                        count, points)

    def stats(self) -> SpoolStats:
        """Counters for the self-health source (cheap: kept in memory)."""
        with self._lock:
            oldest = None
            if self._count:
                # The oldest by seq: a b-tree lookup, where MIN(created_ns) is a scan.
                oldest = self._db.execute(
                    "SELECT created_ns FROM batch WHERE sent_ns IS NULL ORDER BY seq LIMIT 1"
                ).fetchone()[0]
            return SpoolStats(batches=self._count, bytes=self._bytes, next_seq=self._next_seq,
                              oldest_created_ns=oldest, dropped_batches=self._dropped_batches,
                              dropped_points=self._dropped_points,
                              rejected_points=self.rejected_points, kept=self._kept)

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        """Close the database (a clean close also checkpoints and removes the WAL)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
