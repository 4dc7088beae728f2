"""Stage `filter`: score every QA with the HiCQA-Graph (or a single-signal baseline) and keep the best.

Output: `stages/filter.parquet`, one FilterDecision per QA of the `generate` stage, kept or not,
with the fused score, both head probabilities, the judge score and every baseline's score.
Dropped QAs are also listed in `stages/filter.rejected.parquet` with the reason and the cut-off.
The trained model is saved under `models/filter/` (see `checkpoint`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np

from microvqa_pp.errors import ConfigError
from microvqa_pp.graph.checkpoint import save_checkpoint
from microvqa_pp.graph.inputs import image_name, load_run_inputs, place
from microvqa_pp.graph.scoring import GraphScores, score_graph
from microvqa_pp.graph.selection import Selection, select
from microvqa_pp.records import FilterDecision, Rejection
from microvqa_pp.run.executor import Executor
from microvqa_pp.run.stage import Stage, StageResult

logger = logging.getLogger(__name__)

MISSING_SIGNAL = "missing_signal"
"""Reason for a QA that a baseline method cannot score because its one signal is missing."""

MODEL_FOLDER = "models/filter"
"""Folder of the trained model inside the run folder."""


class FilterStage(Stage):
    """Score QAs for cross-modal consistency and keep the top share (or those above a threshold)."""

    name = "filter"
    requires = ("score",)
    config_sections = ("filter",)
    record_type = FilterDecision

    def __init__(self, run, config):
        super().__init__(run, config)
        settings = config.filter
        if settings.hidden_channels % settings.heads:
            raise ConfigError(
                f"filter.hidden_channels={settings.hidden_channels} is not divisible by filter.heads={settings.heads}; "
                "choose values where it is"
            )
        unavailable = {"clip": config.signals.clip_model, "nli": config.signals.nli_model}
        if settings.method in unavailable and unavailable[settings.method] is None:
            raise ConfigError(
                f"filter.method={settings.method!r} ranks by the {settings.method.upper()} signal, but "
                f"signals.{settings.method}_model is not set in this run; set it and rerun `score`, or "
                "choose filter.method graph, text or lexical"
            )

    @property
    def model_folder(self) -> Path:
        return self.run.root / MODEL_FOLDER

    def execute(self, executor: Executor) -> StageResult:
        settings = self.config.filter
        inputs = load_run_inputs(self.run)
        placed = place(inputs)
        logger.info(
            "filter: %d QAs of %d figures, %d left out of the graph",
            len(inputs.qas),
            len(inputs.figures),
            len(placed.unplaced),
        )
        scores = score_graph(placed.arrays, settings, self.config.seed, train_graph=settings.method == "graph")
        self._record_stand_ins(scores)
        if scores.training is not None:
            save_checkpoint(self.model_folder, scores.training, scores.spec, settings, self.config.seed, scores.graph_counts)

        # Scores of every input QA; QAs outside the graph have none.
        count = len(inputs.qas)
        ranking = np.full(count, np.nan)
        ranking[placed.qa_rows] = scores.method_scores(settings.method)
        groups = [qa.task_str for qa in inputs.qas] if settings.per_task else None
        selection = select(
            ranking,
            keep_share=settings.keep_share,
            threshold=settings.threshold,
            groups=groups,
            unscored_reason=MISSING_SIGNAL,
        )
        for row, reason in placed.unplaced.items():
            selection.reason[row] = reason

        decisions = self._decisions(inputs, placed.qa_rows, scores, ranking, selection)
        rejections = [
            Rejection(self.name, decision.qa_id, decision.reason, self._detail(decision, qa, selection))
            for decision, qa in zip(decisions, inputs.qas)
            if not decision.keep
        ]
        self.write_output(decisions)
        self.write_rejections(rejections)

        stats: dict[str, object] = {"qas": count, "kept": selection.kept, "method": settings.method}
        stats.update({f"cutoff_{group}": round(value, 6) for group, value in selection.cutoff.items()})
        if scores.training is not None:
            stats["best_epoch"] = scores.training.best_epoch
            stats["epochs_run"] = len(scores.training.history)
        stats.update({key: value for key, value in placed.missing.items() if value})
        return StageResult(count=selection.kept, rejected=dict(sorted(Counter(r.reason for r in rejections).items())), stats=stats)

    def _record_stand_ins(self, scores: GraphScores) -> None:
        """Say in the run manifest what the heads were trained on, replacing an earlier run's note."""
        if self.config.filter.method != "graph":
            method = self.config.filter.method
            self.run.add_note("filter", f"QAs were ranked by one signal alone (filter.method={method}, a baseline), not by HiCQA-Graph.")
            return
        sources = scores.spec.label_sources
        # A stand-in's note already names what its head predicts and why, so it replaces that head's part.
        parts = [
            scores.spec.stand_ins[head] if head in scores.spec.stand_ins else f"the {head} head predicts {sources[head]}"
            for head in ("nli", "alignment")
        ]
        self.run.add_note("filter", "HiCQA-Graph weak labels: " + "; ".join(parts) + ".")

    def _decisions(
        self,
        inputs,
        qa_rows: np.ndarray,
        scores: GraphScores,
        ranking: np.ndarray,
        selection: Selection,
    ) -> list[FilterDecision]:
        figures = {figure.figure_id: figure for figure in inputs.figures}
        node_of_row = {int(row): node for node, row in enumerate(qa_rows)}
        decisions = []
        for row, qa in enumerate(inputs.qas):
            node = node_of_row.get(row)
            figure = figures.get(qa.figure_id)
            rejection = inputs.figure_rejections.get(qa.figure_id)
            # A rejected figure of `filter --input` keeps the data set's image name as its source.
            name = ""
            if figure is not None:
                name = image_name(figure)
            elif rejection is not None:
                name = rejection.source
            decisions.append(
                FilterDecision(
                    qa_id=qa.qa_id,
                    figure_id=qa.figure_id,
                    image_name=name,
                    question=qa.question,
                    score=float(ranking[row]),
                    keep=bool(selection.keep[row]),
                    reason=selection.reason[row],
                    method=self.config.filter.method,
                    rank=int(selection.rank[row]),
                    head_nli=_value(scores.heads, node, 0),
                    head_alignment=_value(scores.heads, node, 1),
                    judge_score=_value(scores.judge, node),
                    baseline_clip=_value(scores.baselines["clip"], node),
                    baseline_nli=_value(scores.baselines["nli"], node),
                    baseline_text=_value(scores.baselines["text"], node),
                    baseline_lexical=_value(scores.baselines["lexical"], node),
                )
            )
        return decisions

    def _detail(self, decision: FilterDecision, qa, selection: Selection) -> str:
        """Say why a QA was dropped, with its score and the score it needed."""
        settings = self.config.filter
        if math.isnan(decision.score):
            return f"no {settings.method} score for this QA ({decision.reason})"
        if settings.threshold is not None:
            return f"score {decision.score:.4f} is below the threshold {settings.threshold:.4f}"
        group = qa.task_str if settings.per_task else "all"
        scope = f"of task type {group!r}" if settings.per_task else "of all QAs"
        cutoff = selection.cutoff.get(group)
        if cutoff is None:
            return f"score {decision.score:.4f}; the keep share {settings.keep_share} keeps no QA {scope}"
        return f"score {decision.score:.4f} is outside the top {settings.keep_share:.0%} {scope} (lowest kept score {cutoff:.4f})"


def _value(values: np.ndarray | None, node: int | None, column: int | None = None) -> float | None:
    """Return one score as a float, or None where the QA has no node or the score is missing."""
    if values is None or node is None:
        return None
    value = float(values[node] if column is None else values[node, column])
    return None if math.isnan(value) else value
