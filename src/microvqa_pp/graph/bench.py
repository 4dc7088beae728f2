"""The corruption benchmark of the filter (`microvqa-pp filter-bench`).

From a run's figures and QAs, `corrupt` builds a suite in which a share of the QAs is corrupted in
place, each in one of four ways, and the rest stay clean:

    moved_qa          the QA is attached to another figure (that figure's image and caption)
    foreign_answer    the answer is replaced by an answer span taken from another figure's caption
    swapped_caption   two figures exchange captions; their QAs stay with their images, so each
                      QA now meets a caption it was not written from
    altered_answer    a number in the answer is changed, or else a named entity (a gene, protein
                      or other capitalised or alphanumeric name) is replaced by one from another
                      caption

The suite's signals are computed by the signals package exactly as for a real run, every method
scores the suite, and the report gives, per method: the AUROC of separating clean from corrupted
QAs by score (1.0: every clean QA above every corrupted one; 0.5: chance), and the share of
corrupted QAs that the filter removes at the configured keep share, both overall and per
corruption type. The suite and the graph are rebuilt for each seed and the figures averaged.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from microvqa_pp.config import Config
from microvqa_pp.graph.baselines import BASELINE_SIGNALS, available_baselines
from microvqa_pp.graph.inputs import FilterInputs, embedding_tables, place
from microvqa_pp.graph.scoring import score_graph
from microvqa_pp.graph.selection import select
from microvqa_pp.graph.signals import signal_index
from microvqa_pp.records import QA, Embedding, Figure, QASignals

logger = logging.getLogger(__name__)

CORRUPTIONS = ("moved_qa", "foreign_answer", "swapped_caption", "altered_answer")
CLEAN = ""

ScoreFunction = Callable[[list[Figure], list[QA]], tuple[list[QASignals], list[Embedding]]]
"""Computes the signals and embeddings of figures and QAs (the signals package's `score_qas`)."""

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]*\d)")
_TOKEN = re.compile(r"\b[A-Za-z][\w-]*\w\b")


def _entities(text: str) -> list[re.Match[str]]:
    """Return the tokens that look like names: a capital letter after the first character, or a
    capital and a digit (GFP, RecBCD, Smn2B, mCherry), the entities captions and answers name."""
    found = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        inner_capital = any(character.isupper() for character in token[1:])
        digit = any(character.isdigit() for character in token)
        if inner_capital or (token[0].isupper() and digit):
            found.append(match)
    return found


@dataclass
class Suite:
    """Figures and QAs with corruptions; `labels[i]` is QA i's corruption type, empty when clean."""

    figures: list[Figure]
    qas: list[QA]
    labels: list[str]

    def counts(self) -> dict[str, int]:
        counts = {name: 0 for name in CORRUPTIONS}
        for label in self.labels:
            if label:
                counts[label] += 1
        counts["clean"] = self.labels.count(CLEAN)
        return counts


def _altered_number(text: str, rng: np.random.Generator) -> str | None:
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    match = matches[rng.integers(len(matches))]
    value = match.group(1)
    decimals = len(value.split(".")[1]) if "." in value else 0
    number = float(value)
    factor = rng.choice([0.5, 2.0, 3.0, 10.0])
    changed = number * factor if number else float(rng.integers(1, 10))
    replacement = f"{changed:.{decimals}f}"
    if replacement == value:
        replacement = f"{number + 1:.{decimals}f}"
    return text[: match.start(1)] + replacement + text[match.end(1) :]


def _altered_entity(text: str, pool: list[str], rng: np.random.Generator) -> str | None:
    matches = _entities(text)
    if not matches:
        return None
    match = matches[rng.integers(len(matches))]
    choices = [entity for entity in pool if entity.casefold() != match.group(0).casefold()]
    if not choices:
        return None
    replacement = choices[rng.integers(len(choices))]
    return text[: match.start()] + replacement + text[match.end() :]


def _with_answer(qa: QA, answer: str) -> QA:
    """Return a copy of the QA whose answer and answer span are `answer` (offsets unknown: -1)."""
    return dataclasses.replace(qa, answer=answer, answer_span=answer, span_start=-1, span_end=-1)


