"""The chunked-stage runner: part files, resume after a failure, limits and fingerprints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow as pa
import pytest

from microvqa_pp.config import load_config
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
