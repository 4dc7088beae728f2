"""Nearest-training-neighbour similarity and the random-split baseline."""

from __future__ import annotations

import numpy as np
import pytest

from microvqa_pp.records import Embedding
from microvqa_pp.release import overlap


def cosine(ids, rows) -> overlap.Representation:
    matrix = np.array(rows, dtype=np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return overlap.Representation("cosine", ids, matrix, "test vectors")


def test_nearest_finds_most_similar_row():
    representation = cosine(["a", "b", "c", "d"], [[1, 0], [0, 1], [1, 0.1], [-1, 0]])
    positions, similarities = overlap.nearest(representation, np.array([0, 3]), np.array([1, 2]))
    assert positions.tolist() == [1, 0]
    assert similarities[0] == pytest.approx(1 / np.sqrt(1.01))
    assert similarities[1] == pytest.approx(0.0)


def test_nearest_without_reference():
    representation = cosine(["a"], [[1, 0]])
    positions, similarities = overlap.nearest(representation, np.array([0]), np.array([], dtype=np.int64))
    assert positions.tolist() == [-1]
    assert np.isnan(similarities[0])


def test_nearest_over_blocks(monkeypatch):
    monkeypatch.setattr(overlap, "BLOCK_ROWS", 3)
    rng = np.random.default_rng(0)
    representation = cosine([str(index) for index in range(20)], rng.normal(size=(20, 4)))
    query, reference = np.arange(0, 10), np.arange(10, 20)
    positions, similarities = overlap.nearest(representation, query, reference)
    full = representation.vectors[query] @ representation.vectors[reference].T
    assert positions.tolist() == full.argmax(axis=1).tolist()
    assert np.allclose(similarities, full.max(axis=1))


def test_phash_similarity_counts_bits():
    values = np.array([0x0, 0xF, 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    representation = overlap.Representation("phash", ["a", "b", "c"], values, "hashes")
    positions, similarities = overlap.nearest(representation, np.array([0]), np.array([1, 2]))
    assert positions.tolist() == [0]
    assert similarities[0] == pytest.approx(1 - 4 / 64)


def test_tfidf_fallback_ranks_shared_words():
    representation = overlap.tfidf_representation(["a", "b", "c"], ["actin filaments in fibroblasts", "nuclear lamina of neurons", "actin filaments stained with phalloidin"])
    positions, similarities = overlap.nearest(representation, np.array([0]), np.array([1, 2]))
    assert positions.tolist() == [1]
    assert 0 < similarities[0] < 1


def test_embeddings_need_every_item():
    embeddings = [Embedding("qa", "q1", "m", [1.0, 0.0]), Embedding("qa", "q2", "m", [0.0, 1.0])]
    assert overlap.embedding_representation(embeddings, "qa", ["q1", "q2", "q3"], "m") is None
    representation = overlap.embedding_representation(embeddings, "qa", ["q2", "q1"], "m")
    assert representation.ids == ["q2", "q1"]
    assert representation.vectors.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_embeddings_prefer_named_model():
    embeddings = [Embedding("qa", "q1", "b-model", [1.0, 0.0]), Embedding("qa", "q1", "a-model", [0.0, 2.0])]
    assert overlap.embedding_representation(embeddings, "qa", ["q1"], "b-model").description == "qa embeddings (b-model)"
    assert overlap.embedding_representation(embeddings, "qa", ["q1"], None).description == "qa embeddings (a-model)"


@pytest.mark.parametrize(("count", "share", "expected"), [(100, 0.2, 20), (10, 0.01, 1), (2, 0.9, 1), (1, 0.5, 0)])
def test_random_split_size(count, share, expected):
    mask = overlap.random_split(count, share, seed=3)
    assert int(mask.sum()) == expected
    assert np.array_equal(mask, overlap.random_split(count, share, seed=3))


def test_summary_ignores_missing_values():
    summary = overlap.summarise(np.array([0.5, np.nan, 1.0, 0.96]))
    assert summary == {"n": 3, "median": 0.96, "mean": 0.82, "share_ge_0.95": 0.6667}
