"""Readers of evaluation data: MicroVQA parquet, the MicroVQA++ release, CSV and the hub."""

from __future__ import annotations

import csv
import hashlib
import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from microvqa_pp.errors import SourceError
from microvqa_pp.evaluation.loaders import hub_table, load_dataset, load_tables


def test_microvqa_parquet_with_images(microvqa_parquet: Path, tmp_path: Path, make_png) -> None:
    loaded = load_dataset(str(microvqa_parquet), tmp_path / "images")

    assert loaded.layout == "microvqa"
    assert loaded.rejections == []
    assert [question.question_id for question in loaded.questions] == ["q-1", "q-2", "q-3", "q-4"]
    assert [question.correct_index for question in loaded.questions] == [1, 0, 1, 3]
    assert [question.task for question in loaded.questions] == [1, 2, 3, 1]
    assert [question.blooms_name for question in loaded.questions] == ["Comprehension", "Analysis", "Analysis", "Comprehension"]
    assert [len(question.images) for question in loaded.questions] == [1, 2, 1, 0]

    second = loaded.questions[1]
    expected = hashlib.sha256(make_png((30, 200, 30))).hexdigest()
    assert second.image_sha256[0] == expected
    assert Path(second.images[0]) == tmp_path / "images" / expected[:2] / f"{expected}.png"
    assert Path(second.images[0]).read_bytes() == make_png((30, 200, 30))


def test_task_id_from_spelled_task_str(tiny_rows: list[dict], parquet_writer, tmp_path: Path) -> None:
    spellings = ["expert_visual_understanding", "Hypothesis-Generation", "experimental  proposal", "Cell counting"]
    for row, spelling in zip(tiny_rows, spellings):
        row["task"] = None
        row["task_str"] = spelling
    path = parquet_writer(tmp_path / "data.parquet", tiny_rows)

    loaded = load_dataset(str(path), tmp_path / "images")

    assert [question.task for question in loaded.questions] == [1, 2, 3, None]
    assert [question.task_str for question in loaded.questions] == spellings


