"""A persistent cache of chat replies in SQLite, shared by every process of a run.

The key is a SHA-256 of everything that changes a reply: the model, the cache namespace (task
name and prompt version), the messages, the sampling parameters and the requested JSON schema.
Each image counts by the hash of its bytes, together with the maximum side it is shrunk to.
Concurrency, batch size and the server URL are not part of the key.

Only successful replies are stored, so a failed request is sent again on the next run. Each reply
is committed as soon as it arrives, so a run killed mid-stage keeps every reply it received.
Several processes may read and write the same file at once: the database runs in WAL mode and a
writer waits for the lock instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from microvqa_pp.agents.base import ChatReply, ChatRequest, ImagePart
from microvqa_pp.run import sqlite

SCHEMA_VERSION = 1
"""Bumped when the key layout changes, so old entries are never read with a new meaning."""

_CREATE = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    usage TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def request_key(model: str, request: ChatRequest, image_digest: Callable[[Path], str], extra: dict[str, Any] | None = None) -> str:
    """Return the cache key of a request to `model`.

    `image_digest` maps an image file to the hash of its content; `extra` contains backend settings
    that change the reply (for example the maximum image side the backend sends).
    """
    messages = []
    for message in request.messages:
        content = []
        for part in message.content:
            if isinstance(part, ImagePart):
                content.append({"image_sha256": image_digest(part.path)})
            else:
                content.append({"text": part})
        messages.append({"role": message.role, "content": content})
    data = {
        "version": SCHEMA_VERSION,
        "model": model,
        "namespace": request.cache_namespace,
        "messages": messages,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "schema": request.schema,
        "schema_name": request.schema_name if request.schema is not None else None,
        "extra": extra or {},
    }
    # Added only when set, so that the keys of replies cached before these fields existed hold.
    for name in ("top_p", "frequency_penalty", "presence_penalty"):
        if getattr(request, name) is not None:
            data[name] = getattr(request, name)
    encoded = json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


class ResponseCache:
    """Chat replies stored in one SQLite file, keyed by `request_key`.

    Connections are opened per thread and per process, so one instance may be used from an event
    loop thread and survives a fork into worker processes.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute(_CREATE)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "busy_timeout_s": self.busy_timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.busy_timeout_s = state["busy_timeout_s"]
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection
        connection = sqlite.connect(self.path, self.busy_timeout_s, autocommit=True)
        self._local.connection = connection
        self._local.pid = os.getpid()
        return connection

    def get(self, key: str) -> ChatReply | None:
        """Return the stored reply for `key`, marked `cached`, or None."""
        row = self._connect().execute("SELECT text, usage FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return ChatReply(text=row[0], cached=True, usage=json.loads(row[1]))

    def put(self, key: str, model: str, namespace: str, reply: ChatReply) -> None:
        """Store a successful reply; a reply with an error is ignored."""
        if reply.error:
            return
        self._connect().execute(
            "INSERT OR REPLACE INTO replies (key, model, namespace, text, usage, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (key, model, namespace, reply.text, json.dumps(reply.usage), time.time()),
        )

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            connection.close()
        self._local = threading.local()
