"""`filter --input`: filtering a VQA data set that a user brings (MicroVQA++ parquet or JSONL)."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from microvqa_pp.cli import main
from microvqa_pp.graph import dataset
from microvqa_pp.records import FilterDecision
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records

FAST = ["--set", "filter.epochs=20", "--set", "filter.hidden_channels=16", "--set", "filter.knn_k=4"]


@pytest.fixture
def reference_signals(monkeypatch, sample):
    """Compute signals with the test's reference implementation instead of the signals package."""
    calls = []

    def factory(run, config):
        score = type(sample.score)(run.root)

        def wrapped(figures, qas):
            calls.append((len(figures), len(qas)))
            return score(figures, qas)

        return wrapped

    monkeypatch.setattr(dataset, "signals_function", factory)
    return calls


def status_json(run_root) -> dict:
    result = CliRunner().invoke(main, ["status", str(run_root), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_filter_input_on_the_demo_parquet(demo_parquet, tmp_path, reference_signals):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["filter", "--input", str(demo_parquet), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert reference_signals == [(15, 15)]

    entry = status_json(out)["stages"]["filter"]
    assert entry["state"] == "done"
    assert entry["count"] == 11
    assert entry["rejected"] == {"below_keep_share": 4}
    table = pq.read_table(out / entry["output"])
    source = pq.read_table(demo_parquet, columns=["image_name", "question"])
    assert table.num_rows == 15
    assert table.column("image_name").to_pylist() == source.column("image_name").to_pylist()
    assert table.column("question").to_pylist() == source.column("question").to_pylist()
    assert table.column("qa_id").to_pylist() == [str(row) for row in range(15)]
    for decision in read_records(out / entry["output"], FilterDecision):
        assert 0 < decision.score < 1
        assert (decision.reason == "") == decision.keep


def test_imported_qa_is_question_with_correct_answer(demo_parquet, tmp_path, reference_signals):
    from microvqa_pp.records import QA

    out = tmp_path / "run"
    CliRunner().invoke(main, ["filter", "--input", str(demo_parquet), "--out", str(out), *FAST])
    qas = read_records(RunDir(out).stage_output("generate"), QA)
    first = pq.read_table(demo_parquet).slice(0, 1).to_pylist()[0]
    assert qas[0].question == first["question"]
    assert qas[0].answer == "The EP area in 'Smn2B-/ (Fasudil)' is significantly larger compared to 'Smn2B-/ (vehicle)'."
    assert qas[0].task_str == "Expert Visual Understanding"
    assert qas[0].task == 1


def test_rerun_reuses_the_import(demo_parquet, tmp_path, reference_signals):
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(main, ["filter", "--input", str(demo_parquet), "--out", str(out), *FAST]).exit_code == 0
    assert runner.invoke(main, ["filter", "--input", str(demo_parquet), "--out", str(out), *FAST]).exit_code == 0
    assert reference_signals == [(15, 15)]


def test_filter_input_jsonl_with_bad_rows(elife_folder, tmp_path, reference_signals):
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    figures = [json.loads(line) for line in (elife_folder / "figures.jsonl").read_text().splitlines()[:4]]
    rows = []
    for number, figure in enumerate(figures):
        shutil.copy(elife_folder / figure["image"], folder / figure["image"])
        sentence = figure["caption"].split(". ")[0]
        rows.append({"image": figure["image"], "caption": figure["caption"], "question": f"What does panel {number} show?", "answer": sentence})
        rows.append({"image": figure["image"], "caption": figure["caption"], "question": "Which organism is imaged?", "answer": "E. coli"})
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    rows.append({"image": "images/broken.jpg", "caption": "A broken image of cells stained with DAPI.", "question": "What is stained?", "answer": "cells"})
    rows.append({"image": "images/absent.jpg", "caption": "An image that does not exist.", "question": "What is shown?", "answer": "nothing"})
    rows.append({"image": figures[0]["image"], "caption": figures[0]["caption"], "question": "", "answer": "E. coli"})
    path = folder / "qa.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["filter", "--input", str(path), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    decisions = read_records(RunDir(out).stage_output("filter"), FilterDecision)
    assert len(decisions) == len(rows)
    assert [decision.image_name for decision in decisions] == [row["image"] for row in rows]
    assert [decision.question for decision in decisions] == [row["question"] for row in rows]
    by_image = {decision.image_name: decision for decision in decisions}
    assert by_image["images/broken.jpg"].reason == "corrupt_image"
    assert by_image["images/absent.jpg"].reason == "missing_image"
    assert decisions[-1].reason == "empty_qa"
    for decision in decisions[-3:]:
        assert not decision.keep
        assert math.isnan(decision.score)
    scored = [decision for decision in decisions if not math.isnan(decision.score)]
    assert len(scored) == 8
    assert sum(decision.keep for decision in scored) == 6
    assert reference_signals == [(4, 8)]


def test_filter_input_needs_out(demo_parquet):
    result = CliRunner().invoke(main, ["filter", "--input", str(demo_parquet)])
    assert result.exit_code != 0
    assert "--input DATASET needs --out RUN" in result.output


def test_filter_input_rejects_unknown_format(tmp_path, reference_signals):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    result = CliRunner().invoke(main, ["filter", "--input", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "unknown data set format '.csv'" in result.output


@pytest.mark.parametrize(
    ("row", "answer"),
    [
        ({"choices": ["1) AEBSF", "2) Allopurinol"], "correct_index": 2, "correct_answer": "2) Allopurinol"}, "Allopurinol"),
        ({"choices": ["1) AEBSF", "2) Allopurinol"], "correct_index": 2}, "Allopurinol"),
        ({"choices": ["1) 0.5 mM", "2) 2.4 μg/mL"], "correct_index": 2, "correct_answer": "2) 2.4 μg/mL"}, "2.4 μg/mL"),
        ({"choices": ["0.5 mM NaCl", "2.4 μg/mL"], "correct_index": 2, "correct_answer": "2.4 μg/mL"}, "2.4 μg/mL"),
        ({"choices": ["3:1 ratio", "1:1 ratio"], "correct_index": 1}, "3:1 ratio"),
        ({"choices": ["1) a", "3) b"], "correct_index": 2, "correct_answer": "3) b"}, "3) b"),
        ({"correct_answer": "2) stays, no numbered choices"}, "2) stays, no numbered choices"),
    ],
)
def test_option_number_removed_only_from_numbered_choices(row, answer):
    assert dataset._row_answer(row) == answer
