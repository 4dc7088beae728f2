"""Stage `score` on a run folder: outputs, embeddings file, notes, resume and the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import microvqa_pp

from microvqa_pp.cli import main
from microvqa_pp.errors import ConfigError
from microvqa_pp.pipeline import build_stage, open_run, run_stages
from microvqa_pp.records import QA, Embedding, Figure, QASignals, Rejection
from microvqa_pp.records import to_table
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records, run_stage
from microvqa_pp.signals.stage import ScoreStage
from microvqa_pp.sources import locate_sources

QAS_PER_FIGURE = 2
FIGURES_WITHOUT_QAS = 2


@pytest.fixture(scope="module")
def ingested(biomedica_shard, tmp_path_factory) -> RunDir:
    """A run folder with the first 7 figures of the bundled BIOMEDICA shard ingested."""
    root = tmp_path_factory.mktemp("ingested") / "run"
    sources = locate_sources([str(biomedica_shard)], "auto")
    run, config = open_run(str(root), create=True, sources=sources, layers={"values": {"limit": 7}})
    run_stages(["ingest"], run, config)
    return run


@pytest.fixture
def run(ingested, make_qa, tmp_path) -> RunDir:
    """A copy of the ingested run with a `generate` output: QAs for all figures but the last two.

    The QAs are written in two row groups, and one QA names a figure that does not exist.
    """
    root = tmp_path / "run"
    shutil.copytree(ingested.root, root)
    run = RunDir(root)
    figures = read_records(run.stage_output("ingest"), Figure)
    with_qas = figures[: len(figures) - FIGURES_WITHOUT_QAS]
    qas = [make_qa(figure, number) for figure in with_qas for number in range(QAS_PER_FIGURE)]
    orphan = QA(**{**qas[0].__dict__, "qa_id": "orphan-qa", "figure_id": "no-such-figure"})
    qas.insert(3, orphan)

    half = len(qas) // 2
    path = run.stage_output("generate")
    with pq.ParquetWriter(path, to_table(qas[:1], QA).schema) as writer:
        writer.write_table(to_table(qas[:half], QA))
        writer.write_table(to_table(qas[half:], QA))
    run.set_stage("generate", state="done", fingerprint="generate-test", count=len(qas))
    return run


def score(run: RunDir, *overrides: str) -> None:
    run_obj, config = open_run(str(run.root), layers={"overrides": ["signals.device=cpu", "signals.chunk_size=5", *overrides]})
    run_stage(build_stage("score", run_obj, config))


def test_offline_outputs(run) -> None:
    figures = read_records(run.stage_output("ingest"), Figure)
    qas = read_records(run.stage_output("generate"), QA)
    score(run)

    signals = read_records(run.stage_output("score"), QASignals)
    known = [qa for qa in qas if qa.qa_id != "orphan-qa"]
    assert [record.qa_id for record in signals] == [qa.qa_id for qa in known]
    assert all(record.text_similarity is not None for record in signals)
    assert all(record.nli_entailment is None for record in signals)
    rejections = read_records(run.stage_rejected("score"), Rejection)
    assert [(rejection.item_id, rejection.reason) for rejection in rejections] == [("orphan-qa", "unknown_figure")]

    embeddings = read_records(run.root / "stages" / "embeddings.parquet", Embedding)
    assert len({(embedding.kind, embedding.item_id) for embedding in embeddings}) == len(embeddings)
    kinds = Counter(embedding.kind for embedding in embeddings)
    assert kinds == {"image": len(figures), "caption": len(figures), "qa": len(known)}
    image_ids = [embedding.item_id for embedding in embeddings if embedding.kind == "image"]
    assert sorted(image_ids) == sorted(figure.figure_id for figure in figures)
    # Figures without QAs come last, in units of their own.
    assert set(image_ids[-FIGURES_WITHOUT_QAS:]) == {figure.figure_id for figure in figures[-FIGURES_WITHOUT_QAS:]}

    manifest = run.read_manifest()
    entry = manifest["stages"]["score"]
    assert entry["state"] == "done"
    assert entry["count"] == len(known)
    assert entry["rejected"] == {"unknown_figure": 1}
    assert entry["stats"]["qas_scored"] == len(known)
    assert entry["stats"]["embeddings"] == len(embeddings)
    assert entry["stats"]["figures_embedded"] == len(figures)
    assert set(manifest["notes"]) >= {"signals.clip", "signals.nli", "signals.judge"}
    assert "pixel-descriptor-v1" in manifest["notes"]["signals.clip"]


class CrashingScoreStage(ScoreStage):
    """Fails on its third work unit, like a run killed part-way."""

    processed: list[str] = []
    crash = True

    def process(self, unit, progress):
        if CrashingScoreStage.crash and len(CrashingScoreStage.processed) == 2:
            raise RuntimeError("simulated crash")
        CrashingScoreStage.processed.append(unit.unit_id)
        return super().process(unit, progress)


def test_resume_after_crash(run) -> None:
    run_obj, config = open_run(str(run.root), layers={"overrides": ["signals.device=cpu", "signals.chunk_size=5"]})
    CrashingScoreStage.processed = []
    CrashingScoreStage.crash = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_stage(CrashingScoreStage(run_obj, config))
    assert run.read_manifest()["stages"]["score"]["state"] == "failed"
    done_first = list(CrashingScoreStage.processed)

    CrashingScoreStage.crash = False
    run_stage(CrashingScoreStage(run_obj, config))
    rerun = CrashingScoreStage.processed[len(done_first) :]
    assert not set(done_first) & set(rerun)

    signals = read_records(run.stage_output("score"), QASignals)
    embeddings = read_records(run.root / "stages" / "embeddings.parquet", Embedding)
    assert len({record.qa_id for record in signals}) == len(signals) == len(read_records(run.stage_output("generate"), QA)) - 1
    assert len({(embedding.kind, embedding.item_id) for embedding in embeddings}) == len(embeddings)
    assert Counter(embedding.kind for embedding in embeddings)["qa"] == len(signals)


def test_up_to_date_stage_skipped(run) -> None:
    score(run)
    first = run.stage_output("score").stat().st_mtime_ns
    # Batch size and device change speed, not values, so they do not make the stage stale.
    score(run, "signals.batch_size=3")
    assert run.stage_output("score").stat().st_mtime_ns == first


def test_full_models_replace_notes(run, tiny_nli_model, tiny_transformers_clip) -> None:
    score(run)
    score(run, f"signals.nli_model={tiny_nli_model}", f"signals.clip_model={tiny_transformers_clip}")
    notes = run.read_manifest()["notes"]
    assert "signals.clip" not in notes
    assert "signals.nli" not in notes
    assert "signals.judge" in notes

    signals = read_records(run.stage_output("score"), QASignals)
    assert all(record.nli_entailment is not None for record in signals)
    assert all(record.clip_image_qa is not None for record in signals)
    embeddings = read_records(run.root / "stages" / "embeddings.parquet", Embedding)
    assert {embedding.model for embedding in embeddings if embedding.kind == "image"} == {str(tiny_transformers_clip)}


def test_judge_through_agent_backend(run, openai_stub) -> None:
    from stubs.openai_server import Reply

    openai_stub.responder = lambda request: Reply.json({"score": 0.75, "reason": "Supported by the caption."})
    agent = ["agent.backend=openai", f"agent.base_url={openai_stub.url}", "agent.model=stub-model", "agent.retry_base_s=0.01"]
    score(run, "signals.judge=true", *agent)

    signals = read_records(run.stage_output("score"), QASignals)
    assert {record.judge_score for record in signals} == {0.75}
    assert {record.judge_reason for record in signals} == {"Supported by the caption."}
    manifest = run.read_manifest()
    assert "signals.judge" not in manifest["notes"]
    assert manifest["stages"]["score"]["stats"]["judge_requests"] == len(signals)
    # The fixture's two QAs per figure are the same text, so some requests repeat and hit the cache.
    usage = manifest["usage"]["score:stub-model"]
    assert usage["requests"] + usage["cache_hits"] == len(signals)
    assert len(openai_stub.requests) == usage["requests"]

    # A second run with another chunk size reads every verdict from the reply cache.
    score(run, "signals.judge=true", *agent, "signals.chunk_size=7")
    assert len(openai_stub.requests) == usage["requests"]
    assert {record.judge_score for record in read_records(run.stage_output("score"), QASignals)} == {0.75}


def test_worker_processes(run) -> None:
    """Two worker processes, each loading its own models, started by the command line.

    The command runs in a fresh interpreter: this test process has already run torch, and a
    process forked from it can hang in torch's thread pool.
    """
    command = [sys.executable, "-m", "microvqa_pp", "score", str(run.root), "--workers", "2", "--set", "signals.device=cpu", "--set", "signals.chunk_size=5"]
    environment = {**os.environ, "PYTHONPATH": str(Path(microvqa_pp.__file__).parent.parent)}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    signals = read_records(run.stage_output("score"), QASignals)
    assert len(signals) == len(read_records(run.stage_output("generate"), QA)) - 1
    assert run.read_manifest()["stages"]["score"]["stats"]["qas_scored"] == len(signals)


def test_command_line(run) -> None:
    result = CliRunner().invoke(main, ["score", str(run.root), "--set", "signals.device=cpu"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("score "))
    assert line.split()[:3] == ["score", "done", str(len(read_records(run.stage_output("score"), QASignals)))]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["signals.judge=true"], "signals.judge needs an LLM agent"),
        (["signals.device=tpu"], "invalid signals.device"),
        (["signals.clip_model=local-dir:/no/such/folder"], "model folder not found"),
        (["signals.nli_model=./no/such/nli"], "no such folder exists"),
    ],
)
def test_settings_checked_when_built(run, overrides, message) -> None:
    run_obj, config = open_run(str(run.root), layers={"overrides": overrides})
    with pytest.raises(ConfigError, match=message):
        build_stage("score", run_obj, config)


def test_missing_generate_output_reported(run) -> None:
    run.stage_output("generate").unlink()
    with pytest.raises(Exception, match="output of stage 'generate' is missing"):
        score(run)


def test_schema_of_outputs(run) -> None:
    score(run)
    assert pq.read_schema(run.stage_output("score")).names == pa.schema(to_table([], QASignals).schema).names
    assert pq.read_schema(run.root / "stages" / "embeddings.parquet").names == ["kind", "item_id", "model", "vector"]
