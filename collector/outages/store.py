"""Durable state of outages and mail: one SQLite file in the collector's ``state_dir``.

What survives a restart (or a SIGKILL): entity damping state, open and recent outages,
the dispatcher's notices and digests, the mail queue, maintenance windows from the CLI,
the APs learned behind WLAN controllers and the CLI's requests to forget one.
Engine changes, dispatcher state and the mails they cause are written in **one
transaction** (:meth:`OutageStore.commit`): after a crash either all of a step is there
or none of it, so a DOWN is never queued twice and a RESOLVED never lost. WAL mode with
``synchronous=NORMAL`` is durable against a process crash; the CLI reads and writes the
same file concurrently (busy timeout).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.outages.model import EntityState, Outage
from schoolnet.alerting import MaintenanceWindow

FILE_NAME = "outages.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entity_state (key TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outages (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, tenant TEXT NOT NULL, site TEXT NOT NULL,
    kind TEXT NOT NULL, opened REAL NOT NULL, closed REAL, root INTEGER, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outages_closed ON outages (closed);
CREATE TABLE IF NOT EXISTS mailq (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, outage_id INTEGER,
    kind TEXT NOT NULL, sender TEXT NOT NULL, recipients TEXT NOT NULL,
    message BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    sent REAL, failed REAL);
CREATE INDEX IF NOT EXISTS mailq_pending ON mailq (sent, failed, id);
CREATE TABLE IF NOT EXISTS learned_aps (
    key TEXT PRIMARY KEY, tenant TEXT NOT NULL, site TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ap_forget (key TEXT PRIMARY KEY, requested REAL NOT NULL);
CREATE TABLE IF NOT EXISTS maintenance (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, sites TEXT NOT NULL,
    start REAL NOT NULL, "end" REAL NOT NULL, reason TEXT NOT NULL, created REAL NOT NULL);
"""


@dataclass(frozen=True)
class QueuedMail:
    """A mail waiting in (or taken from) the durable queue."""

    id: int
    outage_id: int | None
    kind: str
    sender: str
    recipients: tuple[str, ...]
    message: bytes
    attempts: int = 0
    created: float = 0.0


@dataclass(frozen=True)
class NewMail:
    """A mail to enqueue in a :meth:`OutageStore.commit`."""

    outage_id: int | None
    kind: str
    sender: str
    recipients: tuple[str, ...]
    message: bytes


