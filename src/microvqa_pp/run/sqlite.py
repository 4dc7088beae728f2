"""SQLite files shared by the worker processes of a run (the LLM reply cache, the signal cache)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect(path: Path, busy_timeout_s: float, *, autocommit: bool = False) -> sqlite3.Connection:
    """Open `path` in write-ahead-logging mode with NORMAL synchronisation.

    NORMAL keeps each commit durable against a killed process (not against power loss) without
    an fsync per commit. With `autocommit` every statement commits on its own.
    """
    isolation_level = None if autocommit else ""
    connection = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=isolation_level)
    _enable_wal(connection, busy_timeout_s)
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _enable_wal(connection: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Switch the file to write-ahead logging, waiting for other processes that do the same.

    SQLite fails a journal-mode change that races another connection with "database is locked"
    at once, without calling the busy handler. Worker processes that open a new file together
    therefore retry here until `busy_timeout_s` runs out.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.005
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
