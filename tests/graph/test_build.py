"""The graph built from the bundled sample: node and edge counts, types, features and hiding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microvqa_pp.graph.build import (
    CAPTION_IMAGE,
    CAPTION_QA,
    EDGE_TYPES,
    IMAGE_CAPTION,
    IMAGE_IMAGE,
    IMAGE_QA,
    QA_CAPTION,
    QA_IMAGE,
    QA_QA,
    build_graph,
)
from microvqa_pp.graph.hiding import model_inputs
from microvqa_pp.graph.inputs import FilterInputs, embedding_tables, place
from microvqa_pp.graph.signals import SIGNALS, TEXT_PAIR_SIGNALS, SignalSpec, signal_index

KNN_K = 5


@pytest.fixture(scope="module")
def placed(sample):
    by_qa = {record.qa_id: record for record in sample.signals}
    inputs = FilterInputs(sample.figures, sample.qas, [by_qa[qa.qa_id] for qa in sample.qas], embedding_tables(sample.embeddings))
    return place(inputs)


@pytest.fixture(scope="module")
def graph(placed):
    spec = SignalSpec.fit(placed.arrays.signals)
    return build_graph(placed.arrays, spec, knn_k=KNN_K), spec


def test_sample_has_figures_and_qas(sample):
    assert len(sample.figures) == 35
    assert len(sample.qas) >= 80
    assert all(qa.figure_id in {figure.figure_id for figure in sample.figures} for qa in sample.qas)


def test_node_counts_and_widths(graph, sample):
    data, _ = graph
    assert set(data.node_types) == {"image", "caption", "qa"}
    assert data["image"].num_nodes == 35
    assert data["caption"].num_nodes == 35
    assert data["qa"].num_nodes == len(sample.qas)
    assert data["caption"].x.size(1) == 384
    assert data["qa"].x.size(1) == 384
    assert data["image"].x.size(1) == 8 * 8 * 3 + 32
    assert data["qa"].signal.shape == (len(sample.qas), len(SIGNALS))


def test_edge_types_and_counts(graph, sample):
    data, _ = graph
    num_qas = len(sample.qas)
    assert set(data.edge_types) == set(EDGE_TYPES)
    assert data[IMAGE_CAPTION].num_edges == data[CAPTION_IMAGE].num_edges == 35
    for edge_type in (CAPTION_QA, QA_CAPTION, IMAGE_QA, QA_IMAGE):
        assert data[edge_type].num_edges == num_qas


def test_figure_edges_join_own_figure(graph, sample):
    data, _ = graph
    figure_index = {figure.figure_id: position for position, figure in enumerate(sample.figures)}
    expected = torch.tensor([figure_index[qa.figure_id] for qa in sample.qas])
    caption_edges = data[CAPTION_QA].edge_index
    assert torch.equal(caption_edges[1], torch.arange(len(sample.qas)))
    assert torch.equal(caption_edges[0], expected)
    assert torch.equal(data[QA_IMAGE].edge_index, data[IMAGE_QA].edge_index.flip(0))
    assert torch.equal(data[IMAGE_CAPTION].edge_index[0], data[IMAGE_CAPTION].edge_index[1])


@pytest.mark.parametrize("edge_type", [IMAGE_IMAGE, QA_QA])
def test_similarity_edges_are_symmetric_knn(graph, edge_type):
    data, _ = graph
    edges = data[edge_type].edge_index
    count = data[edge_type[0]].num_nodes
    pairs = set(map(tuple, edges.T.tolist()))
    assert all((target, source) in pairs for source, target in pairs)
    assert all(source != target for source, target in pairs)
    assert int(torch.bincount(edges[1], minlength=count).min()) >= KNN_K
    assert edges.size(1) <= 2 * KNN_K * count


def test_qa_neighbours_are_similar_texts(graph):
    data, _ = graph
    x = data["qa"].x
    source, target = data[QA_QA].edge_index
    neighbour_similarity = (x[source] * x[target]).sum(1).mean()
    random_similarity = (x @ x.T).mean()
    assert neighbour_similarity > random_similarity + 0.2


def test_offline_weak_labels_use_the_stand_ins(graph, placed):
    data, spec = graph
    assert spec.label_sources == {"nli": "lexical_overlap", "alignment": "text_similarity"}
    assert set(spec.stand_ins) == {"nli", "alignment"}
    lexical = placed.arrays.signals[:, signal_index("lexical_overlap")]
    assert np.allclose(data["qa"].y[:, 0].numpy(), lexical)
    labels = data["qa"].y[:, 1].numpy()
    assert ((labels > 0) & (labels < 1)).all()
    order = np.argsort(placed.arrays.signals[:, signal_index("text_similarity")])
    assert (np.diff(labels[order]) >= 0).all()


def test_edge_features_carry_the_qa_signals(graph):
    data, spec = graph
    _, _, edge_attr = model_inputs(data, spec)
    num_qas = data["qa"].num_nodes
    assert edge_attr[CAPTION_QA].shape == (num_qas, 2 * len(TEXT_PAIR_SIGNALS))
    assert edge_attr[IMAGE_QA].shape == (num_qas, 2)
    text_similarity = data["qa"].signal[:, signal_index("text_similarity")]
    assert torch.equal(edge_attr[IMAGE_QA][:, 0], text_similarity)
    assert bool((edge_attr[IMAGE_QA][:, 1] == 1).all())


def test_hiding_clears_node_and_edges(graph):
    data, spec = graph
    num_qas = data["qa"].num_nodes
    hidden = torch.zeros(num_qas, dtype=torch.bool)
    hidden[::3] = True
    x_plain, _, edges_plain = model_inputs(data, spec)
    x_hidden, _, edges_hidden = model_inputs(data, spec, {"alignment": hidden})

    embedding_width = data["qa"].x.size(1)
    column = signal_index("text_similarity")
    value_column = embedding_width + column
    flag_column = embedding_width + len(SIGNALS) + column
    assert bool((x_hidden["qa"][hidden][:, [value_column, flag_column]] == 0).all())
    assert torch.equal(x_hidden["qa"][~hidden], x_plain["qa"][~hidden])

    text_position = TEXT_PAIR_SIGNALS.index("text_similarity")
    text_columns = [text_position, len(TEXT_PAIR_SIGNALS) + text_position]
    for edge_type, qa_end in ((CAPTION_QA, 1), (QA_CAPTION, 0), (IMAGE_QA, 1), (QA_IMAGE, 0)):
        qa_of_edge = data[edge_type].edge_index[qa_end]
        touched = hidden[qa_of_edge]
        columns = text_columns if edge_type in (CAPTION_QA, QA_CAPTION) else [0, 1]
        assert bool((edges_hidden[edge_type][touched][:, columns] == 0).all())
        assert torch.equal(edges_hidden[edge_type][~touched], edges_plain[edge_type][~touched])

    lexical = embedding_width + signal_index("lexical_overlap")
    assert torch.equal(x_hidden["qa"][:, lexical], x_plain["qa"][:, lexical])