def open_db(path: Path) -> sqlite3.Connection:
    """Open (and create) the state database with the settings every user of it needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    db.executescript(_SCHEMA)
    return db


class OutageStore:
    """The state database; all methods are quick and meant for the event loop thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_db(path)
        token = self.meta("token")
        if token is None:
            # Makes Message-IDs unique across installations (and a wiped state_dir).
            token = secrets.token_hex(6)
            self.set_meta("token", token)
        self.token = token

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def meta(self, key: str) -> str | None:
        """A value from the meta table."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value (its own transaction)."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- engine and dispatcher state ------------------------------------------------

    def max_outage_id(self) -> int:
        """The highest outage id ever stored (ids continue after it)."""
        row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM outages").fetchone()
        floor = int(self.meta("id_floor") or 0)
        return max(int(row[0]), floor)

    def load_states(self) -> dict[str, dict[str, Any]]:
        """Every stored entity state."""
        return {k: json.loads(doc) for k, doc in
                self.db.execute("SELECT key, doc FROM entity_state")}

    def load_open_outages(self) -> list[dict[str, Any]]:
        """Every outage not yet closed."""
        return [json.loads(doc) for (doc,) in
                self.db.execute("SELECT doc FROM outages WHERE closed IS NULL ORDER BY id")]

    def load_dispatch(self) -> dict[str, Any]:
        """The dispatcher's saved state (empty on the first start)."""
        doc = self.meta("dispatch")
        return json.loads(doc) if doc else {}

    def commit(self, states: Mapping[str, EntityState | None], outages: Iterable[Outage],
               dispatch: dict[str, Any] | None, mails: Iterable[NewMail], now: float,
               aps: Mapping[str, dict[str, Any] | None] | None = None) -> None:
        """Write one step atomically: state changes, outages, dispatcher, new mails, and
        learned APs (``aps``: key -> record, None: forgotten, with its forget request)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, doc in (aps or {}).items():
                if doc is None:
                    db.execute("DELETE FROM learned_aps WHERE key = ?", (key,))
                    db.execute("DELETE FROM ap_forget WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO learned_aps VALUES (?, ?, ?, ?)",
                               (key, doc["tenant"], doc["site"], json.dumps(doc)))
            for key, st in states.items():
                if st is None or st.is_default():
                    db.execute("DELETE FROM entity_state WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO entity_state VALUES (?, ?)",
                               (key, json.dumps(st.to_json())))
            for o in outages:
                db.execute("INSERT OR REPLACE INTO outages VALUES (?,?,?,?,?,?,?,?,?)",
                           (o.id, o.key, o.tenant, o.site, o.kind, o.opened, o.closed,
                            o.root, json.dumps(o.to_json())))
            if dispatch is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('dispatch', ?)",
                           (json.dumps(dispatch),))
            for m in mails:
                db.execute("INSERT INTO mailq (created, outage_id, kind, sender, recipients, "
                           "message) VALUES (?,?,?,?,?,?)",
                           (now, m.outage_id, m.kind, m.sender, json.dumps(m.recipients),
                            m.message))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- the mail queue -------------------------------------------------------------

    def next_mail(self) -> QueuedMail | None:
        """The oldest mail neither sent nor given up on."""
        row = self.db.execute(
            "SELECT id, outage_id, kind, sender, recipients, message, attempts, created "
            "FROM mailq WHERE sent IS NULL AND failed IS NULL ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return QueuedMail(id=row[0], outage_id=row[1], kind=row[2], sender=row[3],
                          recipients=tuple(json.loads(row[4])), message=bytes(row[5]),
                          attempts=row[6], created=row[7])

    def mark_sent(self, mail_id: int, now: float) -> None:
        """The relay accepted the mail."""
        self.db.execute("UPDATE mailq SET sent = ?, attempts = attempts + 1 WHERE id = ?",
                        (now, mail_id))

    def mark_attempt(self, mail_id: int, error: str) -> None:
        """A temporary failure: the mail stays first in line."""
        self.db.execute("UPDATE mailq SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                        (error[:500], mail_id))

    def mark_failed(self, mail_id: int, error: str, now: float) -> None:
        """A permanent refusal (5xx): kept for inspection, no longer retried."""
        self.db.execute("UPDATE mailq SET failed = ?, attempts = attempts + 1, last_error = ? "
                        "WHERE id = ?", (now, error[:500], mail_id))

    def queue_stats(self) -> dict[str, Any]:
        """Pending and failed counts, the oldest pending mail's creation time."""
        pending, oldest = self.db.execute(
            "SELECT COUNT(*), MIN(created) FROM mailq WHERE sent IS NULL AND failed IS NULL"
        ).fetchone()
        failed = self.db.execute("SELECT COUNT(*) FROM mailq WHERE failed IS NOT NULL"
                                 ).fetchone()[0]
        sent = self.db.execute("SELECT COUNT(*) FROM mailq WHERE sent IS NOT NULL").fetchone()[0]
        return {"pending": pending, "failed": failed, "sent": sent, "oldest_pending": oldest}

    # -- listing and housekeeping ---------------------------------------------------

    def outages(self, *, since: float | None = None, tenant: str | None = None) -> list[Outage]:
        """Open outages and those closed after ``since`` (newest first)."""
        sql = "SELECT doc FROM outages WHERE (closed IS NULL OR closed >= ?)"
        args: list[Any] = [since if since is not None else 0.0]
        if tenant:
            sql += " AND tenant = ?"
            args.append(tenant)
        return [Outage.from_json(json.loads(doc))
                for (doc,) in self.db.execute(sql + " ORDER BY id DESC", args)]

    def prune(self, before: float) -> None:
        """Forget outages closed and mails sent/failed before ``before``."""
        # Ids must never be reused (ticket systems thread on them): remember the highest.
        self.set_meta("id_floor", str(self.max_outage_id()))
        self.db.execute("DELETE FROM outages WHERE closed IS NOT NULL AND closed < ?", (before,))
        self.db.execute("DELETE FROM mailq WHERE COALESCE(sent, failed) < ?", (before,))

    # -- APs behind controllers ------------------------------------------------------

    def learned_aps(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every learned AP record (of one tenant), ordered by key."""
        sql, args = "SELECT doc FROM learned_aps", []
        if tenant:
            sql += " WHERE tenant = ?"
            args.append(tenant)
        return [json.loads(doc) for (doc,) in self.db.execute(sql + " ORDER BY key", args)]

    def request_forget(self, key: str, now: float) -> None:
        """Ask the collector to forget a learned AP (it applies it within a tick)."""
        self.db.execute("INSERT OR REPLACE INTO ap_forget VALUES (?, ?)", (key, now))

    def forget_requests(self) -> list[str]:
        """Keys the CLI asked to forget and the collector has not yet handled."""
        return [k for (k,) in self.db.execute("SELECT key FROM ap_forget ORDER BY requested")]

    def drop_forget_requests(self, keys: Iterable[str]) -> None:
        """Requests for APs that are not (or no longer) learned."""
        self.db.executemany("DELETE FROM ap_forget WHERE key = ?", [(k,) for k in keys])

    def load_entity_states(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored states of some entities (the CLI's AP listing)."""
        out = {}
        for key in keys:
            row = self.db.execute("SELECT doc FROM entity_state WHERE key = ?",
                                  (key,)).fetchone()
            if row is not None:
                out[key] = json.loads(row[0])
        return out

    # -- maintenance windows (CLI) --------------------------------------------------

    def add_window(self, tenant: str, sites: tuple[str, ...], start: float, end: float,
                   reason: str, now: float) -> int:
        """Add a maintenance window; returns its id."""
        cur = self.db.execute(
            'INSERT INTO maintenance (tenant, sites, start, "end", reason, created) '
            "VALUES (?,?,?,?,?,?)", (tenant, json.dumps(list(sites)), start, end, reason, now))
        return int(cur.lastrowid or 0)

    def remove_window(self, window_id: int) -> bool:
        """Remove a CLI window; False if there was none with that id."""
        cur = self.db.execute("DELETE FROM maintenance WHERE id = ?", (window_id,))
        return cur.rowcount > 0

    def windows(self) -> list[tuple[str, MaintenanceWindow]]:
        """Every CLI window as (tenant, window)."""
        out = []
        for wid, tenant, sites, start, end, reason in self.db.execute(
                'SELECT id, tenant, sites, start, "end", reason FROM maintenance ORDER BY start'):
            out.append((tenant, MaintenanceWindow(start=start, end=end,
                                                  sites=tuple(json.loads(sites)),
                                                  reason=reason, id=str(wid))))
        return out

    def windows_version(self) -> int:
        """Changes when another process (the CLI) wrote to the database."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])
