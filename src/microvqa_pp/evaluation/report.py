"""The summary (`summary.json`) and the Markdown report of an evaluation.

The report's main table has the layout of MicroVQA's leaderboard: accuracy in percent, overall
and per task (V: expert visual understanding, H: hypothesis generation, E: experimental
proposal), with published rows for context.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from microvqa_pp.evaluation.metrics import CI_METHOD, PARSERS, answer_of, disagreements, parser_summary
from microvqa_pp.evaluation.records import EvalResult
from microvqa_pp.records import TASK_NAMES, Rejection

PUBLISHED_SOURCE = (
    "MicroVQA leaderboard, docs/static/leaderboard/leaderboard.csv in the GitHub repository jmhb0/microvqa "
    "(1,042 questions, reference prompt and parser, with images)"
)
PUBLISHED: list[tuple[str, float, float, float, float]] = [
    # name, overall, V, H, E: accuracy in percent
    ("o1", 52.8, 55.4, 50.2, 53.0),
    ("Claude-3.5-Sonnet", 51.7, 54.1, 50.2, 50.4),
    ("Gemini-Pro-1.5", 51.1, 52.0, 50.2, 50.9),
    ("GPT-4o", 45.6, 48.7, 43.1, 44.8),
    ("LLaVA-Med-Mistral-7B", 43.0, 37.3, 47.1, 41.6),
    ("Human", 50.3, 52.7, 47.5, 51.4),
    ("Random", 22.0, 21.9, 21.8, 21.9),
]
TASK_COLUMNS = (("V", 1), ("H", 2), ("E", 3))

_REPLY_EXCERPT_CHARS = 160


def build_summary(results: Sequence[EvalResult], run_info: dict[str, Any]) -> dict[str, Any]:
    """Return the content of summary.json: N, each parser's scores, and how the run was made."""
    failed = Counter(result.error for result in results if result.error)
    summary: dict[str, Any] = {
        "n": len(results),
        "parsers": {parser: parser_summary(results, parser) for parser in PARSERS},
        "ci_method": CI_METHOD,
        "disagreements": len(disagreements(results)),
        "failed_requests": sum(failed.values()),
        "failed_reasons": dict(sorted(failed.items())),
    }
    summary.update(run_info)
    return summary


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _task_accuracy(parser_scores: dict[str, Any], task: int) -> float | None:
    entry = parser_scores["per_task"].get(TASK_NAMES[task])
    return None if entry is None else entry["accuracy"]


def leaderboard_table(summary: dict[str, Any], model: str) -> str:
    """Render this run's rows (one per parser) above the published rows, in percent."""
    lines = [
        "| Model | Overall | V | H | E | Unparsed | 95 % CI (overall) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for parser in PARSERS:
        scores = summary["parsers"][parser]
        tasks = " | ".join(_percent(_task_accuracy(scores, task)) for _, task in TASK_COLUMNS)
        low, high = scores["ci95"]
        lines.append(
            f"| **{_escape(model)}** ({parser} parser) | {_percent(scores['accuracy'])} | {tasks} | "
            f"{_percent(scores['unparsed'])} | {_percent(low)}–{_percent(high)} |"
        )
    for name, overall, visual, hypothesis, experiment in PUBLISHED:
        lines.append(f"| {name} (published) | {overall:.1f} | {visual:.1f} | {hypothesis:.1f} | {experiment:.1f} | | |")
    return "\n".join(lines)


def render_report(
    summary: dict[str, Any],
    results: Sequence[EvalResult],
    rejections: Sequence[Rejection],
    model: str,
) -> str:
    """Render the Markdown report: the leaderboard table, groups, rejections and disagreements."""
    parts = [
        f"# MicroVQA evaluation of {model}",
        "",
        f"- data set: `{summary.get('dataset', '')}` ({summary.get('layout', '')} layout), "
        f"{summary['n']} questions evaluated, {len(rejections)} rejected",
        f"- prompt: {summary.get('prompt', '')}, no-image mode `{summary.get('no_image', 'off')}`, "
        f"temperature {summary.get('temperature')}, max tokens {summary.get('max_tokens')}, seed {summary.get('seed')}",
        f"- backend: {summary.get('agent', '')}; {summary['failed_requests']} failed requests",
    ]
    parts += [f"- note: {note}" for note in summary.get("notes", [])]
    if summary["failed_requests"]:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in summary["failed_reasons"].items())
        parts.append(
            f"- **{summary['failed_requests']} of {summary['n']} questions have no reply** because their requests "
            f"failed ({reasons}). They are scored wrong, so the accuracy is a lower bound. Run the same command "
            "again to retry them."
        )
    parts += [
        "",
        "## Accuracy (%)",
        "",
        leaderboard_table(summary, model),
        "",
        "V: expert visual understanding, H: hypothesis generation, E: experimental proposal. Unparsed: replies "
        "without a readable answer, scored wrong. The reference parser is MicroVQA's answer regex; the robust parser "
        f"also reads letters, restated option text and revised answers. Interval: {CI_METHOD}.",
        f"Published rows: {PUBLISHED_SOURCE}. They are comparable with this run only on MicroVQA itself, "
        "with the reference parser and the no-image mode `off`.",
    ]
    parts += _group_section("Accuracy per task (%)", summary, "per_task")
    parts += _group_section("Accuracy per Bloom's level (%)", summary, "per_blooms")
    parts += _rejection_section(rejections)
    parts += _disagreement_section(results)
    return "\n".join(parts) + "\n"


def _group_section(title: str, summary: dict[str, Any], key: str) -> list[str]:
    reference, robust = (summary["parsers"][parser].get(key) or {} for parser in PARSERS)
    if not reference:
        return []
    lines = ["", f"## {title}", "", "| Group | N | Reference | Robust | Unparsed (reference) | Unparsed (robust) |", "|---|---:|---:|---:|---:|---:|"]
    for name, scores in reference.items():
        other = robust[name]
        lines.append(
            f"| {_escape(name)} | {scores['n']} | {_percent(scores['accuracy'])} | {_percent(other['accuracy'])} | "
            f"{_percent(scores['unparsed'])} | {_percent(other['unparsed'])} |"
        )
    return lines


def _rejection_section(rejections: Sequence[Rejection]) -> list[str]:
    if not rejections:
        return []
    lines = ["", f"## Rejected rows ({len(rejections)})", "", "| Question | Reason | Detail |", "|---|---|---|"]
    lines += [f"| {_escape(item.item_id)} | {item.reason} | {_escape(item.detail)} |" for item in rejections]
    return lines


def _disagreement_section(results: Sequence[EvalResult]) -> list[str]:
    differing = disagreements(results)
    lines = ["", f"## Questions where the parsers disagree ({len(differing)})", ""]
    if not differing:
        return lines + ["None."]
    lines += ["| Question | Correct | Reference | Robust (rule) | End of the reply |", "|---|---:|---:|---:|---|"]
    for result in differing:
        reference, robust = answer_of(result, "reference"), answer_of(result, "robust")
        lines.append(
            f"| {_escape(result.question_id)} | {result.correct_index + 1} | {reference or '–'} | "
            f"{robust or '–'} ({result.robust_reason}) | {_escape(_excerpt(result.reply))} |"
        )
    return lines


def _excerpt(reply: str) -> str:
    flat = " ".join(reply.split())
    return flat if len(flat) <= _REPLY_EXCERPT_CHARS else "…" + flat[-_REPLY_EXCERPT_CHARS:]


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