def corrupt(figures: list[Figure], qas: list[QA], *, share: float = 0.1, seed: int = 0) -> Suite:
    """Corrupt about `share` of the QAs with each corruption type; the rest stay clean.

    Each QA is corrupted at most once. A swapped caption corrupts every QA of both figures, so
    the pairs are chosen until about `share` of the QAs are affected.
    """
    rng = np.random.default_rng(seed)
    figures = list(figures)
    qas = list(qas)
    labels = [CLEAN] * len(qas)
    target = max(1, int(round(share * len(qas))))
    figure_position = {figure.figure_id: position for position, figure in enumerate(figures)}
    qas_of: dict[str, list[int]] = {}
    for row, qa in enumerate(qas):
        qas_of.setdefault(qa.figure_id, []).append(row)

    # Caption swaps first: they take whole figures out of the pool.
    with_qas = [figure.figure_id for figure in figures if figure.figure_id in qas_of]
    order = [with_qas[position] for position in rng.permutation(len(with_qas))]
    used_figures: set[str] = set()
    affected = 0
    while affected < target and len(order) >= 2:
        first, second = order.pop(), order.pop()
        a, b = figure_position[first], figure_position[second]
        figures[a], figures[b] = (
            dataclasses.replace(figures[a], caption=figures[b].caption),
            dataclasses.replace(figures[b], caption=figures[a].caption),
        )
        for row in qas_of[first] + qas_of[second]:
            labels[row] = "swapped_caption"
            affected += 1
        used_figures.update((first, second))

    candidates = [row for row in rng.permutation(len(qas)).tolist() if qas[row].figure_id not in used_figures]
    answer_pool = [qa.answer_span or qa.answer for qa in qas]
    entity_pool = sorted({match.group(0) for figure in figures for match in _entities(figure.caption)})

    def other_figure(figure_id: str) -> Figure:
        while True:
            figure = figures[rng.integers(len(figures))]
            if figure.figure_id != figure_id or len(figures) == 1:
                return figure

    for corruption in ("moved_qa", "foreign_answer", "altered_answer"):
        done = 0
        for row in list(candidates):
            if done >= target:
                break
            qa = qas[row]
            if corruption == "moved_qa":
                changed = dataclasses.replace(qa, figure_id=other_figure(qa.figure_id).figure_id)
            elif corruption == "foreign_answer":
                donors = [position for position, other in enumerate(qas) if other.figure_id != qa.figure_id]
                if not donors:
                    continue
                changed = _with_answer(qa, answer_pool[donors[rng.integers(len(donors))]])
            else:
                altered = _altered_number(qa.answer, rng) or _altered_entity(qa.answer, entity_pool, rng)
                if altered is None:
                    continue
                changed = _with_answer(qa, altered)
            qas[row] = changed
            labels[row] = corruption
            candidates.remove(row)
            done += 1
    return Suite(figures, qas, labels)


def auroc(clean_scores: np.ndarray, corrupted_scores: np.ndarray) -> float:
    """Return the probability that a clean QA scores above a corrupted one (ties count one half).

    This is the area under the ROC curve of the score as a detector of clean QAs (the Mann-Whitney
    U statistic divided by the number of pairs); NaN when either group is empty.
    """
    clean_scores = np.asarray(clean_scores, dtype=np.float64)
    corrupted_scores = np.asarray(corrupted_scores, dtype=np.float64)
    if clean_scores.size == 0 or corrupted_scores.size == 0:
        return float("nan")
    values = np.concatenate([clean_scores, corrupted_scores])
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    # Average ranks over ties.
    _, starts, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    average = starts + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    clean_rank_sum = ranks[: clean_scores.size].sum()
    u = clean_rank_sum - clean_scores.size * (clean_scores.size + 1) / 2.0
    return float(u / (clean_scores.size * corrupted_scores.size))


def _lowest(scores: np.ndarray) -> np.ndarray:
    """Treat a missing score as the lowest possible, as the filter does when it drops such QAs."""
    return np.where(np.isnan(scores), -np.inf, scores)


def evaluate_scores(scores: np.ndarray, labels: list[str], keep_share: float) -> dict[str, Any]:
    """Return AUROC and the share of corrupted QAs removed at `keep_share`, overall and per type."""
    scores = _lowest(np.asarray(scores, dtype=np.float64))
    labels_array = np.asarray(labels, dtype=object)
    clean = labels_array == CLEAN
    selection = select(np.where(np.isinf(scores), np.nan, scores), keep_share=keep_share)
    removed = ~selection.keep
    result: dict[str, Any] = {
        "auroc": auroc(scores[clean], scores[~clean]),
        "removed_at_keep": float(removed[~clean].mean()) if (~clean).any() else float("nan"),
        "clean_removed_at_keep": float(removed[clean].mean()) if clean.any() else float("nan"),
        "by_corruption": {},
    }
    for corruption in CORRUPTIONS:
        mask = labels_array == corruption
        if not mask.any():
            continue
        result["by_corruption"][corruption] = {
            "auroc": auroc(scores[clean], scores[mask]),
            "removed_at_keep": float(removed[mask].mean()),
            "count": int(mask.sum()),
        }
    return result


@dataclass
class BenchReport:
    """Results averaged over seeds, and the suite's description.

    `methods` contains the filter methods: `graph` and each available baseline. `components`
    contains scores that are not filter methods but explain them: each graph head alone
    (`graph:nli`, `graph:alignment`) and `span_found`, the binary check that the answer occurs
    in the caption.
    """

    methods: dict[str, dict[str, Any]]
    suite: dict[str, Any]
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "components": self.components,
            "suite": self.suite,
            "unavailable": self.unavailable,
            "notes": self.notes,
        }


