"""Leakage groups: figures that must land in the same split.

Two figures are linked when they come from the same article, carry the same image hash, were
linked as near-duplicates at ingest (`near_duplicate_of`), or have perceptual hashes within a
given Hamming distance. A leakage group is a connected component of these links, so a chain of
near-duplicates ends up in one group even when its ends differ by more than the distance.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from microvqa_pp.records import Figure

PAIR_BLOCK_CELLS = 8_000_000
"""Hash comparisons per numpy block (64 MB of uint64), which bounds the memory of the pair search."""


class UnionFind:
    """Disjoint sets over hashable keys, with path halving and union by size."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}

    def find(self, key: str) -> str:
        parent = self._parent.setdefault(key, key)
        self._size.setdefault(key, 1)
        while parent != key:
            grandparent = self._parent[parent]
            self._parent[key] = grandparent
            key, parent = grandparent, self._parent[grandparent]
        return key

    def union(self, first: str, second: str) -> None:
        root_first, root_second = self.find(first), self.find(second)
        if root_first == root_second:
            return
        if self._size[root_first] < self._size[root_second]:
            root_first, root_second = root_second, root_first
        self._parent[root_second] = root_first
        self._size[root_first] += self._size[root_second]


def parse_phashes(phashes: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parse 64-bit hexadecimal perceptual hashes; return the values and a mask of the valid ones."""
    values = []
    valid = []
    for text in phashes:
        try:
            value = int(text, 16)
        except (TypeError, ValueError):
            value = -1
        ok = 0 <= value < 1 << 64
        values.append(value if ok else 0)
        valid.append(ok)
    return np.array(values, dtype=np.uint64), np.array(valid, dtype=bool)


def near_duplicate_pairs(phashes: list[str], max_distance: int) -> Iterator[tuple[int, int]]:
    """Yield every index pair (i < j) whose perceptual hashes differ in at most `max_distance` bits.

    Invalid or empty hashes match nothing.
    """
    # NOTE: this compares every pair, in numpy blocks: about 10^8 comparisons a second, so
    # 100,000 figures take tens of seconds. A multi-index hash would scale further but prunes
    # little at the wide distances used for leakage.
    values, valid = parse_phashes(phashes)
    count = len(values)
    rows_per_block = max(1, PAIR_BLOCK_CELLS // max(count, 1))
    for start in range(0, count, rows_per_block):
        stop = min(start + rows_per_block, count)
        distances = np.bitwise_count(values[start:stop, None] ^ values[None, start:])
        close = distances <= max_distance
        close &= valid[start:stop, None] & valid[None, start:]
        rows, columns = np.nonzero(close)
        for row, column in zip(rows.tolist(), columns.tolist()):
            first, second = start + row, start + column
            if first < second:
                yield first, second


def leakage_groups(figures: list[Figure], max_distance: int) -> dict[str, str]:
    """Map each figure id to the name of its leakage group.

    A group is named after the smallest article id among its figures. An article belongs to one
    group only, so names are unique and readable (`PMC3310724`, `01222`).
    """
    links = UnionFind()
    for figure in figures:
        node = f"figure:{figure.figure_id}"
        links.union(node, f"article:{figure.article_id}")
        if figure.image_hash:
            links.union(node, f"image:{figure.image_hash}")
        if figure.near_duplicate_of:
            # Ingest links a near-duplicate to the first figure of its group, which may have no
            # question itself. Sharing the link is enough to join the group.
            links.union(node, f"figure:{figure.near_duplicate_of}")

    for first, second in near_duplicate_pairs([figure.phash for figure in figures], max_distance):
        links.union(f"figure:{figures[first].figure_id}", f"figure:{figures[second].figure_id}")

    names: dict[str, str] = {}
    for figure in figures:
        root = links.find(f"figure:{figure.figure_id}")
        name = names.get(root)
        if name is None or figure.article_id < name:
            names[root] = figure.article_id
    return {figure.figure_id: names[links.find(f"figure:{figure.figure_id}")] for figure in figures}
