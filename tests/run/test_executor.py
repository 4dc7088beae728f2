"""Executors: results in input order, and nothing left running after an early stop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from microvqa_pp.run.executor import LocalExecutor, RayExecutor, make_executor


def square_after(item: tuple[int, float]) -> int:
    value, delay = item
    time.sleep(delay)
    return value * value


class WriteMarker:
    """Sleeps, then writes a file named after the item (picklable for worker processes)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, item: int) -> int:
        time.sleep(0.2)
        (self.folder / f"{item}.done").write_text("done")
        return item


def fail_on_three(item: int) -> int:
    if item == 3:
        raise ValueError("item 3 is broken")
    return item


def test_in_process_executor():
    executor = LocalExecutor(1)

    assert executor.in_process
    assert list(executor.imap(square_after, [(value, 0.0) for value in range(5)])) == [0, 1, 4, 9, 16]


def test_worker_processes_keep_input_order():
    executor = LocalExecutor(2)
    try:
        # Earlier items take longer, so they finish after later ones.
        results = list(executor.imap(square_after, [(value, 0.05 * (5 - value)) for value in range(6)]))
    finally:
        executor.close()

    assert not executor.in_process
    assert results == [0, 1, 4, 9, 16, 25]


def test_early_stop_waits_for_running_units(tmp_path):
    executor = LocalExecutor(2)
    try:
        results = executor.imap(WriteMarker(tmp_path), range(20))
        assert next(results) == 0
        results.close()
        written = sorted(path.name for path in tmp_path.iterdir())
        time.sleep(0.5)
        assert sorted(path.name for path in tmp_path.iterdir()) == written
        assert len(written) < 20
    finally:
        executor.close()


def test_worker_exception_propagates():
    executor = LocalExecutor(2)
    try:
        with pytest.raises(ValueError, match="item 3 is broken"):
            list(executor.imap(fail_on_three, range(6)))
    finally:
        executor.close()


def test_make_executor():
    assert isinstance(make_executor("local", 3), LocalExecutor)
    assert make_executor("local", 3).workers == 3
    with pytest.raises(ValueError, match="unknown executor 'dask'; choose 'local' or 'ray'"):
        make_executor("dask", 1)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        LocalExecutor(0)


def test_ray_executor_starts_lazily():
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import ray

    executor = make_executor("ray", 2)

    assert isinstance(executor, RayExecutor)
    assert not ray.is_initialized()
    executor.close()
