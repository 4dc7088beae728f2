"""The chunked-stage runner: part files, resume after a failure, limits and fingerprints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from microvqa_pp.config import load_config
from microvqa_pp.errors import DownloadError, SourceError
from microvqa_pp.records import Rejection
from microvqa_pp.run.executor import LocalExecutor
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import ChunkedStage, UnitResult, WorkUnit, read_records, run_stage


@dataclass
class Number:
    value: int
    square: int


class SquareStage(ChunkedStage):
    """Squares 0..N-1 in units of 10; odd multiples of 7 are rejected."""

    name = "square"
    record_type = Number
    fail_on_unit: str | None = None
    processed: list[str] = []

    def __init__(self, run, config, total: int = 50):
        super().__init__(run, config)
        self.total = total

    def plan(self) -> list[WorkUnit]:
        return [WorkUnit(f"{start:04d}", (start, min(start + 10, self.total)), 10) for start in range(0, self.total, 10)]

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        if unit.unit_id == self.fail_on_unit:
            raise RuntimeError("simulated crash")
        SquareStage.processed.append(unit.unit_id)
        result = UnitResult()
        for value in range(*unit.payload):
            if value % 7 == 0 and value % 2 == 1:
                result.rejections.append(Rejection(self.name, str(value), "odd_multiple_of_seven"))
            else:
                result.records.append(Number(value, value * value))
        result.counters["seen"] = unit.payload[1] - unit.payload[0]
        return result

    def stop_after(self):
        return self.config.limit


@pytest.fixture
def run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.create()
    SquareStage.processed = []
    SquareStage.fail_on_unit = None
    return run


def test_chunked_stage_writes_all_records(run):
    result = run_stage(SquareStage(run, load_config()))
    records = read_records(run.stage_output("square"), Number)
    assert [record.value for record in records] == [v for v in range(50) if not (v % 7 == 0 and v % 2 == 1)]
    assert result.count == 46
    assert result.rejected == {"odd_multiple_of_seven": 4}
    assert result.stats == {"seen": 50}
    assert run.stage_info("square").state == "done"
    assert not run.stage_parts("square").exists()


def test_resume_after_failure_skips_finished_units(run):
    config = load_config()
    SquareStage.fail_on_unit = "0020"
    with pytest.raises(RuntimeError):
        run_stage(SquareStage(run, config))
    assert run.stage_info("square").state == "failed"
    assert SquareStage.processed == ["0000", "0010"]

    SquareStage.fail_on_unit = None
    SquareStage.processed = []
    run_stage(SquareStage(run, config))
    assert SquareStage.processed == ["0020", "0030", "0040"]
    values = [record.value for record in read_records(run.stage_output("square"), Number)]
    assert len(values) == len(set(values)) == 46


def test_done_stage_is_skipped(run):
    config = load_config()
    run_stage(SquareStage(run, config))
    SquareStage.processed = []
    run_stage(SquareStage(run, config))
    assert SquareStage.processed == []


def test_changed_settings_rerun_stage(run):
    run_stage(SquareStage(run, load_config()))
    SquareStage.processed = []
    run_stage(SquareStage(run, load_config("offline", {"seed": 3})))
    assert len(SquareStage.processed) == 5


def test_limit_truncates_in_order(run):
    result = run_stage(SquareStage(run, load_config("offline", {"limit": 12})))
    values = [record.value for record in read_records(run.stage_output("square"), Number)]
    assert result.count == 12
    assert values == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert SquareStage.processed == ["0000", "0010"]


def test_worker_processes_give_same_output(run, tmp_path):
    run_stage(SquareStage(run, load_config()), LocalExecutor(workers=2))
    parallel = read_records(run.stage_output("square"), Number)
    other = RunDir(tmp_path / "other")
    other.create()
    run_stage(SquareStage(other, load_config()))
    assert parallel == read_records(other.stage_output("square"), Number)


def test_missing_upstream_stage_is_an_error(run):
    class Downstream(SquareStage):
        name = "downstream"
        requires = ("square",)

    from microvqa_pp.errors import MicroVQAError

    with pytest.raises(MicroVQAError, match="needs the output of stage 'square'"):
        run_stage(Downstream(run, load_config()))


class FlakyStage(SquareStage):
    """Units listed in `failing` raise `error`: a DownloadError by default, as a failed download does."""

    name = "flaky"
    failing: set[str] = set()
    error: type[Exception] = DownloadError

    def process(self, unit, progress):
        if unit.unit_id in FlakyStage.failing:
            raise FlakyStage.error(f"cannot read unit {unit.unit_id}")
        return super().process(unit, progress)


def test_failed_unit_lets_others_finish(run):
    from microvqa_pp.run.stage import StageIncomplete

    FlakyStage.failing = {"0010", "0030"}
    FlakyStage.error = DownloadError
    with pytest.raises(StageIncomplete, match=r"2 of 5 work units of stage 'flaky' failed \(first: unit 0010: DownloadError: cannot read unit 0010\)"):
        run_stage(FlakyStage(run, load_config()))
    assert SquareStage.processed == ["0000", "0020", "0040"]
    assert run.stage_info("flaky").state == "failed"
    assert not run.stage_output("flaky").exists()

    FlakyStage.failing = set()
    SquareStage.processed = []
    result = run_stage(FlakyStage(run, load_config()))
    assert SquareStage.processed == ["0010", "0030"]
    assert result.count == 46


def test_other_errors_stop_the_stage(run):
    FlakyStage.failing = {"0010", "0030"}
    FlakyStage.error = SourceError
    with pytest.raises(SourceError, match="cannot read unit 0010"):
        run_stage(FlakyStage(run, load_config()))
    FlakyStage.error = DownloadError

    assert SquareStage.processed == ["0000"]
    assert run.stage_info("flaky").state == "failed"
    assert sorted(path.name for path in run.stage_parts("flaky").glob("*.parquet")) == ["0000.parquet", "0000.rejected.parquet"]


def test_changed_plan_discards_parts(run):
    config = load_config()
    SquareStage.fail_on_unit = "0020"
    with pytest.raises(RuntimeError):
        run_stage(SquareStage(run, config, total=50))

    SquareStage.fail_on_unit = None
    SquareStage.processed = []
    result = run_stage(SquareStage(run, config, total=45))
    assert SquareStage.processed == ["0000", "0010", "0020", "0030", "0040"]
    assert result.count == 45 - 3  # 7, 21 and 35 are rejected


def test_unreadable_part_is_redone(run):
    config = load_config()
    SquareStage.fail_on_unit = "0020"
    with pytest.raises(RuntimeError):
        run_stage(SquareStage(run, config))
    (run.stage_parts("square") / "0010.parquet").write_bytes(b"not parquet")

    SquareStage.fail_on_unit = None
    SquareStage.processed = []
    run_stage(SquareStage(run, config))
    assert SquareStage.processed == ["0010", "0020", "0030", "0040"]
    values = [record.value for record in read_records(run.stage_output("square"), Number)]
    assert len(values) == len(set(values)) == 46


class EvenOnlyStage(SquareStage):
    """Its `finish` drops odd values, as de-duplication drops records after the units ran."""

    name = "even"

    def finish(self, tables, rejections):
        import pyarrow.compute as pc

        for table in tables:
            odd = pc.equal(pc.bit_wise_and(table["value"], 1), 1)
            rejections.extend(Rejection(self.name, str(value), "odd") for value in table.filter(odd)["value"].to_pylist())
            yield table.filter(pc.invert(odd))


def test_limit_counts_records_after_finish(run):
    result = run_stage(EvenOnlyStage(run, load_config("offline", {"limit": 12})))

    values = [record.value for record in read_records(run.stage_output("even"), Number)]
    assert values == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]
    assert result.count == 12
    assert SquareStage.processed == ["0000", "0010", "0020"]
    assert result.rejected == {"odd": 13, "odd_multiple_of_seven": 2}


def test_limit_with_workers_leaves_no_parts(run):
    executor = LocalExecutor(workers=2)
    try:
        result = run_stage(SquareStage(run, load_config("offline", {"limit": 12})), executor)
    finally:
        executor.close()

    values = [record.value for record in read_records(run.stage_output("square"), Number)]
    assert values == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert result.count == 12
    assert not run.stage_parts("square").exists()


def test_parts_removed_only_after_done(run, monkeypatch):
    states_at_cleanup = []
    original = SquareStage.cleanup

    def cleanup(self):
        states_at_cleanup.append((run.stage_info("square").state, self.run.stage_parts("square").exists()))
        original(self)

    monkeypatch.setattr(SquareStage, "cleanup", cleanup)
    run_stage(SquareStage(run, load_config()))
    assert states_at_cleanup == [("done", True)]
    assert not run.stage_parts("square").exists()


def test_stale_temporary_output_is_removed(run):
    stale = run.stage_output("square").with_name(".square.parquet.999999.tmp")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"left by a killed process")

    run_stage(SquareStage(run, load_config()))
    assert not stale.exists()
    assert sorted(path.name for path in run.stages_dir.iterdir()) == ["square.parquet", "square.rejected.parquet"]


def test_manifest_records_counts_and_stats(run):
    run_stage(SquareStage(run, load_config()))

    entry = run.read_manifest()["stages"]["square"]
    assert entry["state"] == "done"
    assert entry["count"] == 46
    assert entry["rejected"] == {"odd_multiple_of_seven": 4}
    assert entry["stats"] == {"seen": 50}
    assert entry["output"] == "stages/square.parquet"
    assert entry["error"] is None
    assert entry["seconds"] >= 0
