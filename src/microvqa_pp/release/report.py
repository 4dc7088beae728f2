"""The data-set report: `RUN/report/index.html`, one self-contained page with embedded PNG plots.

The page has these sections: counts and rejection reasons per stage, the splits, Bloom's levels
against a reference, and a t-SNE of image and question embeddings coloured by split. Then come
histograms of the consistency signals and the fused score with the keep threshold, the
correct-option positions, and the train-test overlap of the grouped split against a random
split. Each plot is also written beside the page as a PNG.
A section whose inputs are missing (a stage that has not run) says so instead of failing, so
the report can be written at any point of a build.
"""

from __future__ import annotations

import base64
import html
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microvqa_pp.config import Config
from microvqa_pp.records import MCQ, TASK_NAMES, Embedding, Figure, FilterDecision, QASignals, SplitAssignment
from microvqa_pp.release import blooms, overlap, plots, tsne
from microvqa_pp.release.blooms import BLOOMS_NAMES
from microvqa_pp.release.split import SPLITS, TEST
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records

logger = logging.getLogger(__name__)

SIGNAL_FIELDS = {
    "text_similarity": "text similarity (caption, QA)",
    "lexical_overlap": "lexical overlap",
    "nli_entailment": "NLI entailment",
    "nli_neutral": "NLI neutral",
    "nli_contradiction": "NLI contradiction",
    "clip_image_caption": "CLIP image-caption",
    "clip_image_qa": "CLIP image-QA",
    "judge_score": "agent judge",
}
"""QASignals fields plotted in the report, with their labels."""

