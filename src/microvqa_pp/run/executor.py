"""Executors that run a stage's work units: in this process, in local worker processes, or on Ray.

An executor maps a picklable function over work units and yields the results in the order of the
units. At most `2 * workers` units are in flight, so that a caller can stop early (for `--limit`)
and memory stays flat however many units a stage has. When the caller stops early, or a unit
raises, the units that have not started are cancelled and the ones already running are waited
for, so no worker writes into the run folder after `imap` returns.
"""

from __future__ import annotations

import logging
import os
import sys
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, TypeVar

from microvqa_pp.deps import require
from microvqa_pp.run.rundir import forget_inherited_locks

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2
"""Units submitted ahead per worker: enough to keep every worker busy, few enough to stop early."""


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
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=forget_inherited_locks)
        window: deque[Future[R]] = deque()
        try:
            for item in items:
                window.append(self._pool.submit(function, item))
                if len(window) >= IN_FLIGHT_PER_WORKER * self.workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            # Cancel what has not started and wait for what has, so that no unit still writes
            # its part files while the caller merges or deletes them.
            for future in window:
                future.cancel()
            wait(window)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _call(function: Callable[[T], R], item: T) -> R:
    """Apply `function` to `item` (the Ray task body; Ray remote functions must be plain functions)."""
    return function(item)


class RayExecutor(Executor):
    """Runs units as Ray tasks on the cluster at `address`, or on a local Ray instance.

    With `address=None` this joins the cluster named by `RAY_ADDRESS`, or else starts a local
    instance with `workers` CPUs. Ray starts when the first unit is submitted, so a command whose
    stages are all done never starts it.

    NOTE: the tasks write part files and images into the run folder by path, so on a cluster of
    several machines the run folder must be on a file system that every node mounts at the same
    path. Tasks on other nodes see those nodes' environment, so set HF_TOKEN and HF_ENDPOINT there
    too; they are not copied into Ray's runtime environment, which Ray stores and displays.
    """

    def __init__(self, workers: int = 1, address: str | None = None):
        super().__init__(workers)
        self.address = address
        self._ray = require("ray", extra="ray", feature="the Ray executor")
        self._started_here = False
        self._remote_call: Any = None

    def _start(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if address:
                options["address"] = address
            else:
                # A local instance: tasks must import this package from the same place as the
                # driver, including a source checkout that is only on sys.path.
                options["num_cpus"] = self.workers
                options["include_dashboard"] = False
                options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
            logger.info("starting Ray (%s)", f"address {address}" if address else f"local, {self.workers} CPUs")
            ray.init(**options)
            self._started_here = True
        if self._remote_call is None:
            self._remote_call = ray.remote(_call)

    def imap(self, function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        self._start()
        ray = self._ray
        function_reference = ray.put(function)
        window: deque[Any] = deque()
        try:
            for item in items:
                window.append(self._remote_call.remote(function_reference, item))
                if len(window) >= IN_FLIGHT_PER_WORKER * self.workers:
                    yield ray.get(window.popleft())
            while window:
                yield ray.get(window.popleft())
        finally:
            for reference in window:
                ray.cancel(reference)
            if window:
                # Cancelled tasks raise when fetched; waiting makes sure none is still writing.
                ray.wait(list(window), num_returns=len(window), timeout=600)

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
        self._started_here = False
        self._remote_call = None


def make_executor(kind: str, workers: int, address: str | None = None) -> Executor:
    """Build the executor named in the configuration (`local` or `ray`)."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address=address)
    raise ValueError(f"unknown executor {kind!r}; choose 'local' or 'ray'")
