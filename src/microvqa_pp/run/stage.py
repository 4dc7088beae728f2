"""Stages: the unit of the pipeline, and how they run, resume and record their state.

A stage reads the outputs of the stages it requires and writes one parquet file of typed
records, plus the items it rejected with a reason. Two kinds exist:

- `Stage`: a global step (train a graph, split the data set) that implements `execute`.
- `ChunkedStage`: a streaming step that splits its input into work units (`plan`), turns each
  unit into records (`process`) and optionally post-processes the stream of units in order
  (`finish`). Each finished unit is written to its own part file at once, so a killed run
  resumes with the units that are missing and never writes a record twice.

`run_stage` skips a stage whose output is complete and whose fingerprint (its settings and the
fingerprints of its inputs) is unchanged, and reruns it from scratch when the fingerprint changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from microvqa_pp.config import Config
from microvqa_pp.errors import MicroVQAError, UnitError
from microvqa_pp.records import Rejection, arrow_schema, from_table, to_table
from microvqa_pp.run.executor import Executor, LocalExecutor
from microvqa_pp.run.rundir import RunDir, _now, atomic_write_text

logger = logging.getLogger(__name__)

COUNTERS_KEY = b"microvqa_pp.counters"
FINGERPRINT_FILE = "FINGERPRINT"
PLAN_FILE = "PLAN"


@dataclass(frozen=True)
class WorkUnit:
    """One independent piece of a stage's input.

    `unit_id` names the part file and must be stable across runs; units run and are merged in
    the order `plan` returns them. `size` is the number of items when known (for progress).
    """

    unit_id: str
    payload: Any
    size: int | None = None


@dataclass
class UnitResult:
    """The records, rejections and counters of one processed unit (`ChunkedStage.process`)."""

    records: list[Any] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class StageResult:
    """The totals of a finished stage, stored in the manifest."""

    count: int
    rejected: dict[str, int]
    stats: dict[str, Any] = field(default_factory=dict)


class StageIncomplete(MicroVQAError):
    """Some work units of a stage failed with a UnitError; the others are kept, and a rerun
    retries the failed ones."""


class Stage(ABC):
    """A pipeline step with a name, its inputs and settings, and one output parquet file."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    """Stages whose outputs this stage reads; they must be done first."""
    config_sections: ClassVar[tuple[str, ...]] = ()
    """Top-level configuration sections that change this stage's output."""
    record_type: ClassVar[type]

    def __init__(self, run: RunDir, config: Config):
        self.run = run
        self.config = config

    @property
    def output_path(self) -> Path:
        return self.run.stage_output(self.name)

    @property
    def rejected_path(self) -> Path:
        return self.run.stage_rejected(self.name)

    def fingerprint_inputs(self) -> dict[str, Any]:
        """Extra values that change the output besides settings and upstream stages."""
        return {}

    def fingerprint(self) -> str:
        """Return a hash of everything that changes this stage's output."""
        upstream = {name: self.run.stage_entry(name).get("fingerprint", "") for name in self.requires}
        data = {
            "stage": self.name,
            "settings": self.config.section_fingerprint("seed", "limit", *self.config_sections),
            "upstream": upstream,
            "inputs": self.fingerprint_inputs(),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @abstractmethod
    def execute(self, executor: Executor) -> StageResult:
        """Do the stage's work, write `output_path` and `rejected_path`, and return the totals."""

    def cleanup(self) -> None:
        """Remove intermediate files; `run_stage` calls this once the stage is recorded as done."""
        shutil.rmtree(self.run.stage_parts(self.name), ignore_errors=True)

    # Helpers for subclasses -------------------------------------------------------------------

    def write_output(self, records: list[Any]) -> None:
        """Write the stage's records atomically."""
        write_parquet(self.output_path, to_table(records, self.record_type))

    def write_rejections(self, rejections: list[Rejection]) -> None:
        write_parquet(self.rejected_path, to_table(rejections, Rejection))


class ChunkedStage(Stage):
    """A streaming stage: work units processed independently, then merged in order.

    The merge pulls units in plan order: `finish` receives each unit's table as soon as that
    unit and every unit before it are done, while later units are still being processed. Once
    the output contains `stop_after()` records, no further unit is scheduled.
    """

    def plan(self) -> list[WorkUnit]:
        """Split the input into work units, in a stable order."""
        raise NotImplementedError

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        """Turn one unit into records. Call `progress(n)` after each n items when convenient."""
        raise NotImplementedError

    def stop_after(self) -> int | None:
        """Return the record count at which the stage stops (None: process every unit).

        The rejections and counters then cover every unit that was merged, including the part of
        the last one beyond the limit.
        """
        return None

    def finish(self, tables: Iterator[pa.Table], rejections: list[Rejection]) -> Iterator[pa.Table]:
        """Post-process the stream of part tables, in unit order; may append to `rejections`.

        `tables` is lazy: the rejections of a unit are in `rejections` once its table is yielded.
        """
        return tables

    # The run loop --------------------------------------------------------------------------

    def execute(self, executor: Executor) -> StageResult:
        units = self.plan()
        parts_dir = self.run.stage_parts(self.name)
        _discard_parts_of_another_plan(parts_dir, units)
        done = _finished_units(parts_dir, units)
        logger.info(
            "%s: %d work unit%s, %d already done%s",
            self.name,
            len(units),
            "" if len(units) == 1 else "s",
            len(done),
            "" if not done else " (resuming)",
        )

        merge = _Merge(self, executor, units, done)
        limit = self.stop_after()
        schema = arrow_schema(self.record_type)
        count = 0
        temporary = self.output_path.with_name(f".{self.output_path.name}.{os.getpid()}.tmp")
        temporary.parent.mkdir(parents=True, exist_ok=True)
        try:
            with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
                stream = self.finish(merge.tables(), merge.rejections)
                try:
                    for table in stream:
                        if limit is not None:
                            table = table.slice(0, max(0, limit - count))
                        writer.write_table(table.cast(schema))
                        count += table.num_rows
                        if limit is not None and count >= limit:
                            logger.info("%s: reached the limit of %d records", self.name, limit)
                            break
                finally:
                    _close(stream)
                    merge.close()
            if merge.failures:
                raise StageIncomplete(merge.failure_message())
            temporary.replace(self.output_path)
        finally:
            temporary.unlink(missing_ok=True)

        self.write_rejections(merge.rejections)
        rejected = Counter(rejection.reason for rejection in merge.rejections)
        return StageResult(count=count, rejected=dict(sorted(rejected.items())), stats=dict(sorted(merge.counters.items())))



@dataclass
class _UnitOutcome:
    """A worker's report on one unit: its record count, or the reason it failed."""

    unit_id: str
    rows: int = 0
    error: str = ""


class _UnitRunner:
    """Picklable callable that processes one unit and writes its part files (runs in workers)."""

    def __init__(self, stage: ChunkedStage, progress: Callable[[int], None]):
        self.stage = stage
        self.progress = progress

    def __getstate__(self) -> dict[str, Any]:
        # Progress bars live in the main process; workers report when a unit finishes.
        return {"stage": self.stage, "progress": _ignore_progress}

    def __call__(self, unit: WorkUnit) -> _UnitOutcome:
        try:
            result = self.stage.process(unit, self.progress)
        except UnitError as error:
            # A failure of this unit alone (a source file that cannot be downloaded): the other
            # units go on, and a rerun retries this one. Any other exception stops the stage.
            return _UnitOutcome(unit.unit_id, error=f"{type(error).__name__}: {error}")

        parts_dir = self.stage.run.stage_parts(self.stage.name)
        # The rejections go first: a unit counts as done once its records file exists.
        write_parquet(parts_dir / f"{unit.unit_id}.rejected.parquet", to_table(result.rejections, Rejection))
        table = to_table(result.records, self.stage.record_type)
        table = table.replace_schema_metadata({COUNTERS_KEY: json.dumps(result.counters).encode()})
        write_parquet(parts_dir / f"{unit.unit_id}.parquet", table)
        return _UnitOutcome(unit.unit_id, rows=len(result.records))


class _Merge:
    """The merge loop of a chunked stage: it runs the units that are not done and yields every
    unit's part table in plan order."""

    def __init__(self, stage: ChunkedStage, executor: Executor, units: list[WorkUnit], done: set[str]):
        self.stage = stage
        self.executor = executor
        self.units = units
        self.done = done
        self.parts_dir = stage.run.stage_parts(stage.name)
        self.rejections: list[Rejection] = []
        self.counters: Counter[str] = Counter()
        self.failures: list[_UnitOutcome] = []
        self.records = 0

        sizes_known = all(unit.size is not None for unit in units)
        self.item_progress = sizes_known
        # Units that run in this process move the bar item by item; others when they finish.
        self.reports_items = executor.in_process and sizes_known
        total = sum(unit.size or 0 for unit in units) if sizes_known else len(units)
        self.bar = tqdm(total=total, desc=stage.name, unit="item" if sizes_known else "unit", leave=False)
        self.bar.update(sum(self._step(unit) for unit in units if unit.unit_id in done))
        self._outcomes: Iterator[_UnitOutcome] | None = None
        self._units_by_id = {unit.unit_id: unit for unit in units}
        self._items_reported = 0

    def _report_items(self, count: int) -> None:
        self._items_reported += count
        self.bar.update(count)

    def _step(self, unit: WorkUnit) -> int:
        return (unit.size or 0) if self.item_progress else 1

    def tables(self) -> Iterator[pa.Table]:
        todo = [unit for unit in self.units if unit.unit_id not in self.done]
        runner = _UnitRunner(self.stage, self._report_items if self.reports_items else _ignore_progress)
        self._outcomes = self.executor.imap(runner, todo)
        for unit in self.units:
            if unit.unit_id not in self.done:
                outcome = next(self._outcomes)
                # Move the bar past the unit's items that its `process` did not report.
                self.bar.update(max(0, self._step(unit) - self._items_reported))
                self._items_reported = 0
                if outcome.error:
                    self._record_failure(outcome)
                    # Later units cannot be merged past a gap, but finishing them saves their work.
                    self._drain()
                    return
            yield self._read_part(unit)

    def _read_part(self, unit: WorkUnit) -> pa.Table:
        rejected_part = self.parts_dir / f"{unit.unit_id}.rejected.parquet"
        if rejected_part.exists():
            self.rejections.extend(from_table(pq.read_table(rejected_part), Rejection))
        table = pq.read_table(self.parts_dir / f"{unit.unit_id}.parquet")
        metadata = table.schema.metadata or {}
        self.counters.update(json.loads(metadata.get(COUNTERS_KEY, b"{}")))
        self.records += table.num_rows
        self.bar.set_postfix(records=self.records)
        return table.replace_schema_metadata(None)

    def _record_failure(self, outcome: _UnitOutcome) -> None:
        self.failures.append(outcome)
        logger.error("%s: work unit %s failed: %s", self.stage.name, outcome.unit_id, outcome.error)

    def _drain(self) -> None:
        assert self._outcomes is not None
        for outcome in self._outcomes:
            self.bar.update(max(0, self._step(self._units_by_id[outcome.unit_id]) - self._items_reported))
            self._items_reported = 0
            if outcome.error:
                self._record_failure(outcome)

    def failure_message(self) -> str:
        first = self.failures[0]
        return (
            f"{len(self.failures)} of {len(self.units)} work units of stage {self.stage.name!r} failed "
            f"(first: unit {first.unit_id}: {first.error}); the finished units are kept in "
            f"{self.parts_dir}. Fix the cause and run the same command again to retry the failed units."
        )

    def close(self) -> None:
        """Stop scheduling units and wait for the running ones (see Executor.imap)."""
        if self._outcomes is not None:
            _close(self._outcomes)
        self.bar.close()


def _close(iterator: Iterable[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _ignore_progress(count: int) -> None:
    return None


def _plan_digest(units: list[WorkUnit]) -> str:
    data = [(unit.unit_id, unit.payload, unit.size) for unit in units]
    return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:16]


def _discard_parts_of_another_plan(parts_dir: Path, units: list[WorkUnit]) -> None:
    """Delete part files written for a different plan (the input changed under the same settings)."""
    digest = _plan_digest(units)
    plan_file = parts_dir / PLAN_FILE
    if plan_file.exists() and plan_file.read_text() != digest:
        logger.info("%s: the input changed since the parts were written, discarding them", parts_dir.name)
        for part in parts_dir.glob("*.parquet"):
            part.unlink()
    parts_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_file, digest)


def _finished_units(parts_dir: Path, units: list[WorkUnit]) -> set[str]:
    """Return the ids of units whose part files are complete; unreadable parts are deleted."""
    done = set()
    for unit in units:
        part = parts_dir / f"{unit.unit_id}.parquet"
        if not part.exists():
            continue
        try:
            pq.read_metadata(part)
        except (OSError, pa.ArrowInvalid) as error:
            logger.warning("%s: part file %s is unreadable (%s); its unit runs again", parts_dir.name, part.name, error)
            part.unlink()
            continue
        done.add(unit.unit_id)
    return done


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write a parquet file atomically: readers never see a partial file.

    The temporary name is unique per process, so two processes writing the same part (a worker
    left over from a killed run and its rerun) cannot mix their bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, temporary, compression="zstd")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def read_records(path: Path, record_type: type) -> list[Any]:
    """Read a stage's parquet output as records."""
    return from_table(pq.read_table(path), record_type)


