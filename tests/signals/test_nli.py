"""NLI scoring: label mapping from id2label, caption windows, caching, and the tiny DeBERTa model."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from microvqa_pp.signals.cache import SignalCache
from microvqa_pp.signals.loading import ModelLoadError
from microvqa_pp.signals.nli import NLIScorer, label_columns, premise_windows


def make_scorer(model, tmp_path, batch_size: int = 4) -> NLIScorer:
    return NLIScorer(str(model), "cpu", half_precision=True, batch_size=batch_size, cache=SignalCache(tmp_path / "cache"))


def test_label_columns_follow_id2label() -> None:
    assert label_columns({0: "contradiction", 1: "entailment", 2: "neutral"}) == {
        "contradiction": 0,
        "entailment": 1,
        "neutral": 2,
    }
    assert label_columns({"0": "ENTAILMENT", "1": "Neutral", "2": "CONTRADICTION"}) == {
        "entailment": 0,
        "neutral": 1,
        "contradiction": 2,
    }


@pytest.mark.parametrize(
    "id2label",
    [
        {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"},
        {0: "entailment", 1: "not_entailment"},
        {0: "entailment", 1: "entailment", 2: "neutral"},
        {0: "entailment", 1: "neutral", 2: "contradiction", 3: "other"},
    ],
)
def test_label_columns_reject_unmappable(id2label) -> None:
    with pytest.raises(ModelLoadError, match="cannot map the output labels"):
        label_columns(id2label, "'some/model'")


def test_premise_windows_fit_and_overlap() -> None:
    assert premise_windows([], 10) == [(0, 0)]
    assert premise_windows([3, 3, 3], 10) == [(0, 3)]
    # Windows overlap by one sentence when that sentence and the next fit together.
    assert premise_windows([4, 4, 4, 4], 8) == [(0, 2), (1, 3), (2, 4)]
    # A sentence longer than the budget is a window of its own, and no overlap is forced.
    assert premise_windows([3, 20, 3], 8) == [(0, 1), (1, 2), (2, 3)]


def test_probabilities_follow_permuted_labels(tiny_nli_model, tmp_path) -> None:
    """The tiny model's logits are (0.5, -1.0, 2.0) for labels (neutral, contradiction, entailment)."""
    config = json.loads((tiny_nli_model / "config.json").read_text())
    assert config["id2label"] == {"0": "neutral", "1": "contradiction", "2": "entailment"}

    scorer = make_scorer(tiny_nli_model, tmp_path)
    [result] = scorer.score([("GamGFP foci mark DSBs in E. coli.", "GamGFP marks DSBs.")], Counter())

    # softmax(0.5, -1.0, 2.0) = (0.17529, 0.03911, 0.78560)
    assert result.entailment == pytest.approx(0.78560, abs=1e-4)
    assert result.neutral == pytest.approx(0.17529, abs=1e-4)
    assert result.contradiction == pytest.approx(0.03911, abs=1e-4)
    assert result.window == 0


def test_unmappable_model_rejected_on_load(tiny_nli_model, tmp_path) -> None:
    folder = tmp_path / "generic-labels"
    shutil.copytree(tiny_nli_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    config["label2id"] = {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    (folder / "config.json").write_text(json.dumps(config))

    scorer = make_scorer(folder, tmp_path)
    with pytest.raises(ModelLoadError, match="LABEL_0"):
        scorer.score([("premise.", "hypothesis.")], Counter())


def test_long_caption_best_window(tiny_nli_model, elife_figures, tmp_path) -> None:
    """A caption longer than the context is windowed; the pair takes its best window."""
    caption = max((figure.caption for figure in elife_figures), key=len)
    hypothesis = "Obligatory cooperation results in partner intermixing."
    scorer = make_scorer(tiny_nli_model, tmp_path)
    # Random encoder weights with a live classifier, so the windows get different scores.
    torch.manual_seed(1)
    with torch.no_grad():
        scorer.model.classifier.weight.normal_(0, 5.0)

    counters: Counter[str] = Counter()
    windows = scorer.windows([(caption, hypothesis)], counters)
    assert len(windows) > 3
    for window in windows:
        encoded = scorer.tokenizer(window.premise, window.hypothesis, truncation=True, max_length=scorer.max_length)
        assert len(encoded["input_ids"]) <= scorer.max_length

    per_window = [scorer.forward(scorer.tokenizer([w.premise], [w.hypothesis], return_tensors="pt", truncation=True, max_length=scorer.max_length))[0] for w in windows]
    entailment = [float(probabilities[scorer.columns["entailment"]]) for probabilities in per_window]

    [result] = scorer.score([(caption, hypothesis)], counters)
    best = int(np.argmax(entailment))
    assert result.window == best
    assert result.entailment == pytest.approx(entailment[best], abs=1e-5)
    assert result.entailment + result.neutral + result.contradiction == pytest.approx(1.0, abs=1e-5)
    assert counters["nli_windows"] == len(windows)


def test_scores_come_from_cache(tiny_nli_model, tmp_path) -> None:
    pairs = [("GamGFP foci mark DSBs.", "GamGFP marks DSBs."), ("Ku inhibits GamGFP.", "Ku blocks GamGFP.")]
    first: Counter[str] = Counter()
    make_scorer(tiny_nli_model, tmp_path).score(pairs, first)
    second: Counter[str] = Counter()
    results = make_scorer(tiny_nli_model, tmp_path, batch_size=1).score(pairs + pairs[:1], second)
    assert first["nli_cache_hits"] == 0
    assert second["nli_cache_hits"] == 3
    assert second["nli_windows"] == 0
    assert results[0] == results[2]


def test_over_long_sentence_counted_as_truncated(tiny_nli_model, tmp_path) -> None:
    sentence = " ".join(["GamGFP foci mark double-strand breaks in living cells"] * 30) + "."
    counters: Counter[str] = Counter()
    [result] = make_scorer(tiny_nli_model, tmp_path).score([(sentence, "GamGFP marks breaks.")], counters)
    assert counters["nli_truncated"] == 1
    assert result.window == 0
