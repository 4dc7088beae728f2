"""Stages: the unit of the pipeline, and how they run, resume and record their state.

A stage reads the outputs of the stages it requires and writes one parquet file of typed
records, plus the items it rejected with a reason. Two kinds exist:

- `Stage`: a global step (train a graph, split the data set) that implements `execute`.
- `ChunkedStage`: a streaming step that splits its input into work units (`plan`), turns each
  unit into records (`process`) and optionally post-processes the whole stream (`finish`). Each
  finished unit is written to its own part file at once, so a killed run resumes with the
  units that are missing and never writes a record twice.

`run_stage` skips a stage whose output is complete and whose fingerprint (its settings and the
fingerprints of its inputs) is unchanged, and reruns it from scratch when the fingerprint changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from microvqa_pp.errors import MicroVQAError
from microvqa_pp.records import Rejection, arrow_schema, to_table
from microvqa_pp.run.executor import Executor, LocalExecutor
from microvqa_pp.run.rundir import RunDir, _now, atomic_write_text

logger = logging.getLogger(__name__)

COUNTERS_KEY = b"microvqa_pp.counters"


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
    """What `ChunkedStage.process` returns for one unit."""

    records: list[Any] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class StageResult:
    """The totals of a finished stage, stored in the manifest."""

    count: int
    rejected: dict[str, int]
    stats: dict[str, Any] = field(default_factory=dict)


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

    # Helpers for subclasses -------------------------------------------------------------------

    def write_output(self, records: list[Any]) -> None:
        """Write the stage's records atomically."""
        write_parquet(self.output_path, to_table(records, self.record_type))

    def write_rejections(self, rejections: list[Rejection]) -> None:
        write_parquet(self.rejected_path, to_table(rejections, Rejection))


class ChunkedStage(Stage):
    """A streaming stage: work units processed independently, then merged in order."""

    def plan(self) -> list[WorkUnit]:
        """Split the input into work units, in a stable order."""
        raise NotImplementedError

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        """Turn one unit into records. Call `progress(n)` after each n items when convenient."""
        raise NotImplementedError

    def stop_after(self) -> int | None:
        """Stop scheduling units once this many records are done (None: process every unit)."""
        return None

    def finish(self, tables: Iterator[pa.Table], rejections: list[Rejection]) -> Iterator[pa.Table]:
        """Post-process the merged stream of part tables; may append to `rejections`."""
        return tables

    # The run loop --------------------------------------------------------------------------

    def execute(self, executor: Executor) -> StageResult:
        parts_dir = self.run.stage_parts(self.name)
        parts_dir.mkdir(parents=True, exist_ok=True)
        units = self.plan()
        done_ids = {path.name.removesuffix(".parquet") for path in parts_dir.glob("*.parquet")}
        done_ids = {unit_id for unit_id in done_ids if not unit_id.endswith(".rejected")}
        counts = {unit.unit_id: _part_rows(parts_dir, unit.unit_id) for unit in units if unit.unit_id in done_ids}
        if done_ids:
            logger.info("%s: resuming, %d of %d work units already done", self.name, len(done_ids), len(units))

        sizes_known = all(unit.size is not None for unit in units)
        total = sum(unit.size or 0 for unit in units) if sizes_known else len(units)
        bar = tqdm(total=total, desc=self.name, unit="item" if sizes_known else "unit", leave=False)
        bar.update(sum(unit.size or 0 for unit in units if unit.unit_id in done_ids) if sizes_known else len(done_ids))

        limit = self.stop_after()
        todo = [unit for unit in units if unit.unit_id not in done_ids]
        report = bar.update if (executor.in_process and sizes_known) else _ignore_progress
        try:
            for unit, rows in zip(todo, executor.imap(_UnitRunner(self, report), todo)):
                counts[unit.unit_id] = rows
                if not (executor.in_process and sizes_known):
                    bar.update(unit.size if sizes_known else 1)
                bar.set_postfix(records=sum(counts.values()))
                if limit is not None and _prefix_count(units, counts) >= limit:
                    logger.info("%s: reached the limit of %d records", self.name, limit)
                    break
        finally:
            bar.close()

        return self._merge(units, counts)

    def _merge(self, units: list[WorkUnit], counts: dict[str, int]) -> StageResult:
        """Merge part files in unit order through `finish` into the stage's output files."""
        parts_dir = self.run.stage_parts(self.name)
        finished = [unit for unit in units if unit.unit_id in counts]
        limit = self.stop_after()
        if limit is not None:
            finished = _prefix(units, counts)

        rejections: list[Rejection] = []
        counters: Counter[str] = Counter()
        for unit in finished:
            rejected_part = parts_dir / f"{unit.unit_id}.rejected.parquet"
            if rejected_part.exists():
                rejections.extend(_read_rejections(rejected_part))
            metadata = pq.read_schema(parts_dir / f"{unit.unit_id}.parquet").metadata or {}
            counters.update(json.loads(metadata.get(COUNTERS_KEY, b"{}")))

        def part_tables() -> Iterator[pa.Table]:
            for unit in finished:
                yield pq.read_table(parts_dir / f"{unit.unit_id}.parquet").replace_schema_metadata(None)

        schema = arrow_schema(self.record_type)
        count = 0
        temporary = self.output_path.with_name(f".{self.output_path.name}.tmp")
        with pq.ParquetWriter(temporary, schema) as writer:
            for table in self.finish(part_tables(), rejections):
                if limit is not None:
                    table = table.slice(0, max(0, limit - count))
                writer.write_table(table.cast(schema))
                count += table.num_rows
        temporary.replace(self.output_path)
        self.write_rejections(rejections)
        shutil.rmtree(parts_dir, ignore_errors=True)

        rejected = Counter(rejection.reason for rejection in rejections)
        return StageResult(count=count, rejected=dict(sorted(rejected.items())), stats=dict(counters))


