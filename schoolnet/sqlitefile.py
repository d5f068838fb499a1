"""Opening a durable SQLite file: the agent's and the collector's spools share this.

Both spools are one SQLite file in WAL mode with ``synchronous=FULL`` (a commit is on
disk before anything is acknowledged: a power cut must not roll back what was
confirmed), a busy timeout, and a bounded WAL (it is reset after each checkpoint;
without a limit it keeps the size of the largest burst forever). Each spool brings its
own schema: ``setup(db, user_version)`` creates or migrates it, or raises.

A file that is not a database any more (a dying SD card, a half-written file) must not
keep a site dark or stop ingest: it is moved aside as ``<name>.corrupt-<time>`` (with
its ``-wal`` and ``-shm``) for inspection and a new one is started; what was in it is
lost, and the log says so.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

#: Creates or migrates a spool's schema, given the file's ``PRAGMA user_version``.
Setup = Callable[[sqlite3.Connection, int], None]


def open_durable(path: Path, setup: Setup, error: Callable[[str], Exception],
                 log: logging.Logger) -> sqlite3.Connection:
    """Open (or create) the spool at ``path``; quarantine and recreate it if unreadable.

    ``error(message)`` makes the exception raised when the file cannot be used at all
    (no permission, no WAL, an unknown schema): the caller's own ``SpoolError``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _open(path, setup, error)
    except sqlite3.DatabaseError as exc:
        log.error("spool %s is unreadable (%s); moving it aside, starting a new one",
                  path, exc)
        quarantine(path)
        return _open(path, setup, error)
    except OSError as exc:
        raise error(f"cannot open spool {path}: {exc}") from exc


def quarantine(path: Path) -> None:
    """Move the file and its WAL and shared-memory files aside (``.corrupt-<time>``)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            os.replace(p, f"{p}.corrupt-{stamp}")


def _open(path: Path, setup: Setup, error: Callable[[str], Exception]) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.OperationalError as exc:
        raise error(f"cannot open spool {path}: {exc}") from exc
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise error(f"spool {path}: WAL mode not available ({mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA journal_size_limit=67108864")
        setup(db, int(db.execute("PRAGMA user_version").fetchone()[0]))
    except BaseException:
        db.close()
        raise
    return db
