"""Executors that run a stage's work units: in this process, in local worker processes, or on Ray.

An executor maps a picklable function over work units and yields the results in the order of the
units, keeping at most a bounded number of units in flight, so that a caller can stop early (for
`--limit`) and memory stays flat however many units a stage has.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

from microvqa_pp.deps import require

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class Executor(ABC):
    """Runs work units; `workers` is the number that run at once."""

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers

    @property
    def in_process(self) -> bool:
        """True when units run in this process, so that they can report progress directly."""
        return False

    @abstractmethod
    def imap(self, function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Yield `function(item)` for each item, in the order of `items`."""

    def close(self) -> None:
        """Release workers; the executor cannot be used afterwards."""


class LocalExecutor(Executor):
    """Runs units in this process (`workers=1`) or in a pool of worker processes."""

    def __init__(self, workers: int = 1):
        super().__init__(workers)
        self._pool: ProcessPoolExecutor | None = None

    @property
    def in_process(self) -> bool:
        return self.workers == 1

    def imap(self, function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self.workers == 1:
            for item in items:
                yield function(item)
            return

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        window: deque[Future[R]] = deque()
        try:
            for item in items:
                window.append(self._pool.submit(function, item))
                if len(window) >= 2 * self.workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            # A caller that stops early (or an error) cancels the units that have not started.
            for future in window:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Runs units as Ray tasks on the cluster at `address` (None starts or joins a local one)."""

    def __init__(self, workers: int = 1, address: str | None = None):
        super().__init__(workers)
        self._ray = require("ray", extra="ray", feature="the Ray executor")
        if not self._ray.is_initialized():
            self._ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)

    def imap(self, function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        remote_function = self._ray.remote(function)
        window: deque[Any] = deque()
        try:
            for item in items:
                window.append(remote_function.remote(item))
                if len(window) >= 2 * self.workers:
                    yield self._ray.get(window.popleft())
            while window:
                yield self._ray.get(window.popleft())
        finally:
            for reference in window:
                self._ray.cancel(reference)


def make_executor(kind: str, workers: int, address: str | None = None) -> Executor:
    """Build the executor named in the configuration (`local` or `ray`)."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address=address)
    raise ValueError(f"unknown executor {kind!r}; choose 'local' or 'ray'")