class _UnitRunner:
    """Picklable callable that processes one unit and writes its part files (runs in workers)."""

    def __init__(self, stage: ChunkedStage, progress: Callable[[int], None]):
        self.stage = stage
        self.progress = progress

    def __getstate__(self) -> dict[str, Any]:
        # Progress bars live in the main process; workers report when a unit finishes.
        return {"stage": self.stage, "progress": _ignore_progress}

    def __call__(self, unit: WorkUnit) -> int:
        result = self.stage.process(unit, self.progress)
        parts_dir = self.stage.run.stage_parts(self.stage.name)
        # The rejections go first: a unit counts as done once its records file exists.
        write_parquet(parts_dir / f"{unit.unit_id}.rejected.parquet", to_table(result.rejections, Rejection))
        table = to_table(result.records, self.stage.record_type)
        table = table.replace_schema_metadata({COUNTERS_KEY: json.dumps(result.counters).encode()})
        write_parquet(parts_dir / f"{unit.unit_id}.parquet", table)
        return len(result.records)


def _ignore_progress(count: int) -> None:
    return None


def _part_rows(parts_dir: Path, unit_id: str) -> int:
    return pq.read_metadata(parts_dir / f"{unit_id}.parquet").num_rows


def _prefix(units: list[WorkUnit], counts: dict[str, int]) -> list[WorkUnit]:
    """Return the leading units that are done, stopping at the first one that is not."""
    prefix = []
    for unit in units:
        if unit.unit_id not in counts:
            break
        prefix.append(unit)
    return prefix


def _prefix_count(units: list[WorkUnit], counts: dict[str, int]) -> int:
    return sum(counts[unit.unit_id] for unit in _prefix(units, counts))


def _read_rejections(path: Path) -> list[Rejection]:
    from microvqa_pp.records import from_table

    return from_table(pq.read_table(path), Rejection)


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write a parquet file atomically: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    temporary.replace(path)


def read_records(path: Path, record_type: type) -> list[Any]:
    """Read a stage's parquet output as records."""
    from microvqa_pp.records import from_table

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
    fingerprint_file = parts_dir / "FINGERPRINT"
    if parts_dir.exists() and (force or not fingerprint_file.exists() or fingerprint_file.read_text() != fingerprint):
        logger.info("%s: settings or inputs changed, discarding earlier partial work", stage.name)
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(fingerprint_file, fingerprint)

    run.set_stage(
        stage.name,
        state="running",
        fingerprint=fingerprint,
        started_at=_now(),
        output=run.relative(stage.output_path),
    )
    logger.info("%s: started", stage.name)
    started = time.perf_counter()
    executor = executor or LocalExecutor(1)
    try:
        result = stage.execute(executor)
    except BaseException as error:
        run.set_stage(stage.name, state="failed", error=f"{type(error).__name__}: {error}", finished_at=_now())
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
