"""The PyG modules on small graphs built inline: token, encoder, heads, and saved weights."""

from __future__ import annotations

import torch

from microvqa_pp.config import FilterConfig
from microvqa_pp.graph.build import CAPTION_QA, EDGE_TYPES, IMAGE_QA, QA_IMAGE
from microvqa_pp.graph.checkpoint import load_checkpoint, save_checkpoint
from microvqa_pp.graph.hiding import edge_dims
from microvqa_pp.graph.nn import ConsistencyHead, ConsistencyToken, HiCQAEncoder, HiCQAGraph
from microvqa_pp.graph.signals import SIGNALS, SignalSpec
from microvqa_pp.graph.train import TrainingResult


def tiny_graph() -> tuple[dict, dict, dict]:
    """Two figures (image and caption each) and four QAs, two per figure."""
    x_dict = {"image": torch.randn(2, 6), "caption": torch.randn(2, 5), "qa": torch.randn(4, 7)}
    figures = torch.tensor([0, 1])
    qa_figure = torch.tensor([0, 0, 1, 1])
    qas = torch.arange(4)
    edge_index = {
        ("image", "has_caption", "caption"): torch.stack([figures, figures]),
        ("caption", "describes", "image"): torch.stack([figures, figures]),
        CAPTION_QA: torch.stack([qa_figure, qas]),
        ("qa", "grounded_in", "caption"): torch.stack([qas, qa_figure]),
        IMAGE_QA: torch.stack([qa_figure, qas]),
        ("qa", "asks_about", "image"): torch.stack([qas, qa_figure]),
        ("image", "similar_to", "image"): torch.tensor([[0, 1], [1, 0]]),
        ("qa", "similar_to", "qa"): torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]),
    }
    edge_attr = {edge_type: torch.randn(index.size(1), edge_dims()[edge_type]) for edge_type, index in edge_index.items() if edge_type in edge_dims()}
    return x_dict, edge_index, edge_attr


def test_token_is_added_to_image_and_qa_only():
    token = ConsistencyToken(4)
    with torch.no_grad():
        token.token.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = {"image": torch.zeros(2, 4), "caption": torch.zeros(3, 4), "qa": torch.ones(1, 4)}
    out = token(x)
    assert torch.equal(out["image"], torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2))
    assert torch.equal(out["caption"], torch.zeros(3, 4))
    assert torch.equal(out["qa"], torch.tensor([[2.0, 3.0, 4.0, 5.0]]))


def test_head_returns_one_logit_per_node():
    head = ConsistencyHead(8, 4)
    assert head(torch.randn(5, 8)).shape == (5,)


def test_encoder_uses_gatv2_on_cross_modal_relations():
    from torch_geometric.nn import GATv2Conv, SAGEConv

    encoder = HiCQAEncoder({"image": 6, "caption": 5, "qa": 7}, list(EDGE_TYPES), edge_dims(), hidden_channels=8, num_layers=2, heads=2)
    for conv in encoder.convs:
        for edge_type in EDGE_TYPES:
            expected = GATv2Conv if edge_type in edge_dims() else SAGEConv
            assert isinstance(conv.convs[edge_type], expected), edge_type
    x_dict, edge_index, edge_attr = tiny_graph()
    out = encoder(x_dict, edge_index, edge_attr)
    assert {node_type: tuple(value.shape) for node_type, value in out.items()} == {"image": (2, 8), "caption": (2, 8), "qa": (4, 8)}


def test_edge_features_steer_attention_over_a_figures_qas():
    """QA 0's edge into its image changes how the image weighs QAs 0 and 1, so QA 1's output moves;
    QAs 2 and 3 of the other figure are too far away to notice in two layers."""
    torch.manual_seed(0)
    model = HiCQAGraph({"image": 6, "caption": 5, "qa": 7}, list(EDGE_TYPES), edge_dims(), hidden_channels=8, dropout=0.0).eval()
    x_dict, edge_index, edge_attr = tiny_graph()
    edge_index[("qa", "similar_to", "qa")] = torch.tensor([[0, 1], [1, 0]])
    edge_index[("image", "similar_to", "image")] = torch.empty(2, 0, dtype=torch.long)
    before = model(x_dict, edge_index, edge_attr)
    changed = dict(edge_attr)
    changed[QA_IMAGE] = edge_attr[QA_IMAGE].clone()
    changed[QA_IMAGE][0] += 5.0
    after = model(x_dict, edge_index, changed)
    assert before.shape == (4, 2)
    assert not torch.allclose(before[1], after[1])
    assert torch.equal(before[2:], after[2:])


def test_reset_parameters_restores_a_fresh_model():
    torch.manual_seed(3)
    model = HiCQAGraph({"image": 6, "caption": 5, "qa": 7}, list(EDGE_TYPES), edge_dims(), hidden_channels=8)
    with torch.no_grad():
        model.encoder.token.token.fill_(9.0)
    model.reset_parameters()
    assert model.encoder.token.token.abs().max() < 1.0


def test_checkpoint_round_trip(tmp_path):
    import numpy as np

    model = HiCQAGraph({"image": 6, "caption": 5, "qa": 7}, list(EDGE_TYPES), edge_dims(), hidden_channels=8).eval()
    spec = SignalSpec.fit(np.random.default_rng(0).random((10, len(SIGNALS))).astype(np.float32))
    training = TrainingResult(model=model, history=[{"epoch": 1, "train_loss": 0.5, "held_out_loss": 0.6}], best_epoch=1, best_loss=0.6)
    save_checkpoint(tmp_path, training, spec, FilterConfig(hidden_channels=8), seed=4)
    loaded, loaded_spec, config = load_checkpoint(tmp_path)
    x_dict, edge_index, edge_attr = tiny_graph()
    assert torch.equal(loaded(x_dict, edge_index, edge_attr), model(x_dict, edge_index, edge_attr))
    assert loaded_spec == spec
    assert config["seed"] == 4
