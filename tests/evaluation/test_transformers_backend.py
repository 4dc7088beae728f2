"""The local transformers backend on a tiny random LLaVA, alone and in a whole evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from microvqa_pp.agents.base import ChatRequest, ImagePart, Message
from microvqa_pp.agents.transformers_backend import TransformersBackend
from microvqa_pp.cli import main
from microvqa_pp.errors import MicroVQAError
from microvqa_pp.evaluation.loaders import load_dataset
from microvqa_pp.evaluation.runner import EvalSettings, Evaluation


def test_backend_replies_with_images(tiny_vlm: Path, tmp_path: Path, make_png) -> None:
    image = tmp_path / "cell.png"
    image.write_bytes(make_png((200, 30, 30)))
    backend = TransformersBackend(str(tiny_vlm), device="cpu")
    with_images = ChatRequest((Message("user", ("Which organelle?", ImagePart(image), ImagePart(image))),), temperature=0.0, max_tokens=8)
    text_only = ChatRequest((Message.text("user", "Which organelle?"),), temperature=0.0, max_tokens=8)

    replies = backend.complete([with_images, text_only])

    assert [reply.text for reply in replies] == ["The answer is (2)", "The answer is (2)"]
    assert [reply.error for reply in replies] == ["", ""]
    # The tiny processor turns each 28x28 image into 4 image tokens.
    assert replies[0].usage["prompt_tokens"] - replies[1].usage["prompt_tokens"] == 2 * 4
    assert replies[0].usage["completion_tokens"] == 5
    assert backend.usage()["requests"] == 2


def test_backend_half_precision(tiny_vlm: Path, tmp_path: Path, make_png) -> None:
    image = tmp_path / "cell.png"
    image.write_bytes(make_png((200, 30, 30)))
    backend = TransformersBackend(str(tiny_vlm), device="cpu", dtype="bfloat16", max_image_side=32)
    request = ChatRequest((Message("user", ("Which organelle?", ImagePart(image))),), temperature=0.0, max_tokens=8)

    (reply,) = backend.complete([request])

    assert reply.error == ""
    assert reply.text == "The answer is (2)"


def test_backend_sampling_is_seeded(tiny_vlm: Path, tmp_path: Path) -> None:
    # Without the fixed reply, the random model samples from its own distribution.
    folder = tmp_path / "unbiased"
    shutil.copytree(tiny_vlm, folder)
    generation = json.loads((folder / "generation_config.json").read_text())
    del generation["sequence_bias"]
    (folder / "generation_config.json").write_text(json.dumps(generation))
    backend = TransformersBackend(str(folder), device="cpu")
    prompt = (Message.text("user", "Which organelle?"),)
    seeded = ChatRequest(prompt, temperature=1.0, max_tokens=12, seed=3)
    other_seed = ChatRequest(prompt, temperature=1.0, max_tokens=12, seed=4)

    first, second, third = backend.complete([seeded, other_seed, seeded])

    assert first.text == third.text
    assert first.text != second.text


def test_backend_missing_image_is_reply_error(tiny_vlm: Path, tmp_path: Path) -> None:
    backend = TransformersBackend(str(tiny_vlm), device="cpu")
    broken = ChatRequest((Message("user", ("Which?", ImagePart(tmp_path / "missing.png"))),), temperature=0.0, max_tokens=4)
    fine = ChatRequest((Message.text("user", "Which?"),), temperature=0.0, max_tokens=8)
    replies = backend.complete([broken, fine])
    assert replies[0].error == "generation_failed"
    assert "missing.png" in replies[0].error_detail
    assert replies[1].text == "The answer is (2)"


def test_backend_unknown_model_is_clear(tmp_path: Path) -> None:
    backend = TransformersBackend("no-owner/no-such-vlm", device="cpu")
    with pytest.raises(MicroVQAError, match="could not load the image-text-to-text model 'no-owner/no-such-vlm'"):
        backend.load()


def test_evaluation_with_local_model(tiny_vlm: Path, microvqa_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    loaded = load_dataset(str(microvqa_parquet), out / "images")
    settings = EvalSettings(model=str(tiny_vlm), agent="transformers", temperature=0.0, max_tokens=8, batch_size=3)

    summary = Evaluation(out, TransformersBackend(str(tiny_vlm), device="cpu"), settings).run(loaded)

    # Every reply is "The answer is (2)"; option 2 is correct for q-1 and q-3 only.
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [row["reply"] for row in results] == ["The answer is (2)"] * 4
    assert [row["reference_option"] for row in results] == [2, 2, 2, 2]
    assert [row["robust_option"] for row in results] == [2, 2, 2, 2]
    assert [row["reference_correct"] for row in results] == [True, False, True, False]
    assert [row["n_images"] for row in results] == [1, 2, 1, 0]
    assert summary["parsers"]["reference"]["accuracy"] == 0.5
    assert summary["parsers"]["reference"]["per_task"]["Expert Visual Understanding"]["accuracy"] == 0.5
    assert summary["parsers"]["reference"]["per_task"]["Hypothesis Generation"]["accuracy"] == 0.0
    assert summary["parsers"]["reference"]["per_task"]["Experimental Proposal"]["accuracy"] == 1.0
    assert summary["parsers"]["robust"]["per_blooms"]["2 Comprehension"]["accuracy"] == 0.5
    assert summary["usage"]["requests"] == 4
    assert json.loads((out / "summary.json").read_text())["n"] == 4
    assert not (out / "results.parts").exists()


def test_eval_command_local_model(tiny_vlm: Path, microvqa_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    arguments = ["eval", str(microvqa_parquet), "--agent", "transformers", "--model", str(tiny_vlm), "--out", str(out), "--temperature", "0", "--max-tokens", "8", "--device", "cpu"]

    completed = CliRunner().invoke(main, arguments)

    assert completed.exit_code == 0, completed.output
    assert "(reference parser) | 50.0 | 50.0 | 0.0 | 100.0 | 0.0 |" in completed.output
    assert "| GPT-4o (published) | 45.6 | 48.7 | 43.1 | 44.8 | | |" in completed.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agent"] == "transformers"
    assert summary["temperature"] == 0.0
    assert (out / "report.md").read_text().startswith(f"# MicroVQA evaluation of {tiny_vlm}")
    assert (out / "eval.log").exists()
