"""The near-duplicate index against a brute-force search."""

from __future__ import annotations

import random

import pytest

from microvqa_pp.ingest.dedup import NearDuplicateIndex


def _brute_force(indexed: list[tuple[int, str]], value: int, max_distance: int) -> str | None:
    for other, figure_id in indexed:
        if (value ^ other).bit_count() <= max_distance:
            return figure_id
    return None


@pytest.mark.parametrize("max_distance", [0, 1, 2, 3, 4, 6, 9])
def test_index_matches_brute_force(max_distance):
    rng = random.Random(max_distance)
    centres = [rng.getrandbits(64) for _ in range(40)]
    index = NearDuplicateIndex(max_distance)
    indexed: list[tuple[int, str]] = []

    for step in range(600):
        # Mostly variants of a few images, at distances around the threshold.
        value = rng.choice(centres)
        for bit in rng.sample(range(64), rng.randint(0, max_distance + 2)):
            value ^= 1 << bit
        found = index.find(f"{value:016x}")
        assert found == _brute_force(indexed, value, max_distance), f"step {step}"
        if found is None or rng.random() < 0.3:
            index.add(f"{value:016x}", f"figure-{step}")
            indexed.append((value, f"figure-{step}"))

    assert len(index) == len(indexed)


def test_earliest_match_wins():
    index = NearDuplicateIndex(4)
    index.add("ffffffffffffffff", "first")
    index.add("fffffffffffffff0", "second")

    assert index.find("fffffffffffffff0") == "first"
    assert index.find("00000000000000ff") is None


def test_invalid_distance():
    with pytest.raises(ValueError, match="between 0 and 64"):
        NearDuplicateIndex(65)
