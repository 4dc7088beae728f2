"""Save a trained HiCQA-Graph with its configuration, and load it back.

A checkpoint folder contains `model.pt` (the state dict, loadable with `weights_only=True`),
`config.json` (model hyperparameters, the fitted `SignalSpec`, the filter settings and the seed)
and `training.json` (the loss of every epoch and the epoch whose weights were kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from microvqa_pp.config import FilterConfig
from microvqa_pp.graph.nn import HEAD_NAMES, HiCQAGraph
from microvqa_pp.graph.signals import SignalSpec
from microvqa_pp.graph.train import TrainingResult, head_weights
from microvqa_pp.run.rundir import atomic_write_text

CHECKPOINT_VERSION = 1


def save_checkpoint(
    folder: Path,
    training: TrainingResult,
    spec: SignalSpec,
    settings: FilterConfig,
    seed: int,
    graph_counts: dict[str, int] | None = None,
) -> None:
    """Write the model weights, its configuration and its training history into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / ".model.pt.tmp"
    torch.save(training.model.state_dict(), temporary)
    temporary.replace(folder / "model.pt")
    config: dict[str, Any] = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "model": training.model.hyperparameters(),
        "signals": spec.to_dict(),
        "filter": settings.model_dump(mode="json"),
        "seed": seed,
        "graph": graph_counts or {},
    }
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
    history = {
        "best_epoch": training.best_epoch,
        "best_held_out_loss": training.best_loss,
        "stopped_early": training.stopped_early,
        "held_out_qas": training.held_out,
        "held_out_explained_variance": dict(zip(HEAD_NAMES, training.explained_variance)),
        "fusion_weights": dict(zip(HEAD_NAMES, head_weights(settings, training.explained_variance).tolist())),
        "epochs": training.history,
    }
    atomic_write_text(folder / "training.json", json.dumps(history, indent=2) + "\n")


def load_checkpoint(folder: Path) -> tuple[HiCQAGraph, SignalSpec, dict[str, Any]]:
    """Rebuild a saved model in evaluation mode; return (model, signal spec, the whole config)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = HiCQAGraph.from_hyperparameters(config["model"])
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    model.eval()
    return model, SignalSpec.from_dict(config["signals"]), config
