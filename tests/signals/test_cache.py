"""The SQLite cache of embeddings and scores."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np

from microvqa_pp.signals.cache import SignalCache, content_key


def test_content_key_separates_parts() -> None:
    assert content_key("ab", "c") != content_key("a", "bc")
    assert content_key("caption") == content_key("caption")
    assert len(content_key("x")) == 64


def test_vectors_round_trip_by_namespace(tmp_path) -> None:
    cache = SignalCache(tmp_path / "cache")
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    cache.put_vectors("model-a|v1", {"key": vector})

    found = cache.get_vectors("model-a|v1", ["key", "other"])
    assert list(found) == ["key"]
    assert found["key"].dtype == np.float32
    np.testing.assert_array_equal(found["key"], vector)
    assert cache.get_vectors("model-b|v1", ["key"]) == {}


def test_scores_round_trip_across_connections(tmp_path) -> None:
    first = SignalCache(tmp_path)
    first.put_scores("nli|v1", {"pair": [0.7, 0.2, 0.1, 3]})
    first.close()

    second = SignalCache(tmp_path)
    assert second.get_scores("nli|v1", ["pair"]) == {"pair": [0.7, 0.2, 0.1, 3]}


def test_many_keys_in_one_lookup(tmp_path) -> None:
    cache = SignalCache(tmp_path)
    vectors = {f"key{index}": np.full(2, index, dtype=np.float32) for index in range(1200)}
    cache.put_vectors("ns", vectors)
    found = cache.get_vectors("ns", list(vectors) + ["missing"])
    assert len(found) == 1200
    assert found["key1199"][0] == 1199.0


def test_pickled_cache_reopens(tmp_path) -> None:
    cache = SignalCache(tmp_path)
    cache.put_scores("ns", {"k": 1})
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._connection is None
    assert copy.get_scores("ns", ["k"]) == {"k": 1}


def _put_vector_together(folder, barrier) -> None:
    barrier.wait(timeout=30)
    cache = SignalCache(folder)
    cache.put_vectors("ns", {multiprocessing.current_process().name: np.ones(4, dtype=np.float32)})
    cache.close()


def test_processes_creating_one_new_cache_together(tmp_path):
    # Worker processes of a fresh run open a signal cache that does not exist yet, all at once;
    # none of them may fail with "database is locked".
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        folder = tmp_path / f"fresh-{attempt}"
        barrier = context.Barrier(6)
        workers = [context.Process(target=_put_vector_together, args=(folder, barrier), name=f"w{n}") for n in range(6)]
        for process in workers:
            process.start()
        for process in workers:
            process.join(timeout=60)
        assert [process.exitcode for process in workers] == [0] * 6, f"attempt {attempt}"
        assert len(SignalCache(folder).get_vectors("ns", [f"w{n}" for n in range(6)])) == 6
