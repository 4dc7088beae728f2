"""Leakage groups: article, image hash, ingest near-duplicate links and perceptual-hash distance."""

from __future__ import annotations

import itertools
import random

from microvqa_pp.records import Figure
from microvqa_pp.release.grouping import UnionFind, leakage_groups, near_duplicate_pairs


def make_figure(figure_id: str, article: str, phash: str, image_hash: str = "", near: str = "") -> Figure:
    return Figure(
        figure_id=figure_id,
        caption="caption",
        image_path="",
        image_sha256=image_hash or figure_id,
        image_hash=image_hash or f"hash-{figure_id}",
        phash=phash,
        width=100,
        height=100,
        image_format="jpg",
        article_id=article,
        pmcid=article,
        license="CC BY",
        license_group="commercial",
        near_duplicate_of=near,
    )


def test_union_find_joins_chains():
    links = UnionFind()
    links.union("a", "b")
    links.union("c", "d")
    links.union("b", "d")
    links.find("e")
    assert links.find("a") == links.find("c") == links.find("d")
    assert links.find("e") != links.find("a")


def test_pairs_match_brute_force():
    rng = random.Random(3)
    base = rng.getrandbits(64)
    hashes = []
    for _ in range(60):
        value = base
        for bit in rng.sample(range(64), rng.randint(0, 14)):
            value ^= 1 << bit
        hashes.append(f"{value:016x}")
    expected = {
        (first, second)
        for first, second in itertools.combinations(range(len(hashes)), 2)
        if (int(hashes[first], 16) ^ int(hashes[second], 16)).bit_count() <= 6
    }
    assert expected, "the sample must contain close pairs"
    assert set(near_duplicate_pairs(hashes, 6)) == expected


def test_pairs_skip_invalid_hashes():
    pairs = list(near_duplicate_pairs(["ffffffffffffffff", "", "not-hex", "ffffffffffffffff"], 0))
    assert pairs == [(0, 3)]


def test_same_article_shares_group():
    figures = [make_figure("f1", "PMC1", "0000000000000000"), make_figure("f2", "PMC1", "ffffffffffffffff"), make_figure("f3", "PMC2", "00000000ffffffff")]
    groups = leakage_groups(figures, max_distance=4)
    assert groups["f1"] == groups["f2"] == "PMC1"
    assert groups["f3"] == "PMC2"


def test_same_image_hash_shares_group():
    figures = [make_figure("f1", "PMC1", "0000000000000000", image_hash="same"), make_figure("f2", "PMC2", "ffffffffffffffff", image_hash="same")]
    groups = leakage_groups(figures, max_distance=0)
    assert groups["f1"] == groups["f2"] == "PMC1"


def test_ingest_near_duplicate_link_shares_group():
    # f2 and f3 were both linked to f0, a figure without questions that is not in the list.
    figures = [make_figure("f2", "PMC2", "0000000000000000", near="f0"), make_figure("f3", "PMC3", "ffffffffffffffff", near="f0"), make_figure("f4", "PMC4", "00000000ffffffff")]
    groups = leakage_groups(figures, max_distance=0)
    assert groups["f2"] == groups["f3"] == "PMC2"
    assert groups["f4"] == "PMC4"


def test_phash_chain_shares_group():
    # f1-f2 and f2-f3 differ in 3 bits each, f1-f3 in 6: the chain joins all three at distance 3.
    figures = [make_figure("f1", "PMC9", "0000000000000000"), make_figure("f2", "PMC5", "0000000000000007"), make_figure("f3", "PMC7", "0000000000000038"), make_figure("f4", "PMC1", "ffffffffffffffff")]
    groups = leakage_groups(figures, max_distance=3)
    assert groups["f1"] == groups["f2"] == groups["f3"] == "PMC5"
    assert groups["f4"] == "PMC1"
    separate = leakage_groups(figures, max_distance=2)
    assert len({separate["f1"], separate["f2"], separate["f3"]}) == 3
