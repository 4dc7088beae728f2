"""Stage `generate` end to end: offline, and against the OpenAI-compatible stub server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stubs.openai_server import Reply

from microvqa_pp.agents.base import BackendError
from microvqa_pp.config import load_config
from microvqa_pp.errors import ConfigError
from microvqa_pp.generate.stage import GenerateStage
from microvqa_pp.records import QA, Rejection
from microvqa_pp.run.executor import LocalExecutor
from microvqa_pp.run.stage import read_records, run_stage

REPO = Path(__file__).resolve().parents[2]
CAPTION_IN_PROMPT = re.compile(r"<caption>\n(.*?)\n</caption>", re.DOTALL)


def caption_of(seen) -> str:
    """Return the caption a generate_qa request carries in its user message."""
    match = CAPTION_IN_PROMPT.search(seen.text)
    assert match is not None, "the request has no <caption> block"
    return match.group(1)


def reply_for(caption: str) -> dict:
    """A reply with one grounded QA, one whose span is not in the caption and one that leaks its answer."""
    words = caption.split()
    span = " ".join(words[:3])
    return {
        "questions": [
            {"question": "What does this figure show first?", "answer": span, "answer_span": span, "support_sentence": "", "task": 2, "answer_kind": "conclusion"},
            {"question": "Which stain was used?", "answer": "Hoechst 33342", "answer_span": "Hoechst 33342", "task": 1},
            {"question": f"Is {words[0]} shown?", "answer": words[0], "answer_span": words[0], "task": 1},
        ]
    }


def valid_responder(seen):
    return Reply.json(reply_for(caption_of(seen)))


def generate(run, stub_url: str, executor=None, force: bool = False, **agent):
    settings = {
        "backend": "openai",
        "base_url": stub_url,
        "model": "stub-model",
        "retry_base_s": 0.01,
        "retry_max_s": 1.0,
        "max_retries": 2,
        "timeout_s": 5.0,
    }
    settings.update(agent)
    config = load_config("offline", {"agent": settings, "generate": {"chunk_size": 5}})
    return run_stage(GenerateStage(run, config), executor, force=force)


def qas(run) -> list[QA]:
    return read_records(run.stage_output("generate"), QA)


def rejections(run) -> list[Rejection]:
    return read_records(run.stage_rejected("generate"), Rejection)


def requests_per_caption(stub) -> dict[str, int]:
    counts: dict[str, int] = {}
    for seen in stub.requests:
        caption = caption_of(seen)
        counts[caption] = counts.get(caption, 0) + 1
    return counts


def test_offline_stage_on_real_figures(ingested_run, figures):
    result = run_stage(GenerateStage(ingested_run, load_config("offline")))
    records = qas(ingested_run)
    captions = {figure.figure_id: figure.caption for figure in figures}

    assert result.count == len(records) >= 8
    assert len({record.qa_id for record in records}) == len(records)
    for record in records:
        assert record.qa_id.startswith(f"{record.figure_id}#qa")
        assert captions[record.figure_id][record.span_start : record.span_end] == record.answer_span
        assert record.generator == "offline-template"
        assert record.template_generated is True
        assert record.prompt_version == "offline-template@1"
        assert record.task_str in ("Expert Visual Understanding", "Hypothesis Generation", "Experimental Proposal")
    assert result.rejected == {"no_questions": 1}
    assert result.stats["figures"] == 5
    assert "template writer" in ingested_run.read_manifest()["notes"]["generate"]


def test_valid_replies(openai_stub, ingested_run, figures, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-stage-test")
    openai_stub.responder = valid_responder
    result = generate(ingested_run, openai_stub.url)

    records = qas(ingested_run)
    assert len(records) == 5
    assert [record.qa_id for record in records] == [f"{figure.figure_id}#qa1" for figure in figures]
    for record, figure in zip(records, figures):
        assert record.answer_span == " ".join(figure.caption.split()[:3])
        assert figure.caption[record.span_start : record.span_end] == record.answer_span
        assert (record.task, record.task_str) == (2, "Hypothesis Generation")
        assert record.generator == "stub-model"
        assert record.template_generated is False
        assert record.prompt_version == "generate_qa@1"
        assert record.answer_kind == "conclusion"

    assert result.rejected == {"answer_in_question": 5, "span_not_in_caption": 5}
    reasons = {(rejection.item_id.rsplit("#", 1)[1], rejection.reason) for rejection in rejections(ingested_run)}
    assert reasons == {("qa2", "span_not_in_caption"), ("qa3", "answer_in_question")}

    assert len(openai_stub.requests) == 5
    for seen in openai_stub.requests:
        assert seen.image_urls and seen.image_urls[0].startswith("data:image/jpeg;base64,")
        assert seen.response_format["json_schema"]["name"] == "generate_qa"
    usage = ingested_run.read_manifest()["usage"]["generate:stub-model"]
    assert usage["requests"] == 5
    assert usage["total_tokens"] == 5 * 120
    assert result.stats["qa_proposed"] == 15
    assert result.stats["qa_accepted"] == 5


def test_prose_replies(openai_stub, ingested_run):
    openai_stub.responder = lambda seen: Reply.prose(reply_for(caption_of(seen)))
    result = generate(ingested_run, openai_stub.url)
    assert result.count == 5
    assert len(openai_stub.requests) == 5


def test_broken_json_gets_repaired(openai_stub, ingested_run, figures):
    broken_caption = figures[2].caption

    def respond(seen):
        is_repair = len(seen.messages) > 2
        if caption_of(seen) == broken_caption and not is_repair:
            return Reply.broken(reply_for(broken_caption))
        return valid_responder(seen)

    openai_stub.responder = respond
    result = generate(ingested_run, openai_stub.url)

    assert result.count == 5
    assert result.stats["replies_repaired"] == 1
    assert len(openai_stub.requests) == 6
    [repair] = [seen for seen in openai_stub.requests if len(seen.messages) > 2]
    assert [message["role"] for message in repair.messages] == ["system", "user", "assistant", "user"]
    assert "could not be used" in repair.messages[-1]["content"]


def test_unparseable_reply_is_recorded(openai_stub, ingested_run, figures):
    broken_caption = figures[1].caption
    openai_stub.responder = lambda seen: Reply.text("I cannot help with that.") if caption_of(seen) == broken_caption else valid_responder(seen)
    result = generate(ingested_run, openai_stub.url)

    assert result.count == 4
    assert result.rejected["unparseable_reply"] == 1
    [rejection] = [rejection for rejection in rejections(ingested_run) if rejection.reason == "unparseable_reply"]
    assert rejection.item_id == figures[1].figure_id
    assert "no valid JSON object" in rejection.detail
    assert "I cannot help with that." in rejection.detail
    assert result.stats["figures_without_qa"] == 1


def test_rate_limit_retry(openai_stub, ingested_run):
    openai_stub.enqueue(Reply.rate_limited(retry_after=0.2))
    openai_stub.responder = valid_responder
    result = generate(ingested_run, openai_stub.url, concurrency=1)
    assert result.count == 5
    assert openai_stub.statuses().count(429) == 1
    assert len(openai_stub.requests) == 6
    assert ingested_run.read_manifest()["usage"]["generate:stub-model"]["retries"] == 1


def test_server_error_for_one_figure(openai_stub, ingested_run, figures):
    failing = figures[3].caption
    openai_stub.responder = lambda seen: Reply.server_error() if caption_of(seen) == failing else valid_responder(seen)
    result = generate(ingested_run, openai_stub.url, max_retries=1)

    assert result.count == 4
    assert result.rejected["http_500"] == 1
    assert requests_per_caption(openai_stub)[failing] == 2
    [rejection] = [rejection for rejection in rejections(ingested_run) if rejection.reason == "http_500"]
    assert rejection.item_id == figures[3].figure_id
    assert "after 1 retries" in rejection.detail


def test_timeout_and_dropped_connection(openai_stub, ingested_run):
    openai_stub.enqueue(Reply.slow(3.0), Reply.dropped())
    openai_stub.responder = valid_responder
    result = generate(ingested_run, openai_stub.url, timeout_s=0.5, concurrency=1)
    assert result.count == 5
    assert len(openai_stub.requests) == 7
    assert openai_stub.statuses().count(200) >= 5


def test_rerun_sends_no_requests(openai_stub, ingested_run):
    openai_stub.responder = valid_responder
    generate(ingested_run, openai_stub.url)
    first = qas(ingested_run)
    assert len(openai_stub.requests) == 5

    result = generate(ingested_run, openai_stub.url, force=True)
    assert len(openai_stub.requests) == 5
    assert qas(ingested_run) == first
    assert result.stats["llm_cache_hits"] == 5


def test_failures_are_sent_again_on_rerun(openai_stub, ingested_run, figures):
    failing = figures[0].caption
    openai_stub.responder = lambda seen: Reply.server_error() if caption_of(seen) == failing else valid_responder(seen)
    generate(ingested_run, openai_stub.url, max_retries=0)
    assert len(openai_stub.requests) == 5

    openai_stub.responder = valid_responder
    result = generate(ingested_run, openai_stub.url, force=True)
    assert result.count == 5
    assert len(openai_stub.requests) == 6
    assert requests_per_caption(openai_stub)[failing] == 2


def test_server_down_stops_the_stage(openai_stub, ingested_run):
    openai_stub.responder = lambda seen: Reply.server_error(503)
    with pytest.raises(BackendError, match="all 5 requests of work unit 00000 failed"):
        generate(ingested_run, openai_stub.url, max_retries=0)
    assert ingested_run.stage_info("generate").state == "failed"

    openai_stub.responder = valid_responder
    assert generate(ingested_run, openai_stub.url).count == 5


def test_worker_processes(openai_stub, ingested_run):
    openai_stub.responder = valid_responder
    config = load_config(
        "offline",
        {"agent": {"backend": "openai", "base_url": openai_stub.url, "model": "stub-model"}, "generate": {"chunk_size": 2}},
    )
    executor = LocalExecutor(workers=2)
    try:
        result = run_stage(GenerateStage(ingested_run, config), executor)
    finally:
        executor.close()
    assert result.count == 5
    assert len(openai_stub.requests) == 5
    assert ingested_run.read_manifest()["usage"]["generate:stub-model"]["requests"] == 5


def test_missing_model_fails_when_stage_is_built(ingested_run):
    config = load_config("offline", {"agent": {"backend": "openai", "model": ""}})
    with pytest.raises(ConfigError, match="--model"):
        GenerateStage(ingested_run, config)


def test_killed_run_resumes_without_repeats(openai_stub, ingested_run):
    """A run killed with SIGKILL mid-stage asks again only for the figure it was waiting on."""
    secret = "sk-resume-test-secret"
    hung_caption: dict[str, str] = {}

    def first_run(seen):
        # The fourth request hangs, so the run is killed while waiting on it: figures 1 and 2 are
        # a finished work unit, figure 3 is answered and cached in the unfinished second unit.
        if seen.index == 3:
            hung_caption["caption"] = caption_of(seen)
            return Reply.slow(60.0)
        return valid_responder(seen)

    openai_stub.responder = first_run
    command = [
        sys.executable, "-m", "microvqa_pp", "generate", str(ingested_run.root),
        "--agent", "openai", "--base-url", openai_stub.url, "--model", "stub-model",
        "--set", "agent.concurrency=1", "--set", "generate.chunk_size=2", "--set", "agent.api_key_env=STUB_KEY",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "STUB_KEY": secret, "HF_HUB_OFFLINE": "1"}

    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert openai_stub.wait_for_requests(4, timeout=60), "the run never reached the fourth request"
        parts = ingested_run.stage_parts("generate")
        assert (parts / "00000.parquet").exists()
        assert not (parts / "00001.parquet").exists()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert len(openai_stub.requests) == 4

    openai_stub.responder = valid_responder
    rerun = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    counts = requests_per_caption(openai_stub)
    assert counts[hung_caption["caption"]] == 2
    assert sorted(counts.values()) == [1, 1, 1, 1, 2]
    assert len(openai_stub.requests) == 6
    records = qas(ingested_run)
    assert len(records) == 5
    assert len({record.qa_id for record in records}) == 5
    assert all(seen.headers["authorization"] == f"Bearer {secret}" for seen in openai_stub.requests)

    # The key is used, never stored.
    assert secret not in (ingested_run.logs_dir / "run.log").read_text()
    assert secret not in ingested_run.manifest_path.read_text()
    assert secret not in rerun.stdout + rerun.stderr
    for path in ingested_run.cache_dir.iterdir():
        assert secret.encode() not in path.read_bytes()
    manifest = json.loads(ingested_run.manifest_path.read_text())
    assert manifest["config"]["agent"]["api_key_env"] == "STUB_KEY"
    assert manifest["stages"]["generate"]["state"] == "done"


def test_cli_generate_prints_status(openai_stub, ingested_run):
    openai_stub.responder = valid_responder
    completed = subprocess.run(
        [sys.executable, "-m", "microvqa_pp", "generate", str(ingested_run.root), "--agent", "openai", "--base-url", openai_stub.url, "--model", "stub-model"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "generate  done   5" in completed.stdout
    assert "span_not_in_caption 5" in completed.stdout


def test_cli_missing_model_is_one_line_error(ingested_run):
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "microvqa_pp", "generate", str(ingested_run.root), "--agent", "openai", "--set", "agent.model="],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "Error: no model name for the OpenAI-compatible backend; pass --model NAME" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert time.monotonic() - started < 60
