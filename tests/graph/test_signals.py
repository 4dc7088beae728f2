"""Signal matrix, weak labels and stand-ins for the offline and the full profile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from microvqa_pp.graph.build import CAPTION_QA, GraphArrays, build_graph
from microvqa_pp.graph.hiding import model_inputs
from microvqa_pp.graph.signals import NLI_SIGNALS, SIGNALS, TEXT_PAIR_SIGNALS, Calibration, SignalSpec, signal_index, signal_matrix
from microvqa_pp.records import QASignals


def full_signals(count: int, seed: int = 0) -> np.ndarray:
    """Signals as the full profile gives them: NLI probabilities and CLIP similarities present."""
    rng = np.random.default_rng(seed)
    values = np.full((count, len(SIGNALS)), np.nan, dtype=np.float32)
    probabilities = rng.dirichlet([1, 1, 1], count)
    for column, name in enumerate(NLI_SIGNALS):
        values[:, signal_index(name)] = probabilities[:, column]
    values[:, signal_index("text_similarity")] = rng.uniform(0, 1, count)
    values[:, signal_index("lexical_overlap")] = rng.uniform(0, 1, count)
    values[:, signal_index("span_found")] = rng.integers(0, 2, count)
    values[:, signal_index("clip_image_caption")] = rng.normal(0.3, 0.03, count)
    values[:, signal_index("clip_image_qa")] = rng.normal(0.25, 0.04, count)
    return values


def test_signal_matrix_marks_missing_values():
    records = [
        QASignals("a", "f", "statement", text_similarity=0.5, lexical_overlap=1.0, span_found=True),
        None,
        QASignals("c", "f", "statement", nli_entailment=0.9, judge_score=0.2),
    ]
    matrix = signal_matrix(records)
    assert matrix.shape == (3, len(SIGNALS))
    assert matrix[0, signal_index("span_found")] == 1.0
    assert np.isnan(matrix[0, signal_index("nli_entailment")])
    assert np.isnan(matrix[1]).all()
    assert matrix[2, signal_index("judge_score")] == pytest.approx(0.2)


def test_full_profile_uses_nli_and_clip():
    spec = SignalSpec.fit(full_signals(50))
    assert spec.label_sources == {"nli": "nli_entailment", "alignment": "clip_image_qa"}
    assert spec.hidden == {"nli": list(NLI_SIGNALS), "alignment": ["clip_image_qa"]}
    assert spec.stand_ins == {}


def test_offline_profile_uses_stand_ins():
    values = full_signals(50)
    for name in (*NLI_SIGNALS, "clip_image_caption", "clip_image_qa"):
        values[:, signal_index(name)] = np.nan
    spec = SignalSpec.fit(values)
    assert spec.label_sources == {"nli": "lexical_overlap", "alignment": "text_similarity"}
    assert spec.hidden == {"nli": ["lexical_overlap"], "alignment": ["text_similarity"]}
    assert "lexical_overlap" in spec.stand_ins["nli"]
    assert "text_similarity" in spec.stand_ins["alignment"]


def test_calibration_maps_to_the_unit_interval_in_order():
    values = np.array([0.20, 0.22, 0.25, 0.27, 0.30, np.nan], dtype=np.float32)
    calibration = Calibration.fit(values)
    calibrated = calibration(values)
    assert calibration.center == pytest.approx(0.25)
    assert calibrated[2] == pytest.approx(0.5)
    assert (np.diff(calibrated[:5]) > 0).all()
    assert ((calibrated[:5] > 0) & (calibrated[:5] < 1)).all()
    assert math.isnan(calibrated[5])


def test_weak_labels_of_the_full_profile():
    values = full_signals(40)
    labels = SignalSpec.fit(values).weak_labels(values)
    assert np.allclose(labels["nli"], values[:, signal_index("nli_entailment")])
    order = np.argsort(values[:, signal_index("clip_image_qa")])
    assert (np.diff(labels["alignment"][order]) > 0).all()


def test_hiding_nli_hides_all_three_probabilities():
    count = 6
    values = full_signals(count)
    spec = SignalSpec.fit(values)
    arrays = GraphArrays(
        image=np.random.default_rng(1).random((3, 4), dtype=np.float32),
        caption=np.random.default_rng(2).random((3, 5), dtype=np.float32),
        qa=np.random.default_rng(3).random((count, 5), dtype=np.float32),
        qa_figure=np.array([0, 0, 1, 1, 2, 2]),
        signals=values,
        task=np.zeros(count, dtype=np.int64),
    )
    data = build_graph(arrays, spec, knn_k=1)
    hidden = torch.tensor([True, False, True, False, False, False])
    x_dict, _, edge_attr = model_inputs(data, spec, {"nli": hidden})
    columns = [5 + signal_index(name) for name in NLI_SIGNALS]
    assert bool((x_dict["qa"][hidden][:, columns] == 0).all())
    assert bool((x_dict["qa"][~hidden][:, [5 + len(SIGNALS) + signal_index(name) for name in NLI_SIGNALS]] == 1).all())
    nli_edge_columns = [TEXT_PAIR_SIGNALS.index(name) for name in NLI_SIGNALS]
    nli_edge_columns += [len(TEXT_PAIR_SIGNALS) + column for column in nli_edge_columns]
    assert bool((edge_attr[CAPTION_QA][hidden][:, nli_edge_columns] == 0).all())
    clip_column = 5 + signal_index("clip_image_qa")
    assert bool((x_dict["qa"][hidden][:, clip_column] != 0).all())