HEAD_FIELDS = {
    "head_nli": "graph head: NLI",
    "head_alignment": "graph head: alignment",
}
"""FilterDecision fields plotted beside the signals."""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
.missing { color: #8a6d3b; background: #fcf8e3; padding: .5em .8em; border-radius: 4px; }
.note { color: #555; font-size: .9em; }
nav a { margin-right: 1em; }
"""


@dataclass
class Section:
    """One part of the page: an anchor id, a title and its HTML body."""

    anchor: str
    title: str
    body: list[str] = field(default_factory=list)


@dataclass
class RunData:
    """The stage outputs that the report reads; a stage that has not run is None."""

    manifest: dict[str, Any]
    figures: list[Figure] | None
    mcqs: list[MCQ] | None
    splits: list[SplitAssignment] | None
    signals: list[QASignals] | None
    decisions: list[FilterDecision] | None
    embeddings: list[Embedding]


def _read(run: RunDir, stage: str, record_type: type) -> list[Any] | None:
    path = run.stage_output(stage)
    return read_records(path, record_type) if path.exists() else None


def load_run_data(run: RunDir) -> RunData:
    return RunData(
        manifest=run.read_manifest(),
        figures=_read(run, "ingest", Figure),
        mcqs=_read(run, "mcq", MCQ),
        splits=_read(run, "split", SplitAssignment),
        signals=_read(run, "score", QASignals),
        decisions=_read(run, "filter", FilterDecision),
        embeddings=_read(run, "embeddings", Embedding) or [],
    )


# Sections -------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(str(name))}</th>" for name in header)
    lines = [f"<table><thead><tr>{cells}</tr></thead><tbody>"]
    for row in rows:
        rendered = []
        for value in row:
            css = ' class="number"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            rendered.append(f"<td{css}>{html.escape(text)}</td>")
        lines.append("<tr>" + "".join(rendered) + "</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _paragraph(text: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<p{attribute}>{html.escape(text)}</p>"


class ReportBuilder:
    """Builds the report's sections from a run's data and writes the page and its plots."""

    def __init__(self, run: RunDir, config: Config, data: RunData):
        self.run = run
        self.config = config
        self.data = data
        self.plots: dict[str, bytes] = {}

    def _image(self, name: str, png: bytes, alt: str) -> str:
        self.plots[name] = png
        encoded = base64.b64encode(png).decode("ascii")
        return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'

    def stages(self) -> Section:
        from microvqa_pp.pipeline import STAGES

        section = Section("stages", "Counts and rejection reasons per stage")
        entries = self.data.manifest.get("stages", {})
        names = [*STAGES, *(name for name in entries if name not in STAGES)]
        rows = []
        counts: list[tuple[str, int]] = []
        rejections: list[tuple[str, str, int]] = []
        for name in names:
            entry = entries.get(name, {})
            rejected = entry.get("rejected") or {}
            reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(rejected.items(), key=lambda pair: -pair[1]))
            seconds = entry.get("seconds")
            rows.append([name, entry.get("state", "not run"), int(entry.get("count", 0)), sum(rejected.values()), reasons, float(seconds) if seconds is not None else ""])
            if entry.get("state") == "done":
                counts.append((name, int(entry.get("count", 0))))
                rejections.extend((name, reason, count) for reason, count in sorted(rejected.items()))
        section.body.append(_table(["stage", "state", "records", "dropped", "reasons", "seconds"], rows))
        if counts:
            section.body.append(self._image("stages", plots.stage_counts(counts, rejections), "records and rejection reasons per stage"))
        return section

    def blooms_levels(self) -> Section:
        section = Section("blooms", "Bloom's taxonomy levels")
        if not self.data.mcqs:
            section.body.append(_missing("Not available: the mcq stage has not run."))
            return section
        built = Counter(mcq.blooms_level for mcq in self.data.mcqs)
        reference, label = blooms.read_blooms_reference(self.config.report.blooms_reference)
        built_total = len(self.data.mcqs)
        reference_total = sum(reference.values())
        section.body.append(_paragraph(f"Questions per level, as counts and shares: the {built_total} built questions beside {label} ({reference_total} questions)."))
        section.body.append(self._image("blooms", plots.blooms(built, reference, label, BLOOMS_NAMES), "Bloom's levels of the built data and the reference"))
        rows = []
        for level in sorted(set(BLOOMS_NAMES) | set(built) | set(reference)):
            built_count = built.get(level, 0)
            reference_count = reference.get(level, 0)
            rows.append([level, BLOOMS_NAMES.get(level, "?"), built_count, f"{built_count / built_total:.1%}", reference_count, f"{reference_count / reference_total:.1%}"])
        header = ["level", "name", "built questions", "built share", f"{label} questions", f"{label} share"]
        section.body.append(_table(header, rows))
        return section

    def splits(self) -> Section:
        section = Section("splits", "Train and test splits")
        if not self.data.splits:
            section.body.append(_missing("Not available: the split stage has not run."))
            return section
        stats = self.data.manifest.get("stages", {}).get("split", {}).get("stats", {})
        target = stats.get("test_share_target", self.config.split.test_share)
        section.body.append(
            _paragraph(
                f"Test share {stats.get('test_share', 0):.3f} against a target of {target:.3f}, in {stats.get('groups', 0)} "
                f"leakage groups (the largest has {stats.get('largest_group', 0)} questions). No article, image hash or "
                f"near-duplicate image (within {self.config.split.near_duplicate_distance} bits of perceptual hash) is in both splits."
            )
        )
        rows = []
        for split in SPLITS:
            chosen = [assignment for assignment in self.data.splits if assignment.split == split]
            tasks = Counter(assignment.task for assignment in chosen)
            rows.append(
                [
                    split,
                    len(chosen),
                    len({assignment.figure_id for assignment in chosen}),
                    len({assignment.article_id for assignment in chosen}),
                    len({assignment.leakage_group for assignment in chosen}),
                    *(tasks.get(task, 0) for task in TASK_NAMES),
                ]
            )
        section.body.append(_table(["split", "questions", "figures", "articles", "groups", *TASK_NAMES.values()], rows))
        return section

    def _split_of(self) -> dict[str, str]:
        return {assignment.mcq_id: assignment.split for assignment in self.data.splits or []}

    def _split_inputs(self) -> tuple[list[MCQ], list[Figure], np.ndarray] | None:
        """Return the split MCQs, their figures and the test mask, or None before the split stage."""
        if not self.data.splits or not self.data.mcqs or not self.data.figures:
            return None
        split_of = self._split_of()
        mcqs = [mcq for mcq in self.data.mcqs if mcq.mcq_id in split_of]
        figures_by_id = {figure.figure_id: figure for figure in self.data.figures}
        figures = [figures_by_id[figure_id] for figure_id in dict.fromkeys(mcq.figure_id for mcq in mcqs)]
        is_test = np.array([split_of[mcq.mcq_id] == TEST for mcq in mcqs], dtype=bool)
        return mcqs, figures, is_test

    def embeddings(self) -> Section:
        section = Section("tsne", "t-SNE of image and question embeddings")
        inputs = self._split_inputs()
        if inputs is None:
            section.body.append(_missing("Not available: the split stage has not run."))
            return section
        mcqs, figures, is_test = inputs
        settings = self.config.report
        questions = overlap.question_representation(mcqs, self.data.embeddings, self.config.signals.text_model)
        images = overlap.image_representation(figures, self.data.embeddings, self.config.signals.clip_model)
        figure_split = {mcq.figure_id: (TEST if test else "train") for mcq, test in zip(mcqs, is_test)}
        labels = {"questions": ["test" if test else "train" for test in is_test], "images": [figure_split[figure.figure_id] for figure in figures]}

        panels = []
        for name, representation in (("images", images), ("questions", questions)):
            chosen = tsne.subsample(len(representation), settings.tsne_max_points, self.config.seed)
            vectors = tsne.dense_matrix(representation, self.config.seed)[chosen]
            points, note = tsne.tsne_points(vectors, settings.tsne_perplexity, settings.tsne_iterations, self.config.seed)
            sampled = f", {len(chosen)} of {len(representation)} sampled" if len(chosen) < len(representation) else ""
            section.body.append(_paragraph(f"{name.capitalize()}: {representation.description}; {note}{sampled}.", "note"))
            if points is not None:
                panels.append((f"{name} ({len(chosen)})", points, [labels[name][index] for index in chosen]))
        if panels:
            section.body.insert(0, self._image("tsne", plots.tsne(panels), "t-SNE of image and question embeddings by split"))
        return section

    def signals(self) -> Section:
        section = Section("signals", "Consistency signals and the fused score")
        if not self.data.signals and not self.data.decisions:
            section.body.append(_missing("Not available: the score and filter stages have not run."))
            return section
        decisions = {decision.qa_id: decision for decision in self.data.decisions or []}
        series: list[tuple[str, np.ndarray, np.ndarray | None]] = []
        absent = []
        signals = self.data.signals or []
        kept = np.array([decisions[signal.qa_id].keep if signal.qa_id in decisions else True for signal in signals], dtype=bool)
        for field_name, label in SIGNAL_FIELDS.items():
            values = np.array([_number(getattr(signal, field_name)) for signal in signals], dtype=np.float64)
            if np.isfinite(values).any():
                series.append((label, values, kept if decisions else None))
            else:
                absent.append(label)
        decision_list = self.data.decisions or []
        decision_kept = np.array([decision.keep for decision in decision_list], dtype=bool)
        for field_name, label in HEAD_FIELDS.items():
            values = np.array([_number(getattr(decision, field_name)) for decision in decision_list], dtype=np.float64)
            if np.isfinite(values).any():
                series.append((label, values, decision_kept))

        fused = None
        if decision_list:
            scores = np.array([decision.score for decision in decision_list], dtype=np.float64)
            threshold = self.config.filter.threshold
            if threshold is None and decision_kept.any() and (~decision_kept).any():
                threshold = float(scores[decision_kept].min())
            fused = (scores, decision_kept, threshold)
            method = decision_list[0].method
            section.body.append(_paragraph(f"Filter method {method}: {int(decision_kept.sum())} of {len(decision_list)} QAs kept" + (f", keep threshold {threshold:.3f} (the lowest kept score unless a threshold is configured)." if threshold is not None else ".")))
        section.body.insert(0, self._image("signals", plots.signal_histograms(series, fused), "histograms of consistency signals and the fused score"))
        if absent:
            section.body.append(_paragraph("Not computed in this run: " + ", ".join(absent) + ".", "note"))
        return section

    def positions(self) -> Section:
        section = Section("positions", "Correct-option positions")
        if not self.data.mcqs:
            section.body.append(_missing("Not available: the mcq stage has not run."))
            return section
        split_of = self._split_of()
        counts: dict[str, Counter[int]] = {}
        for mcq in self.data.mcqs:
            counts.setdefault(split_of.get(mcq.mcq_id, "all"), Counter())[mcq.correct_index + 1] += 1
        ordered = {split: counts[split] for split in [*SPLITS, "all"] if split in counts}
        options = max(len(mcq.choices) for mcq in self.data.mcqs)
        section.body.append(self._image("positions", plots.correct_positions(ordered, options), "share of questions per correct-option position"))
        rows = [[split, *(by_position.get(position, 0) for position in range(1, options + 1))] for split, by_position in ordered.items()]
        section.body.append(_table(["split", *(str(position) for position in range(1, options + 1))], rows))
        return section

    def overlap(self) -> Section:
        section = Section("overlap", "Train-test overlap: grouped split against a random split")
        inputs = self._split_inputs()
        if inputs is None:
            section.body.append(_missing("Not available: the split stage has not run."))
            return section
        mcqs, figures, is_test = inputs
        if not is_test.any() or is_test.all():
            section.body.append(_missing("Not available: one of the splits is empty."))
            return section
        comparison = overlap.compare_with_random(
            mcqs,
            figures,
            is_test,
            self.data.embeddings,
            seed=self.config.seed,
            text_model=self.config.signals.text_model,
            image_model=self.config.signals.clip_model,
        )
        section.body.append(
            _paragraph(
                "For each test question, the similarity of the most similar training question and of the most similar "
                "training image. The random split puts the same number of questions in test without grouping, so other "
                "questions about the same figure or article stay in training. The grouped split should sit further left."
            )
        )

        series = [
            ("questions", comparison.questions.description, comparison.grouped.question_similarity, comparison.random.question_similarity),
            ("images", comparison.images.description, comparison.grouped.image_similarity, comparison.random.image_similarity),
        ]
        panels = [(f"{items}: {description}", grouped, random) for items, description, grouped, random in series]
        section.body.append(self._image("overlap", plots.overlap_curves(panels), "nearest-training similarity, grouped against random split"))

        rows = []
        for items, _, grouped, random in series:
            for split_name, values in (("grouped", grouped), ("random", random)):
                summary = overlap.summarise(values)
                rows.append([items, split_name, summary["n"], _or_blank(summary["median"]), _or_blank(summary["mean"]), _or_blank(summary["share_ge_0.95"])])
        section.body.append(_table(["items", "split", "test questions", "median", "mean", "share >= 0.95"], rows))
        return section

    def notes(self) -> Section:
        section = Section("notes", "Notes recorded by the run")
        notes = self.data.manifest.get("notes", {})
        if not notes:
            section.body.append(_paragraph("None."))
        else:
            section.body.append("<ul>" + "".join(f"<li><b>{html.escape(key)}</b>: {html.escape(text)}</li>" for key, text in sorted(notes.items())) + "</ul>")
        return section

    def summary(self) -> str:
        manifest = self.data.manifest
        parts = [f"microvqa-pp {manifest.get('tool_version', '')}, profile {self.config.profile}, seed {self.config.seed}."]
        if self.data.splits:
            counts = Counter(assignment.split for assignment in self.data.splits)
            figures = {assignment.figure_id for assignment in self.data.splits}
            articles = {assignment.article_id for assignment in self.data.splits}
            parts.append(f"{len(self.data.splits)} questions (train {counts.get('train', 0)}, test {counts.get('test', 0)}) about {len(figures)} figures from {len(articles)} articles.")
        elif self.data.figures is not None:
            parts.append(f"{len(self.data.figures)} figures ingested; later stages have not run.")
        return " ".join(parts)

    def render(self) -> str:
        sections = [self.stages(), self.splits(), self.blooms_levels(), self.embeddings(), self.signals(), self.positions(), self.overlap(), self.notes()]
        title = f"microvqa-pp data-set report: {self.run.root.name}"
        navigation = "".join(f'<a href="#{section.anchor}">{html.escape(section.title)}</a>' for section in sections)
        body = "".join(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>{"".join(section.body)}</section>' for section in sections)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{_paragraph(self.summary())}<nav>{navigation}</nav>{body}</body></html>\n"
        )


def _number(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def _or_blank(value: Any) -> Any:
    return "" if value is None else value


def _write_shared(path: Path, data: bytes) -> None:
    """Write a file readable by others (as the umask allows), replacing any old one atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def write_report(run: RunDir, config: Config) -> Path:
    """Write `RUN/report/index.html` and its plots as PNG files; return the page's path."""
    data = load_run_data(run)
    builder = ReportBuilder(run, config, data)
    page = builder.render()
    run.report_dir.mkdir(parents=True, exist_ok=True)
    for name, png in builder.plots.items():
        _write_shared(run.report_dir / f"{name}.png", png)
    path = run.report_dir / "index.html"
    _write_shared(path, page.encode("utf-8"))
    logger.info("report: wrote %s with %d plots", path, len(builder.plots))
    return path