def _average(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Average per-seed results; `auroc_std` gives the spread of the overall AUROC over seeds."""
    aurocs = np.array([run["auroc"] for run in runs])
    result: dict[str, Any] = {
        "auroc": float(np.nanmean(aurocs)),
        "auroc_std": float(np.nanstd(aurocs)),
        "removed_at_keep": float(np.nanmean([run["removed_at_keep"] for run in runs])),
        "clean_removed_at_keep": float(np.nanmean([run["clean_removed_at_keep"] for run in runs])),
        "by_corruption": {},
    }
    for corruption in CORRUPTIONS:
        present = [run["by_corruption"][corruption] for run in runs if corruption in run["by_corruption"]]
        if present:
            result["by_corruption"][corruption] = {
                "auroc": float(np.nanmean([item["auroc"] for item in present])),
                "removed_at_keep": float(np.nanmean([item["removed_at_keep"] for item in present])),
                "count": int(sum(item["count"] for item in present)),
            }
    return result


def run_bench(
    figures: list[Figure],
    qas: list[QA],
    config: Config,
    score_function: ScoreFunction,
    *,
    seeds: list[int] | None = None,
    share: float = 0.1,
) -> BenchReport:
    """Build a corruption suite per seed, score it with the graph and every baseline, and average."""
    seeds = seeds if seeds is not None else [config.seed]
    settings = config.filter
    per_method: dict[str, list[dict[str, Any]]] = {}
    per_component: dict[str, list[dict[str, Any]]] = {}
    unavailable: set[str] = set()
    notes: list[str] = []
    counts: dict[str, int] = {}
    for seed in seeds:
        suite = corrupt(figures, qas, share=share, seed=seed)
        for name, value in suite.counts().items():
            counts[name] = counts.get(name, 0) + value
        logger.info("filter-bench: seed %d, %s", seed, ", ".join(f"{name} {value}" for name, value in suite.counts().items()))
        signals, embeddings = score_function(suite.figures, suite.qas)
        by_qa = {record.qa_id: record for record in signals}
        inputs = FilterInputs(
            figures=suite.figures,
            qas=suite.qas,
            signals=[by_qa.get(qa.qa_id) for qa in suite.qas],
            embeddings=embedding_tables(embeddings),
        )
        placed = place(inputs)
        labels = [suite.labels[row] for row in placed.qa_rows]
        scores = score_graph(placed.arrays, settings, seed)
        available = set(available_baselines(placed.arrays.signals))
        unavailable.update(set(BASELINE_SIGNALS) - available)
        for note in scores.spec.stand_ins.values():
            if note not in notes:
                notes.append(note)
        for method in ["graph", *BASELINE_SIGNALS]:
            if method != "graph" and method not in available:
                continue
            per_method.setdefault(method, []).append(evaluate_scores(scores.method_scores(method), labels, settings.keep_share))
        components = {f"graph:{head}": scores.heads[:, column] for column, head in enumerate(("nli", "alignment"))}
        components["span_found"] = placed.arrays.signals[:, signal_index("span_found")].astype(np.float64)
        for name, values in components.items():
            per_component.setdefault(name, []).append(evaluate_scores(values, labels, settings.keep_share))

    methods = {method: _average(runs) for method, runs in per_method.items()}
    suite_description = {
        "seeds": seeds,
        "share_per_corruption": share,
        "keep_share": settings.keep_share,
        "qas_per_seed": len(qas),
        "figures": len(figures),
        "counts_over_seeds": counts,
    }
    return BenchReport(
        methods,
        suite_description,
        {name: _average(runs) for name, runs in per_component.items()},
        sorted(unavailable),
        notes,
    )


def format_table(report: BenchReport) -> str:
    """Render the report as an aligned text table, one row per method.

    Each corruption's column contains its AUROC and, after the slash, the share of its corrupted
    QAs that the keep share removes.
    """
    header = ["method", "AUROC", "removed@keep", "clean removed", *(f"{name} AUROC/removed" for name in CORRUPTIONS)]
    rows = [header]
    for method, result in [*report.methods.items(), *report.components.items()]:
        row = [
            method,
            f"{result['auroc']:.3f} ± {result['auroc_std']:.3f}",
            f"{result['removed_at_keep']:.2f}",
            f"{result['clean_removed_at_keep']:.2f}",
        ]
        for name in CORRUPTIONS:
            item = result["by_corruption"].get(name)
            row.append(f"{item['auroc']:.3f} / {item['removed_at_keep']:.2f}" if item else "-")
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    # A rule between the filter methods and the components that explain them.
    lines.insert(len(report.methods) + 1, "-" * len(lines[0]))
    if report.unavailable:
        lines.append(f"unavailable (signal missing in this run): {', '.join(report.unavailable)}")
    return "\n".join(lines)