def run_stage(stage: Stage, executor: Executor | None = None, *, force: bool = False) -> StageResult:
    """Run `stage` unless its output is complete and up to date; record its state in the manifest."""
    run = stage.run
    for name in stage.requires:
        if run.stage_entry(name).get("state") != "done":
            raise MicroVQAError(
                f"stage {stage.name!r} needs the output of stage {name!r}, which is not done in "
                f"{run.root}; run `microvqa-pp {name} {run.root}` (or `build`) first"
            )

    fingerprint = stage.fingerprint()
    entry = run.stage_entry(stage.name)
    if (
        not force
        and entry.get("state") == "done"
        and entry.get("fingerprint") == fingerprint
        and stage.output_path.exists()
    ):
        logger.info("%s: already done (%d records), skipping", stage.name, entry.get("count", 0))
        return StageResult(entry.get("count", 0), entry.get("rejected", {}), entry.get("stats", {}))

    parts_dir = run.stage_parts(stage.name)
    fingerprint_file = parts_dir / FINGERPRINT_FILE
    if parts_dir.exists() and (force or not fingerprint_file.exists() or fingerprint_file.read_text() != fingerprint):
        logger.info("%s: settings or inputs changed, discarding earlier partial work", stage.name)
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(fingerprint_file, fingerprint, fsync=False)  # if lost, the parts are only redone
    for stale in stage.output_path.parent.glob(f".{stage.output_path.name}.*.tmp"):
        stale.unlink(missing_ok=True)

    run.set_stage(
        stage.name,
        state="running",
        fingerprint=fingerprint,
        # The fingerprints of the stages this one read, so `status` can tell when one has changed since.
        upstream={name: run.stage_entry(name).get("fingerprint", "") for name in stage.requires},
        started_at=_now(),
        output=run.relative(stage.output_path),
    )
    logger.info("%s: started", stage.name)
    started = time.perf_counter()
    executor = executor or LocalExecutor(1)
    try:
        result = stage.execute(executor)
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            message = "interrupted (Ctrl-C); run the same command again to resume"
        else:
            message = f"{type(error).__name__}: {error}"
        run.set_stage(stage.name, state="failed", error=message, finished_at=_now())
        raise
    seconds = time.perf_counter() - started
    run.set_stage(
        stage.name,
        state="done",
        count=result.count,
        rejected=result.rejected,
        stats=result.stats,
        seconds=round(seconds, 3),
        finished_at=_now(),
        error=None,
    )
    stage.cleanup()
    rejected_total = sum(result.rejected.values())
    logger.info(
        "%s: done in %.1f s, %d records, %d rejected%s",
        stage.name,
        seconds,
        result.count,
        rejected_total,
        f" ({_format_counts(result.rejected)})" if rejected_total else "",
    )
    return result


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items(), key=lambda item: -item[1]))


def iter_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Yield lists of at most `size` items."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