def test_release_schema_normalised(demo_parquet: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = pq.read_table(demo_parquet).to_pylist()
    with caplog.at_level(logging.INFO, logger="microvqa_pp.evaluation.loaders"):
        loaded = load_dataset(str(demo_parquet), tmp_path / "images")

    assert loaded.layout == "microvqa-pp-release"
    assert "MicroVQA++ release schema detected" in caplog.text
    assert "1-based correct_index to 0-based" in caplog.text
    assert len(loaded.questions) == 15
    for question, row in zip(loaded.questions, raw):
        assert question.correct_index == row["correct_index"] - 1
        assert f"{question.correct_index + 1}) {question.choices[question.correct_index]}" == row["correct_answer"]
        assert not any(choice[:3] in ("1) ", "2) ", "3) ", "4) ") for choice in question.choices)
        assert question.task_str == row["task_str"]
        assert len(question.images) == 1
    assert loaded.questions[0].choices[1] == "The EP area in 'Smn2B-/ (Fasudil)' is significantly larger compared to 'Smn2B-/ (vehicle)'."
    assert loaded.questions[0].question_id == raw[0]["image_name"]


def test_demo_csv(microvqa_csv: Path, tmp_path: Path) -> None:
    loaded = load_dataset(str(microvqa_csv), tmp_path / "images")
    with open(microvqa_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    assert loaded.layout == "microvqa-csv"
    assert len(loaded.questions) == 51
    assert loaded.rejections == []
    first = loaded.questions[0]
    assert first.question_id == "500"
    assert first.correct_index == 1
    assert len(first.choices) == 4
    assert first.choices[1].startswith("Higher laser power provides more energy")
    assert first.images == []
    assert [question.correct_index for question in loaded.questions] == [int(row["correct_index"]) for row in rows]


def test_csv_choices_never_run_code(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    marker = tmp_path / "ran"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key_question", "question", "choices", "correct_index"])
        writer.writerow(["1", "Which?", f"__import__('pathlib').Path({str(marker)!r}).touch()", "0"])
        writer.writerow(["2", "Which?", "['a', 'b']", "5"])
        writer.writerow(["3", "Which?", "['a', 'b']", "1"])

    loaded = load_dataset(str(path), tmp_path / "images")

    assert not marker.exists()
    assert [question.question_id for question in loaded.questions] == ["3"]
    assert [(rejection.item_id, rejection.reason) for rejection in loaded.rejections] == [
        ("1", "invalid_choices"),
        ("2", "invalid_correct_index"),
    ]


def test_bad_rows_become_rejections(tmp_path: Path, tiny_rows: list[dict], parquet_writer) -> None:
    rows = tiny_rows[:2]
    rows[1]["choices"] = ["only one"]
    rows[1]["correct_index"] = 0
    path = parquet_writer(tmp_path / "bad.parquet", rows)
    table = pq.read_table(path)
    corrupt = pa.array([[{"bytes": b"not an image", "path": None}], []], type=table.schema.field("images_list").type)
    table = table.set_column(table.schema.get_field_index("images_list"), "images_list", corrupt)

    loaded = load_tables("bad", [table], tmp_path / "images")

    assert loaded.questions == []
    assert [(rejection.item_id, rejection.reason) for rejection in loaded.rejections] == [
        ("q-1", "invalid_image"),
        ("q-2", "too_few_choices"),
    ]


def test_folder_of_parquet_files(tmp_path: Path, tiny_rows: list[dict], parquet_writer) -> None:
    parquet_writer(tmp_path / "shards" / "train-00000-of-00002.parquet", tiny_rows[:2])
    parquet_writer(tmp_path / "shards" / "train-00001-of-00002.parquet", tiny_rows[2:])
    loaded = load_dataset(str(tmp_path / "shards"), tmp_path / "images")
    assert [question.question_id for question in loaded.questions] == ["q-1", "q-2", "q-3", "q-4"]


def test_run_folder_uses_test_export(tmp_path: Path, tiny_rows: list[dict], parquet_writer, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    (run / "manifest.json").parent.mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    # The export's layout: MicroVQA files under microvqa/, the release schema under data/.
    parquet_writer(run / "export" / "microvqa" / "test-00000-of-00001.parquet", tiny_rows[:1])
    parquet_writer(run / "export" / "microvqa" / "train-00000-of-00001.parquet", tiny_rows[1:])
    (run / "export" / "data").mkdir()
    pq.write_table(pa.table({"question": ["release schema"]}), run / "export" / "data" / "test-00000-of-00001.parquet")

    with caplog.at_level(logging.INFO, logger="microvqa_pp.evaluation.loaders"):
        loaded = load_dataset(str(run), tmp_path / "images")

    assert [question.question_id for question in loaded.questions] == ["q-1"]
    assert f"run folder {run}: evaluating the exported export/microvqa/test-00000-of-00001.parquet" in caplog.messages


@pytest.mark.parametrize("exported", [False, True], ids=["no-export", "release-schema-only"])
def test_run_folder_without_microvqa_export(tmp_path: Path, exported: bool, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    if exported:
        (run / "export" / "data").mkdir(parents=True)
        pq.write_table(pa.table({"question": ["release schema"]}), run / "export" / "data" / "test-00000-of-00001.parquet")

    with caplog.at_level(logging.INFO, logger="microvqa_pp.evaluation.loaders"), pytest.raises(SourceError) as raised:
        load_dataset(str(run), tmp_path / "images")

    message = str(raised.value)
    assert message.startswith(f"run folder {run} has no export in the MicroVQA layout")
    assert f"no parquet file with an images_list column under {run / 'export'}" in message
    assert f"Run `microvqa-pp export {run}` first" in message
    assert not any("evaluating the exported" in line for line in caplog.messages)


def test_hub_id_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(SourceError) as raised:
        load_dataset("jmhb/microvqa", tmp_path / "images")
    assert time.perf_counter() - started < 30
    message = str(raised.value)
    assert "jmhb/microvqa" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "local parquet file" in message


def test_hub_loader_reads_data_folder(tmp_path: Path, parquet_writer) -> None:
    # `datasets.load_dataset` on a local folder runs the same loader as for a hub id, minus the
    # download: one split, image structs kept as bytes.
    parquet_writer(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet")
    table = hub_table(str(tmp_path / "repo"), None)
    loaded = load_tables("repo", [table], tmp_path / "images")
    assert [question.question_id for question in loaded.questions] == ["q-1", "q-2", "q-3", "q-4"]
    assert [len(question.images) for question in loaded.questions] == [1, 2, 1, 0]


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="neither an existing file"):
        load_dataset("no-such-file.parquet", tmp_path / "images")
