"""A SQLite cache of embeddings and model scores, keyed by model identity and content hash.

A value is stored under a namespace (the model identity, what was computed and the version of
the code that computed it) and a key (a SHA-256 of the input content). Neither the batch size
nor the device is part of either, so a rerun with other settings of those reuses every value.
Several worker processes may share one cache file: SQLite's write-ahead log lets them read while
one writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from microvqa_pp.run import sqlite

CACHE_FILE = "signals.sqlite"
_MAX_PARAMETERS = 500  # keys per SELECT, below SQLite's limit on bound parameters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scores (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""


def content_key(*parts: str) -> str:
    """Return the SHA-256 of the parts, separated so that ("ab", "c") and ("a", "bc") differ."""
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


class SignalCache:
    """Vectors (float32) and JSON scores in one SQLite file under `folder`.

    The connection opens on first use and is not pickled, so a stage holding a cache can be
    sent to worker processes.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / CACHE_FILE
        self._connection: sqlite3.Connection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_connection": None}

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite.connect(self.path, busy_timeout_s=60.0)
            connection.executescript(_SCHEMA)
            self._connection = connection
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # Vectors ---------------------------------------------------------------------------------

    def _select(self, table: str, column: str, namespace: str, keys: Iterable[str]) -> Iterator[tuple[str, Any]]:
        """Yield (key, stored value) of the keys of `namespace` that `table` contains."""
        for chunk in _chunks(list(dict.fromkeys(keys))):
            placeholders = ",".join("?" * len(chunk))
            yield from self.connection.execute(
                f"SELECT key, {column} FROM {table} WHERE namespace = ? AND key IN ({placeholders})",
                (namespace, *chunk),
            )

    def get_vectors(self, namespace: str, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Return the cached vectors of the keys that are present."""
        return {key: np.frombuffer(blob, dtype=np.float32).copy() for key, blob in self._select("vectors", "vector", namespace, keys)}

    def put_vectors(self, namespace: str, vectors: dict[str, np.ndarray]) -> None:
        rows = [(namespace, key, np.asarray(vector, dtype=np.float32).tobytes()) for key, vector in vectors.items()]
        with self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    # Scores ----------------------------------------------------------------------------------

    def get_scores(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        """Return the cached JSON values of the keys that are present."""
        return {key: json.loads(value) for key, value in self._select("scores", "value", namespace, keys)}

    def put_scores(self, namespace: str, values: dict[str, Any]) -> None:
        rows = [(namespace, key, json.dumps(value)) for key, value in values.items()]
        with self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", rows)


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _MAX_PARAMETERS):
        yield keys[start : start + _MAX_PARAMETERS]
