"""Stage `export`: Hugging Face parquet in the release schema, MicroVQA layout, chat files, card."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import shutil
from pathlib import Path

import datasets
import imagehash
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from microvqa_pp.config import load_config
from microvqa_pp.pipeline import run_stages
from microvqa_pp.records import ExportedQuestion, Figure, SplitAssignment
from microvqa_pp.release import formats
from microvqa_pp.release.card import hf_license_id, yaml_lines
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records

RELEASE_COLUMNS = ["image_name", "image", "question", "choices", "correct_index", "correct_answer", "cot", "task_str", "image_caption", "images_source"]


def export(run: RunDir, **export_settings) -> Path:
    config = load_config("offline", {"export": export_settings} if export_settings else None)
    run_stages(["split", "export"], run, config)
    return run.export_dir


@pytest.fixture
def exported(run_copy) -> Path:
    return export(run_copy)


def load(export_dir: Path, folder: str = "data") -> datasets.DatasetDict:
    files = {split: str(export_dir / folder / f"{split}-00000-of-00001.parquet") for split in ("train", "test") if (export_dir / folder / f"{split}-00000-of-00001.parquet").exists()}
    return datasets.load_dataset("parquet", data_files=files, cache_dir=str(export_dir.parent / "hf-cache"))


def test_release_loads_with_datasets(exported, run_copy):
    data = load(exported)
    assignments = read_records(run_copy.stage_output("split"), SplitAssignment)
    assert data["train"].num_rows == sum(a.split == "train" for a in assignments)
    assert data["test"].num_rows == sum(a.split == "test" for a in assignments)
    assert isinstance(data["train"].features["image"], datasets.Image)

    row = data["test"][0]
    assert isinstance(row["image"], Image.Image)
    assert row["image"].size[0] >= 64
    assert row["split"] == "test"


def test_release_schema_matches_published_file(exported, demo_parquet):
    published = pq.read_schema(demo_parquet)
    ours = pq.read_schema(exported / "data" / "train-00000-of-00001.parquet")
    assert ours.names[: len(RELEASE_COLUMNS)] == RELEASE_COLUMNS
    for name in RELEASE_COLUMNS:
        assert ours.field(name).type == published.field(name).type, name
    published_features = json.loads(published.metadata[b"huggingface"])["info"]["features"]
    our_features = json.loads(ours.metadata[b"huggingface"])["info"]["features"]
    assert {name: our_features[name] for name in RELEASE_COLUMNS} == published_features
    for name in ("pmcid", "license", "blooms_level", "consistency_score", "no_image_outcome", "split"):
        assert name in ours.names


def test_release_index_is_one_based_with_prefixes(exported, run_copy):
    from microvqa_pp.records import MCQ

    mcqs = {mcq.mcq_id: mcq for mcq in read_records(run_copy.stage_output("mcq"), MCQ)}
    rows = pq.read_table(exported / "data" / "train-00000-of-00001.parquet", columns=["mcq_id", "choices", "correct_index", "correct_answer"]).to_pylist()
    for row in rows:
        mcq = mcqs[row["mcq_id"]]
        assert row["choices"] == [f"{number}) {choice}" for number, choice in enumerate(mcq.choices, start=1)]
        assert row["correct_index"] == mcq.correct_index + 1
        assert row["correct_answer"] == row["choices"][row["correct_index"] - 1]
        assert row["correct_answer"].startswith(f"{row['correct_index']}) ")


def test_microvqa_layout_is_zero_based(exported, run_copy):
    from microvqa_pp.records import MCQ

    mcqs = {mcq.mcq_id: mcq for mcq in read_records(run_copy.stage_output("mcq"), MCQ)}
    data = load(exported, "microvqa")
    assert list(data) == ["test"]
    assert not (exported / "microvqa" / "train-00000-of-00001.parquet").exists()
    for row in data["test"]:
        mcq = mcqs[row["key_question"]]
        assert row["choices"] == mcq.choices
        assert row["correct_index"] == mcq.correct_index
        assert row["correct_answer"] == mcq.choices[mcq.correct_index]
        assert row["task"] in (1, 2, 3)
        assert len(row["images_list"]) == 1
        assert isinstance(row["images_list"][0], Image.Image)


def test_microvqa_layout_for_both_splits(run_copy):
    export_dir = export(run_copy, microvqa_splits=["train", "test"])
    assert set(load(export_dir, "microvqa")) == {"train", "test"}


def test_chat_files_name_existing_images(exported):
    info = json.loads((exported / "chat" / "dataset_info.json").read_text())
    assert set(info) == {"microvqa_pp_train", "microvqa_pp_test"}
    assert info["microvqa_pp_train"]["columns"] == {"messages": "messages", "images": "images"}
    for split in ("train", "test"):
        lines = (exported / "chat" / f"{split}.jsonl").read_text().splitlines()
        assert lines
        for line in lines:
            record = json.loads(line)
            assert set(record) == {"messages", "images"}
            user, assistant = record["messages"]
            assert user["role"] == "user"
            assert assistant["role"] == "assistant"
            assert user["content"].count("<image>") == len(record["images"]) == 1
            assert "(1) " in user["content"]
            assert re.search(r"\n\nThe answer is \([1-4]\)$", assistant["content"])
            image = exported / "chat" / record["images"][0]
            assert image.is_file()
            Image.open(image).verify()


def test_chat_reply_states_correct_number(exported):
    for split in ("train", "test"):
        rows = pq.read_table(exported / "data" / f"{split}-00000-of-00001.parquet", columns=["correct_index", "cot"]).to_pylist()
        records = [json.loads(line) for line in (exported / "chat" / f"{split}.jsonl").read_text().splitlines()]
        assert len(records) == len(rows)
        for row, record in zip(rows, records):
            user, assistant = (message["content"] for message in record["messages"])
            assert user.endswith('end with "The answer is (N)", where N is the number of the correct choice.')
            assert assistant == f"{row['cot'].strip()}\n\nThe answer is ({row['correct_index']})"


def test_card_states_chat_answer_form(exported):
    _, body = card_parts(exported)
    assert "The assistant turn is the rationale, then a last line `The answer is (N)`" in body


def test_no_leakage_across_exported_splits(run_copy):
    export_dir = export(run_copy)
    rows = {}
    for split in ("train", "test"):
        columns = ["figure_id", "pmcid", "article_id", "image", "image_hash", "phash", "leakage_group"]
        rows[split] = pq.read_table(export_dir / "data" / f"{split}-00000-of-00001.parquet", columns=columns).to_pylist()
        assert rows[split]

    def values(split, key):
        return {row[key] for row in rows[split]} - {""}

    # The test split contains BIOMEDICA figures, so the PMC id check compares real ids.
    assert values("test", "pmcid")
    assert not values("train", "pmcid") & values("test", "pmcid")
    assert not values("train", "article_id") & values("test", "article_id")
    assert not values("train", "leakage_group") & values("test", "leakage_group")
    assert not values("train", "image_hash") & values("test", "image_hash")

    # The provenance hashes are the ingested figure's, and no exported pair is a near-duplicate.
    figures = {figure.figure_id: figure for figure in read_records(run_copy.stage_output("ingest"), Figure)}
    for row in rows["train"] + rows["test"]:
        assert row["image_hash"] == figures[row["figure_id"]].image_hash
        assert row["phash"] == figures[row["figure_id"]].phash
        assert re.fullmatch(r"[0-9a-f]{16}", row["phash"])
    distance = load_config().split.near_duplicate_distance
    exported_closest = min((int(first["phash"], 16) ^ int(second["phash"], 16)).bit_count() for first, second in itertools.product(rows["train"], rows["test"]))
    assert exported_closest > distance

    def image_facts(split):
        facts = {}
        for row in rows[split]:
            data = row["image"]["bytes"]
            image = Image.open(io.BytesIO(data))
            reduced = image.convert("L") if image.mode not in ("L", "RGB") else image
            reduced = reduced.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
            facts[hashlib.sha256(data).hexdigest()] = int(str(imagehash.phash(reduced)), 16)
        return facts

    train_images, test_images = image_facts("train"), image_facts("test")
    assert not set(train_images) & set(test_images)
    closest = min((first ^ second).bit_count() for first, second in itertools.product(train_images.values(), test_images.values()))
    assert closest > distance


def test_exports_are_byte_identical(template_run, tmp_path):
    first, second = RunDir(tmp_path / "first"), RunDir(tmp_path / "second")
    shutil.copytree(template_run, first.root)
    shutil.copytree(template_run, second.root)
    export(first)
    export(second)

    files_first = sorted(path.relative_to(first.export_dir) for path in first.export_dir.rglob("*") if path.is_file())
    files_second = sorted(path.relative_to(second.export_dir) for path in second.export_dir.rglob("*") if path.is_file())
    assert files_first == files_second
    assert len(files_first) > 10
    for relative in files_first:
        assert (first.export_dir / relative).read_bytes() == (second.export_dir / relative).read_bytes(), relative


def test_export_stage_output_lists_files(exported, run_copy):
    records = read_records(run_copy.stage_output("export"), ExportedQuestion)
    assert len(records) == 92
    for record in records:
        assert record.files[0] == f"data/{record.split}-00000-of-00001.parquet"
        for relative in record.files:
            assert (exported / relative).is_file(), relative
    entry = run_copy.stage_entry("export")
    assert entry["stats"]["train"] + entry["stats"]["test"] == 92


def test_export_rejects_missing_image(run_copy):
    from microvqa_pp.records import Figure

    config = load_config("offline")
    run_stages(["split"], run_copy, config)
    figure = next(f for f in read_records(run_copy.stage_output("ingest"), Figure) if f.figure_id == "elife-00230-fig2")
    (run_copy.root / figure.image_path).unlink()
    run_stages(["export"], run_copy, config)
    entry = run_copy.stage_entry("export")
    questions = sum(1 for a in read_records(run_copy.stage_output("split"), SplitAssignment) if a.figure_id == figure.figure_id)
    assert entry["rejected"] == {"missing_image": questions}
    assert entry["count"] == 92 - questions


def test_rerun_replaces_old_files(run_copy):
    export_dir = export(run_copy)
    stale = export_dir / "stale.txt"
    stale.write_text("left from an earlier export")
    export(run_copy, name="Another title")
    assert not stale.exists()
    assert "# Another title" in (export_dir / "README.md").read_text()
    assert not (run_copy.root / ".export.partial").exists()


def card_parts(export_dir: Path) -> tuple[dict, str]:
    text = (export_dir / "README.md").read_text()
    assert text.startswith("---\n")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_card_header(exported):
    metadata, _ = card_parts(exported)
    assert metadata["license"] == ["cc-by-3.0", "cc-by-4.0", "cc-by-nc-4.0", "other"]
    assert metadata["license_name"] == "per-figure"
    assert metadata["task_categories"] == ["visual-question-answering", "multiple-choice"]
    assert metadata["size_categories"] == ["n<1K"]
    default, microvqa = metadata["configs"]
    assert default["data_files"] == [{"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]
    assert microvqa["data_files"] == [{"split": "test", "path": "microvqa/test-*"}]
    info = {entry["config_name"]: entry for entry in metadata["dataset_info"]}
    splits = {split["name"]: split["num_examples"] for split in info["default"]["splits"]}
    assert splits["train"] + splits["test"] == 92
    features = {feature["name"]: feature for feature in info["default"]["features"]}
    assert features["image"] == {"name": "image", "dtype": "image"}
    assert features["choices"] == {"name": "choices", "list": "string"}
    assert features["image_hash"] == {"name": "image_hash", "dtype": "string"}
    assert features["phash"] == {"name": "phash", "dtype": "string"}
    assert info["microvqa"]["features"][2] == {"name": "images_list", "list": "image"}


def test_card_body(exported, run_copy):
    _, body = card_parts(exported)
    assert "`correct_index` is **1-based**" in body
    assert "**0-based**" in body
    # Licences per source, with counts.
    assert re.search(r"\| BIOMEDICA shard `000000.tar` \| CC BY-NC \| 6 \| \d+ \|", body)
    assert re.search(r"\| figure folder `elife-01222` \| CC BY 3.0 \| 15 \| \d+ \|", body)
    # Known limits from the manifest notes and the data.
    assert "CLIP unavailable" in body
    assert "offline profile" in body
    assert "generated from templates" in body
    assert "No human review of the test split" in body
    # How the data was made, per stage.
    for stage in ("ingest", "generate", "score", "filter", "mcq", "split"):
        assert f"1. `{stage}`:" in body
    assert "records; dropped 4: below_keep_share 4)" in body
    test_count = run_copy.stage_entry("split")["stats"]["test"]
    assert f"The test split has {test_count} of 92 questions ({test_count / 92:.1%}; target 20.0%)." in body


def generate_flags(run: RunDir) -> dict[str, bool]:
    table = pq.read_table(run.stage_output("generate"), columns=["qa_id", "template_generated"])
    return dict(zip(table.column("qa_id").to_pylist(), table.column("template_generated").to_pylist()))


def test_card_counts_some_template_questions(exported, run_copy):
    _, body = card_parts(exported)
    flags = generate_flags(run_copy)
    rows = []
    for split in ("train", "test"):
        rows += pq.read_table(exported / "data" / f"{split}-00000-of-00001.parquet", columns=["qa_id", "template_generated"]).to_pylist()
    for row in rows:
        assert row["template_generated"] is flags[row["qa_id"]]
    count = sum(row["template_generated"] for row in rows)
    # The fabricated QAs alternate between template-written and not.
    assert 0 < count < 92
    line = f"- {count} of the 92 questions were generated from templates, not by a language model (column `template_generated`)."
    assert body.count(line) == 1


def test_card_states_template_note_once(run_copy):
    from microvqa_pp.records import QA, to_table
    from microvqa_pp.run.stage import write_parquet

    qas = read_records(run_copy.stage_output("generate"), QA)
    for qa in qas:
        qa.template_generated = True
    write_parquet(run_copy.stage_output("generate"), to_table(qas, QA))
    note = (
        "Questions were written by the offline template writer (no language model) from "
        "answer spans found by rules in each caption; they are marked template_generated."
    )
    run_copy.add_note("generate", note)
    _, body = card_parts(export(run_copy))

    assert body.count(note) == 1
    assert body.count("template writer (no language model)") == 1
    assert "generated from templates" not in body
    assert "of the 92 questions" not in body


def test_card_states_missed_test_share(run_copy):
    from microvqa_pp.records import MCQ, to_table
    from microvqa_pp.run.stage import write_parquet

    # The eLife 01222 group (40 questions) and one BIOMEDICA figure (3) allow no split near 80:20.
    mcqs = read_records(run_copy.stage_output("mcq"), MCQ)
    subset = [mcq for mcq in mcqs if mcq.figure_id.startswith("elife-01222") or mcq.figure_id == "copy-cropped" or "-PMC9852609-" in mcq.figure_id]
    write_parquet(run_copy.stage_output("mcq"), to_table(subset, MCQ))
    _, body = card_parts(export(run_copy))

    assert "The test split has 3 of 43 questions (7.0%; target 20.0%)." in body
    note = "- The test split holds 3 of 43 questions (7.0%) against a target of 20.0% (split.test_share)."
    assert body.count(note) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CC BY 3.0", "cc-by-3.0"),
        ("CC BY-NC 4.0", "cc-by-nc-4.0"),
        ("cc by-nc-sa 4.0", "cc-by-nc-sa-4.0"),
        ("CC0 1.0", "cc0-1.0"),
        ("CC BY", None),
        ("CC BY-NC", None),
        ("", None),
        ("All rights reserved", None),
    ],
)
def test_hub_license_ids(text, expected):
    assert hf_license_id(text) == expected


def test_yaml_writer_round_trips():
    value = {
        "pretty_name": "A: title with # and 'quotes'",
        "license": ["cc-by-4.0", "other"],
        "flags": {"yes": "no", "number": 3, "ratio": 0.5, "empty": [], "nothing": None, "truth": True},
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        "size_categories": ["n<1K"],
        "version": "1.0",
    }
    assert yaml.safe_load("\n".join(yaml_lines(value))) == value


def test_image_names_are_file_safe():
    from microvqa_pp.records import Figure

    figure = Figure("a/b c:d", "", "", "0" * 64, "", "", 1, 1, "png", "", "", "", "")
    assert formats.image_name(figure) == "a_b_c_d.png"


def test_single_group_exports_train_only(run_copy):
    from microvqa_pp.records import MCQ, to_table
    from microvqa_pp.release.report import write_report
    from microvqa_pp.run.stage import write_parquet

    mcqs = [mcq for mcq in read_records(run_copy.stage_output("mcq"), MCQ) if mcq.figure_id.startswith("elife-01222")]
    write_parquet(run_copy.stage_output("mcq"), to_table(mcqs, MCQ))
    export_dir = export(run_copy)

    assert run_copy.stage_entry("split")["stats"]["test"] == 0
    assert "test split is empty" in run_copy.read_manifest()["notes"]["split"]
    assert not (export_dir / "data" / "test-00000-of-00001.parquet").exists()
    assert not (export_dir / "microvqa").exists()
    assert not (export_dir / "chat" / "test.jsonl").exists()
    assert set(json.loads((export_dir / "chat" / "dataset_info.json").read_text())) == {"microvqa_pp_train"}
    assert load(export_dir)["train"].num_rows == len(mcqs)

    metadata, body = card_parts(export_dir)
    assert metadata["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}], "default": True}]
    assert "The test split is empty" in body
    page = write_report(run_copy, load_config("offline")).read_text()
    assert "Not available: one of the splits is empty." in page


def test_split_note_cleared_after_rerun(run_copy):
    run_copy.add_note("split", "The test split is empty: stale.")
    export(run_copy)
    assert "split" not in run_copy.read_manifest()["notes"]


def test_export_without_questions(run_copy):
    from microvqa_pp.records import MCQ, to_table
    from microvqa_pp.release.report import write_report
    from microvqa_pp.run.stage import write_parquet

    write_parquet(run_copy.stage_output("mcq"), to_table([], MCQ))
    export_dir = export(run_copy)
    assert run_copy.stage_entry("export")["count"] == 0
    assert not (export_dir / "data").exists()
    metadata, body = card_parts(export_dir)
    assert "configs" not in metadata
    assert "0 multiple-choice microscopy questions" in body
    assert "Both splits are empty" in body
    assert write_report(run_copy, load_config("offline")).is_file()


def test_evaluation_reads_test_export(exported, run_copy, tmp_path):
    from microvqa_pp.evaluation.loaders import load_dataset
    from microvqa_pp.records import MCQ

    mcqs = {mcq.mcq_id: mcq for mcq in read_records(run_copy.stage_output("mcq"), MCQ)}
    test_ids = {a.mcq_id for a in read_records(run_copy.stage_output("split"), SplitAssignment) if a.split == "test"}
    for source in (run_copy.root, exported / "data" / "test-00000-of-00001.parquet"):
        loaded = load_dataset(str(source), tmp_path / "images")
        assert loaded.rejections == []
        assert {question.question_id for question in loaded.questions} == test_ids
        for question in loaded.questions:
            assert question.choices == mcqs[question.question_id].choices
            assert question.correct_index == mcqs[question.question_id].correct_index
            assert len(question.images) == 1
