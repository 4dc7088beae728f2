"""De-duplication of figures over the whole ingest stream.

Exact duplicates share an `image_hash` (BIOMEDICA's hash, or the SHA-256 of the bytes when a
source has none). Near-duplicates have 64-bit perceptual hashes within `max_distance` bits. To
find them without comparing every pair, each hash is split into `max_distance + 1` bands: two
hashes within that distance agree exactly on at least one band (pigeonhole principle), so only
hashes sharing a band are compared. The first figure in stream order represents its group.
"""

from __future__ import annotations

from collections import defaultdict


class NearDuplicateIndex:
    """Finds the earliest indexed hash within `max_distance` bits of a 64-bit hash."""

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        band_count = max_distance + 1
        self._bands = [(index * 64 // band_count, (index + 1) * 64 // band_count) for index in range(band_count)]
        self._buckets: list[dict[int, list[tuple[int, int, str]]]] = [defaultdict(list) for _ in self._bands]
        self._size = 0

    def _band_values(self, value: int) -> list[int]:
        return [(value >> low) & ((1 << (high - low)) - 1) for low, high in self._bands]

    def find(self, phash_hex: str) -> str | None:
        """Return the id of the earliest indexed figure within `max_distance`, or None."""
        value = int(phash_hex, 16)
        best: tuple[int, str] | None = None
        for bucket, band_value in zip(self._buckets, self._band_values(value)):
            for sequence, other, figure_id in bucket.get(band_value, ()):
                if (value ^ other).bit_count() <= self.max_distance and (best is None or sequence < best[0]):
                    best = (sequence, figure_id)
        return best[1] if best else None

    def add(self, phash_hex: str, figure_id: str) -> None:
        value = int(phash_hex, 16)
        for bucket, band_value in zip(self._buckets, self._band_values(value)):
            bucket[band_value].append((self._size, value, figure_id))
        self._size += 1
