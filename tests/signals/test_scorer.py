"""`score_qas` and SignalScorer: every signal for figures and QAs, rejections, and embeddings."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter

import numpy as np
import pytest

from microvqa_pp.config import SignalsConfig
from microvqa_pp.errors import ConfigError
from microvqa_pp.records import Rejection
from microvqa_pp.signals import SignalScorer, score_qas, unavailable_signals
from microvqa_pp.signals.pixels import PIXEL_DESCRIPTOR, PIXEL_DESCRIPTOR_SIZE


@pytest.fixture(scope="module")
def figures(elife_figures):
    return elife_figures[:4]


@pytest.fixture(scope="module")
def qas(figures, make_qa):
    return [make_qa(figure, number) for figure in figures for number in range(2)]


def test_offline_signals_and_embeddings(figures, qas, tmp_path) -> None:
    signals, embeddings = score_qas(figures, qas, SignalsConfig(device="cpu", batch_size=4), tmp_path)

    assert [record.qa_id for record in signals] == [qa.qa_id for qa in qas]
    for record, qa in zip(signals, qas):
        assert record.figure_id == qa.figure_id
        assert record.hypothesis.startswith("The figure shows ")
        assert 0.3 < record.text_similarity <= 1.0
        assert record.lexical_overlap >= 0.7
        assert record.span_found is True
        assert record.nli_entailment is None
        assert record.nli_window is None
        assert record.clip_image_caption is None
        assert record.clip_image_qa is None
        assert record.judge_score is None
        assert record.judge_reason == ""

    kinds = Counter(embedding.kind for embedding in embeddings)
    assert kinds == {"image": 4, "caption": 4, "qa": 8}
    images = [embedding for embedding in embeddings if embedding.kind == "image"]
    assert [embedding.item_id for embedding in images] == [figure.figure_id for figure in figures]
    assert {embedding.model for embedding in images} == {PIXEL_DESCRIPTOR}
    assert {len(embedding.vector) for embedding in images} == {PIXEL_DESCRIPTOR_SIZE}


def test_bad_inputs_rejected_and_run_goes_on(figures, qas, tmp_path) -> None:
    broken_image = tmp_path / "broken.jpg"
    broken_image.write_bytes(open(figures[1].image_path, "rb").read()[:1500])
    broken_figure = dataclasses.replace(figures[1], image_path=str(broken_image), image_sha256="")
    inputs = [figures[0], broken_figure, *figures[2:]]
    unknown = dataclasses.replace(qas[0], qa_id="orphan", figure_id="no-such-figure")
    empty = dataclasses.replace(qas[2], qa_id="empty", question=" ", answer="")

    rejections: list[Rejection] = []
    signals, embeddings = score_qas(inputs, [unknown, *qas, empty], SignalsConfig(device="cpu"), tmp_path / "cache", rejections=rejections)

    reasons = {rejection.item_id: rejection.reason for rejection in rejections}
    assert reasons == {
        "orphan": "unknown_figure",
        "empty": "empty_qa",
        qas[2].qa_id: "image_unreadable",
        qas[3].qa_id: "image_unreadable",
    }
    assert all(rejection.stage == "score" for rejection in rejections)
    assert [record.qa_id for record in signals] == [qa.qa_id for qa in qas if qa.figure_id != broken_figure.figure_id]
    assert broken_figure.figure_id not in {embedding.item_id for embedding in embeddings}
    assert Counter(embedding.kind for embedding in embeddings) == {"image": 3, "caption": 3, "qa": 6}


def test_relative_image_paths_use_image_root(figures, qas, tmp_path) -> None:
    root = tmp_path / "run"
    (root / "images").mkdir(parents=True)
    shutil.copy(figures[0].image_path, root / "images" / "a.jpg")
    relative = dataclasses.replace(figures[0], image_path="images/a.jpg")
    signals, embeddings = score_qas([relative], qas[:2], SignalsConfig(device="cpu"), tmp_path / "cache", image_root=root)
    assert len(signals) == 2
    assert Counter(embedding.kind for embedding in embeddings)["image"] == 1


def test_full_signals_with_tiny_models(figures, qas, tiny_nli_model, tiny_open_clip, tmp_path) -> None:
    settings = SignalsConfig(device="cpu", batch_size=3, nli_model=str(tiny_nli_model), clip_model=tiny_open_clip)
    scorer = SignalScorer(settings, tmp_path)
    batch = scorer.score(figures, qas)

    assert len(batch.signals) == len(qas)
    for record, qa in zip(batch.signals, qas):
        # The tiny NLI model gives softmax(0.5, -1.0, 2.0) for (neutral, contradiction, entailment).
        assert record.nli_entailment == pytest.approx(0.78560, abs=1e-4)
        assert record.nli_neutral == pytest.approx(0.17529, abs=1e-4)
        assert record.nli_contradiction == pytest.approx(0.03911, abs=1e-4)
        assert record.nli_window >= 0
        assert -1.0 <= record.clip_image_caption <= 1.0
        assert -1.0 <= record.clip_image_qa <= 1.0

    images = {embedding.item_id: np.array(embedding.vector) for embedding in batch.embeddings if embedding.kind == "image"}
    assert {embedding.model for embedding in batch.embeddings if embedding.kind == "image"} == {tiny_open_clip}
    assert {len(vector) for vector in images.values()} == {16}
    first = batch.signals[0]
    caption_vector = scorer.clip.embed_texts([figures[0].caption], Counter())[0]
    statement_vector = scorer.clip.embed_texts([first.hypothesis], Counter())[0]
    assert first.clip_image_caption == pytest.approx(float(images[figures[0].figure_id] @ caption_vector), abs=1e-5)
    assert first.clip_image_qa == pytest.approx(float(images[figures[0].figure_id] @ statement_vector), abs=1e-5)
    assert batch.counters["nli_windows"] >= len(qas)
    assert batch.counters["qas_scored"] == len(qas)


def test_second_run_reads_cache(figures, qas, tiny_nli_model, tiny_transformers_clip, tmp_path) -> None:
    settings = SignalsConfig(device="cpu", nli_model=str(tiny_nli_model), clip_model=str(tiny_transformers_clip))
    first = SignalScorer(settings, tmp_path).score(figures, qas)
    second = SignalScorer(settings.model_copy(update={"batch_size": 5}), tmp_path).score(figures, qas)
    assert first.signals == second.signals
    assert second.counters["nli_cache_hits"] == len(qas)
    assert second.counters["clip_image_cache_hits"] == len(figures)
    assert second.counters["text_cache_hits"] == len(figures) + len(qas)
    assert second.counters["nli_windows"] == 0


def test_scorer_argument_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="signals.device"):
        SignalScorer(SignalsConfig(device="gpu"), tmp_path)
    with pytest.raises(ConfigError, match="no agent was given"):
        SignalScorer(SignalsConfig(judge=True), tmp_path)


def test_unavailable_signals_named() -> None:
    offline = unavailable_signals(SignalsConfig())
    assert set(offline) == {"clip", "nli", "judge"}
    assert PIXEL_DESCRIPTOR in offline["clip"]
    assert unavailable_signals(SignalsConfig(nli_model="m", clip_model="c", judge=True)) == {}
