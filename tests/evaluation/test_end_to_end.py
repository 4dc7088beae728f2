"""`microvqa-pp eval` end to end against the loopback OpenAI-compatible stub with scripted replies."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from stubs.openai_server import OpenAIStub, Reply, SeenRequest

from microvqa_pp.agents.cache import ResponseCache
from microvqa_pp.agents.openai import OpenAIBackend
from microvqa_pp.cli import main
from microvqa_pp.evaluation.cli import FULL_SIZE_IMAGE_SIDE
from microvqa_pp.evaluation.loaders import load_dataset
from microvqa_pp.evaluation.prompt import build_request
from microvqa_pp.evaluation.records import EvalQuestion

REPO = Path(__file__).resolve().parents[2]


def scripted_reply(position: int, question: EvalQuestion) -> str:
    """The reply to the question at `position`: five forms in turn, each read differently."""
    correct = question.correct_index + 1
    wrong = correct % len(question.choices) + 1
    forms = [
        f"The cells show punctate staining.\nThe answer is ({correct})",  # both parsers: right
        f"The answer is ({wrong})",  # both: wrong
        f"**Answer:** {'ABCDEFGHIJ'[correct - 1]}",  # reference: unparsed; robust: right
        f"The answer is ({wrong}). Wait, actually the answer is ({correct}).",  # reference: wrong; robust: right
        "I cannot tell from the description.",  # both: unparsed
    ]
    return forms[position % 5]


def responder_for(questions: list[EvalQuestion], reply: Callable[[int, EvalQuestion], str]) -> Callable[[SeenRequest], Reply]:
    """Answer each request with the scripted reply of the question whose text it carries."""

    def respond(seen: SeenRequest) -> Reply:
        text = seen.text
        for position, question in enumerate(questions):
            if question.question in text:
                return Reply.text(reply(position, question))
        return Reply.status_code(400, "unknown question")

    return respond


def question_of(seen: SeenRequest, questions: list[EvalQuestion]) -> str:
    return next(question.question_id for question in questions if question.question in seen.text)


def run_eval(*arguments: str) -> str:
    completed = CliRunner().invoke(main, ["eval", *arguments])
    assert completed.exit_code == 0, completed.output
    return completed.output


def test_demo_csv(openai_stub, microvqa_csv: Path, tmp_path: Path) -> None:
    questions = load_dataset(str(microvqa_csv), tmp_path / "unused").questions
    openai_stub.responder = responder_for(questions, scripted_reply)
    out = tmp_path / "eval"

    output = run_eval(str(microvqa_csv), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out))

    forms = [position % 5 for position in range(51)]
    summary = json.loads((out / "summary.json").read_text())
    reference, robust = summary["parsers"]["reference"], summary["parsers"]["robust"]
    assert summary["n"] == 51
    assert reference["accuracy"] == pytest.approx(forms.count(0) / 51)
    assert reference["unparsed"] == pytest.approx((forms.count(2) + forms.count(4)) / 51)
    assert robust["accuracy"] == pytest.approx((forms.count(0) + forms.count(2) + forms.count(3)) / 51)
    assert robust["unparsed"] == pytest.approx(forms.count(4) / 51)
    assert reference["per_task"] == {}
    assert summary["disagreements"] == forms.count(2) + forms.count(3)
    assert summary["layout"] == "microvqa-csv"
    assert "(reference parser) | 21.6 |" in output

    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [row["question_id"] for row in results] == [question.question_id for question in questions]
    assert [row["reply"] for row in results] == [scripted_reply(position, question) for position, question in enumerate(questions)]
    assert all(len(row["prompt_hash"]) == 64 for row in results)
    assert [row["robust_reason"] for row in results[:5]] == ["statement", "statement", "statement", "revised", "no_answer"]

    # The requests: the reference prompt as text only, with MicroVQA's sampling settings.
    first = next(seen for seen in openai_stub.requests if question_of(seen, questions) == questions[0].question_id)
    assert first.body["temperature"] == 1.0
    assert first.body["seed"] == 0
    assert first.body["max_tokens"] == 2048
    assert first.body["top_p"] == 1.0
    assert first.body["frequency_penalty"] == 0.0
    assert first.body["presence_penalty"] == 0.0
    assert first.image_urls == []
    assert first.text == build_request(questions[0])[0].messages[0].content[0]
    assert len(openai_stub.requests) == 51

    report = (out / "report.md").read_text()
    assert f"## Questions where the parsers disagree ({forms.count(2) + forms.count(3)})" in report
    assert f"| {questions[2].question_id} | {questions[2].correct_index + 1} | – |" in report


def test_microvqa_parquet_with_images(openai_stub, microvqa_parquet: Path, tmp_path: Path, make_png) -> None:
    replies = {
        "q-1": "The answer is (2)",  # right
        "q-2": "The answer is **(3)**",  # wrong
        "q-3": "Final answer: B",  # reference: unparsed; robust: right
        "q-4": "Looking at the nuclei, the answer is 4.",  # right
    }
    questions = load_dataset(str(microvqa_parquet), tmp_path / "unused").questions
    openai_stub.responder = responder_for(questions, lambda position, question: replies[question.question_id])
    out = tmp_path / "eval"

    run_eval(str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out))

    summary = json.loads((out / "summary.json").read_text())
    reference, robust = summary["parsers"]["reference"], summary["parsers"]["robust"]
    # Hand count. Reference: q-1 and q-4 right. Robust: q-1, q-3 and q-4 right.
    assert reference["accuracy"] == 0.5
    assert robust["accuracy"] == 0.75
    assert reference["per_task"]["Expert Visual Understanding"]["accuracy"] == 1.0
    assert reference["per_task"]["Hypothesis Generation"]["accuracy"] == 0.0
    assert reference["per_task"]["Experimental Proposal"]["accuracy"] == 0.0
    assert reference["per_task"]["Experimental Proposal"]["unparsed"] == 1.0
    assert robust["per_task"]["Experimental Proposal"]["accuracy"] == 1.0
    assert robust["per_blooms"]["4 Analysis"]["accuracy"] == 0.5
    assert [entry["n"] for entry in reference["per_task"].values()] == [2, 1, 1]

    # Images go as separate parts after the text, byte for byte.
    by_question = {question_of(seen, questions): seen for seen in openai_stub.requests}
    assert [len(by_question[name].image_urls) for name in ("q-1", "q-2", "q-3", "q-4")] == [1, 2, 1, 0]
    content = by_question["q-2"].messages[0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "image_url"]
    sent = [base64.b64decode(url.split(",", 1)[1]) for url in by_question["q-2"].image_urls]
    assert sent == [make_png((30, 200, 30)), make_png((30, 30, 200))]


def test_no_image_mode_sends_no_images(openai_stub, microvqa_parquet: Path, tmp_path: Path) -> None:
    openai_stub.default_reply = Reply.text("The answer is (1)")
    out = tmp_path / "eval"

    run_eval(str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out), "--no-image", "reference")

    assert len(openai_stub.requests) == 4
    assert all(seen.image_urls == [] for seen in openai_stub.requests)
    assert all(seen.text.startswith("The following is a multiple choice question (with answers).If an image") for seen in openai_stub.requests)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["no_image"] == "reference"
    assert summary["prompt"] == "microvqa-reference-no-image@1"


def test_failed_request_retried_on_rerun(openai_stub, microvqa_parquet: Path, tmp_path: Path) -> None:
    questions = load_dataset(str(microvqa_parquet), tmp_path / "unused").questions
    failing = {"q-3"}

    def respond(seen: SeenRequest) -> Reply:
        if question_of(seen, questions) in failing:
            return Reply.server_error()
        return Reply.text("The answer is (2)")

    openai_stub.responder = respond
    out = tmp_path / "eval"
    arguments = [str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out), "--set", "agent.max_retries=0"]

    run_eval(*arguments)
    first = json.loads((out / "summary.json").read_text())
    failing.clear()
    openai_stub.reset()
    run_eval(*arguments)
    second = json.loads((out / "summary.json").read_text())

    assert first["failed_requests"] == 1
    assert first["failed_reasons"] == {"http_500": 1}
    assert first["parsers"]["reference"]["accuracy"] == 0.25  # q-1 only; q-3 failed
    assert [question_of(seen, questions) for seen in openai_stub.requests] == ["q-3"]
    assert second["failed_requests"] == 0
    assert second["parsers"]["reference"]["accuracy"] == 0.5  # q-1 and q-3


def test_killed_evaluation_resumes(openai_stub, microvqa_csv: Path, tmp_path: Path) -> None:
    questions = load_dataset(str(microvqa_csv), tmp_path / "unused").questions
    openai_stub.responder = responder_for(questions, scripted_reply)
    openai_stub.latency = 0.1
    out = tmp_path / "eval"
    command = [
        sys.executable, "-m", "microvqa_pp", "eval", str(microvqa_csv),
        "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out),
        "--concurrency", "2", "--set", "eval.batch_size=4",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}

    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert openai_stub.wait_for_requests(14, timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    first_run = [question_of(seen, questions) for seen in openai_stub.requests]

    # Finished before the kill: a result in a checkpoint, or a reply in the response cache.
    checkpointed = {row["question_id"] for path in (out / "results.parts").glob("part-*.parquet") for row in pq.read_table(path).to_pylist()}
    keys = OpenAIBackend("stub-model", openai_stub.url, max_image_side=FULL_SIZE_IMAGE_SIDE)
    cache = ResponseCache(out / "cache" / "llm.sqlite")
    cached = {question.question_id for question in questions if cache.get(keys.request_key(build_request(question)[0])) is not None}
    cache.close()
    finished = checkpointed | cached
    assert len(checkpointed) >= 4
    assert len(finished) < 51

    openai_stub.reset()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    second_run = [question_of(seen, questions) for seen in openai_stub.requests]

    assert not set(second_run) & finished
    assert sorted(second_run) == sorted(set(second_run))
    assert len(second_run) == 51 - len(finished)
    assert set(first_run) | set(second_run) == {question.question_id for question in questions}
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [row["question_id"] for row in results] == [question.question_id for question in questions]
    assert [row["reply"] for row in results] == [scripted_reply(position, question) for position, question in enumerate(questions)]
    assert not (out / "results.parts").exists()


def test_duplicate_questions_keep_ids(openai_stub, tiny_rows: list[dict], parquet_writer, tmp_path: Path) -> None:
    # Two rows with the same question, options and images send the same request.
    duplicate = {**tiny_rows[0], "key_question": "q-1-copy"}
    path = parquet_writer(tmp_path / "data.parquet", [tiny_rows[0], duplicate, tiny_rows[1]])
    openai_stub.default_reply = Reply.text("The answer is (2)")
    out = tmp_path / "eval"

    run_eval(str(path), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out))

    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [row["question_id"] for row in results] == ["q-1", "q-1-copy", "q-2"]
    assert results[0]["request_key"] == results[1]["request_key"]
    assert [row["reference_correct"] for row in results] == [True, True, False]


def test_task_columns_with_own_task_str(openai_stub, tiny_rows: list[dict], parquet_writer, tmp_path: Path) -> None:
    # Task ids 1-3 as MicroVQA has them, with task_str in the data set's own spelling.
    spellings = {1: "expert_visual_understanding", 2: "hypothesis_generation", 3: "experimental_proposal"}
    for row in tiny_rows:
        row["task_str"] = spellings[row["task"]]
    path = parquet_writer(tmp_path / "data.parquet", tiny_rows)
    openai_stub.default_reply = Reply.text("The answer is (2)")  # right for q-1 and q-3 only
    out = tmp_path / "eval"

    output = run_eval(str(path), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out))

    summary = json.loads((out / "summary.json").read_text())
    per_task = summary["parsers"]["reference"]["per_task"]
    assert list(per_task) == ["Expert Visual Understanding", "Hypothesis Generation", "Experimental Proposal"]
    assert per_task["Expert Visual Understanding"]["accuracy"] == 0.5
    assert per_task["Hypothesis Generation"]["accuracy"] == 0.0
    assert per_task["Experimental Proposal"]["accuracy"] == 1.0
    assert "| **stub-model** (reference parser) | 50.0 | 50.0 | 0.0 | 100.0 |" in output
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [row["task_str"] for row in results] == [spellings[1], spellings[2], spellings[3], spellings[1]]


def test_results_columns_share_one_base(openai_stub, microvqa_parquet: Path, tmp_path: Path) -> None:
    import pandas as pd

    replies = {"q-1": "The answer is (2)", "q-2": "The answer is (3)", "q-3": "No idea.", "q-4": "The answer is (4)"}
    questions = load_dataset(str(microvqa_parquet), tmp_path / "unused").questions
    openai_stub.responder = responder_for(questions, lambda position, question: replies[question.question_id])
    out = tmp_path / "eval"

    run_eval(str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out))

    table = pq.read_table(out / "results.parquet")
    assert table.schema.field("reference_option").type == pa.int64()
    assert table.schema.field("robust_option").type == pa.int64()
    assert table.schema.field("correct_option").type == pa.int64()
    assert table.column("correct_index").to_pylist() == [1, 0, 1, 3]
    assert table.column("correct_option").to_pylist() == [2, 1, 2, 4]
    assert table.column("reference_option").to_pylist() == [2, 3, None, 4]
    assert table.column("robust_option").to_pylist() == [2, 3, None, 4]
    description = table.schema.field("correct_option").metadata[b"description"].decode()
    assert description.startswith("1-based number of the correct option")
    assert table.schema.field("correct_index").metadata[b"description"].decode().startswith("0-based index")

    # pandas keeps the options as nullable integers, so they compare with correct_option as they are.
    frame = pd.read_parquet(out / "results.parquet")
    assert str(frame["reference_option"].dtype) == "Int64"
    assert str(frame["robust_option"].dtype) == "Int64"
    assert frame["reference_option"].isna().tolist() == [False, False, True, False]
    assert (frame["reference_option"] == frame["correct_option"]).fillna(False).tolist() == [True, False, False, True]


def test_resume_reads_results_without_correct_option(openai_stub, microvqa_parquet: Path, tmp_path: Path) -> None:
    openai_stub.default_reply = Reply.text("The answer is (2)")
    out = tmp_path / "eval"
    arguments = [str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out)]
    run_eval(*arguments)
    # A results file as earlier versions wrote it, before the correct_option column existed.
    table = pq.read_table(out / "results.parquet")
    pq.write_table(table.drop_columns(["correct_option"]), out / "results.parquet")
    openai_stub.reset()

    run_eval(*arguments)

    assert openai_stub.requests == []
    assert pq.read_table(out / "results.parquet").column("correct_option").to_pylist() == [2, 1, 2, 4]


def test_server_down_fails_without_accuracy(microvqa_parquet: Path, tmp_path: Path) -> None:
    # A port on 127.0.0.1 that nothing listens on, because the stub that had it has stopped.
    with OpenAIStub() as stopped:
        url = stopped.url
    out = tmp_path / "eval"

    completed = CliRunner().invoke(
        main, ["eval", str(microvqa_parquet), "--base-url", url, "--model", "stub-model", "--out", str(out), "--set", "agent.max_retries=0"]
    )

    assert completed.exit_code == 1
    errors = [line for line in completed.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert errors[0].startswith("Error: all 4 requests failed (connection_error: 4), so no accuracy is reported. First error: ")
    assert "Connect call failed" in errors[0]
    assert f"Check that the server at {url} is running and serves the model 'stub-model'" in errors[0]
    assert "parser)" not in completed.output
    assert not (out / "summary.json").exists()
    assert not (out / "report.md").exists()
    assert not (out / "results.parquet").exists()


def test_partial_failure_reported_then_kept(openai_stub, microvqa_parquet: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    questions = load_dataset(str(microvqa_parquet), tmp_path / "unused").questions
    failing = {"q-3", "q-4"}

    def respond(seen: SeenRequest) -> Reply:
        if question_of(seen, questions) in failing:
            return Reply.server_error()
        return Reply.text("The answer is (2)")

    openai_stub.responder = respond
    out = tmp_path / "eval"
    arguments = [str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out), "--set", "agent.max_retries=0"]

    with caplog.at_level(logging.WARNING, logger="microvqa_pp.evaluation.runner"):
        run_eval(*arguments)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 4
    assert summary["failed_requests"] == 2
    assert summary["failed_reasons"] == {"http_500": 2}
    assert summary["parsers"]["reference"]["accuracy"] == 0.25  # q-1 right, q-2 wrong, q-3 and q-4 no reply
    report = (out / "report.md").read_text()
    assert "- **2 of 4 questions have no reply** because their requests failed (http_500: 2)." in report
    assert any(message.startswith("2 of 4 questions have no reply because their requests failed (http_500: 2)") for message in caplog.messages)

    # The server now fails every request: the run fails and the first run's outputs stay.
    failing.update({"q-1", "q-2"})
    openai_stub.reset()
    results_before = (out / "results.parquet").read_bytes()
    summary_before = (out / "summary.json").read_text()
    completed = CliRunner().invoke(main, ["eval", *arguments])

    assert completed.exit_code == 1
    assert "Error: all 2 requests failed (http_500: 2), so no accuracy is reported. First error: " in completed.output
    assert f"The 2 questions answered in earlier runs stay in {out} for the next run. Check that the server at " in completed.output
    assert sorted(question_of(seen, questions) for seen in openai_stub.requests) == ["q-3", "q-4"]
    assert (out / "results.parquet").read_bytes() == results_before
    assert (out / "summary.json").read_text() == summary_before


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        (["--model", "other-model"], "--model is 'stub-model' there but 'other-model' now"),
        (["--no-image", "reference"], "--no-image is 'off' there but 'reference' now"),
        (["--limit", "2"], "--limit is not set there but 2 now"),
        (["--seed", "7"], "--seed is 0 there but 7 now"),
        (["--temperature", "0"], "--temperature is 1.0 there but 0.0 now"),
    ],
    ids=["model", "no-image", "limit", "seed", "temperature"],
)
def test_rerun_with_other_options_rejected(openai_stub, microvqa_parquet: Path, tmp_path: Path, changed: list[str], named: str) -> None:
    openai_stub.default_reply = Reply.text("The answer is (2)")
    out = tmp_path / "eval"
    arguments = [str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out)]
    run_eval(*arguments)
    results_before = (out / "results.parquet").read_bytes()
    openai_stub.reset()

    completed = CliRunner().invoke(main, ["eval", *arguments, *changed])

    assert completed.exit_code == 1
    assert f"Error: {out} contains an evaluation with other options ({named})." in completed.output
    assert "Pass a new --out folder for these options" in completed.output
    assert openai_stub.requests == []
    assert (out / "results.parquet").read_bytes() == results_before
    assert json.loads((out / "options.json").read_text())["model"] == "stub-model"


def test_rerun_on_other_dataset_rejected(openai_stub, microvqa_parquet: Path, microvqa_csv: Path, tmp_path: Path) -> None:
    openai_stub.default_reply = Reply.text("The answer is (2)")
    out = tmp_path / "eval"
    run_eval(str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out))
    openai_stub.reset()

    completed = CliRunner().invoke(main, ["eval", str(microvqa_csv), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out)])

    assert completed.exit_code == 1
    assert f"DATASET is {str(microvqa_parquet.resolve())!r} there but {str(microvqa_csv.resolve())!r} now" in completed.output
    assert openai_stub.requests == []


def test_rerun_with_same_options_resumes(openai_stub, microvqa_parquet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    openai_stub.default_reply = Reply.text("The answer is (2)")
    out = tmp_path / "eval"
    run_eval(str(microvqa_parquet), "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out))
    openai_stub.reset()

    # The same data set by a relative path, and another concurrency: the same evaluation.
    monkeypatch.chdir(microvqa_parquet.parent)
    run_eval(microvqa_parquet.name, "--base-url", openai_stub.url, "--model", "stub-model", "--out", str(out), "--concurrency", "3")

    assert openai_stub.requests == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parsers"]["reference"]["accuracy"] == 0.5
