"""Accuracy, unparsed share and confidence intervals, overall and per group, for each parser.

The reference metrics are MicroVQA's `calculate_metrics` (`eval/eval.py` of jmhb0/microvqa).
Accuracy is the share of questions whose parsed option equals the correct one, so an unparsed
reply counts as wrong. The unparsed share ("bad responses" there) counts every reply whose
0-based prediction is outside 0..4. Both are fractions of all N questions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Sequence

from microvqa_pp.evaluation.records import EvalResult
from microvqa_pp.records import TASK_NAMES

PARSERS = ("reference", "robust")

REFERENCE_VALID_OPTIONS = range(1, 6)
"""Options MicroVQA's metric accepts as a parsed answer: 0-based predictions 0..4.

NOTE: this follows the reference exactly, so a reply of "(6)" to a question with six options is
counted as unparsed even though it is scored correct when option 6 is the answer.
"""

CI_METHOD = "Wilson score interval, 95 %"
_Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = _Z_95) -> tuple[float, float]:
    """Return the Wilson score interval of a binomial proportion (0, 0 when n is 0)."""
    if n == 0:
        return (0.0, 0.0)
    share = successes / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half_width), min(1.0, centre + half_width))


def answer_of(result: EvalResult, parser: str) -> int | None:
    """Return the option a parser's metric counts as the answer, or None when it counts unparsed."""
    if parser == "reference":
        option = result.reference_option
        return option if option in REFERENCE_VALID_OPTIONS else None
    if parser == "robust":
        return result.robust_option
    raise ValueError(f"unknown parser {parser!r}; choose one of {', '.join(PARSERS)}")


def is_correct(result: EvalResult, parser: str) -> bool:
    return result.reference_correct if parser == "reference" else result.robust_correct


def scores(results: Sequence[EvalResult], parser: str) -> dict[str, Any]:
    """Return n, accuracy, unparsed share and the 95 % interval of the accuracy."""
    n = len(results)
    correct = sum(is_correct(result, parser) for result in results)
    unparsed = sum(answer_of(result, parser) is None for result in results)
    low, high = wilson_interval(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "unparsed": unparsed / n if n else 0.0,
        "ci95": [low, high],
    }


def grouped_scores(
    results: Sequence[EvalResult], parser: str, key: Callable[[EvalResult], tuple[int, str] | None]
) -> dict[str, Any]:
    """Return `scores` per group, in the order of the groups' numbers; empty when none has a group.

    `key` returns (number, name) of a result's group, or None; those form the group `unlabelled`.
    """
    groups: dict[tuple[int, str], list[EvalResult]] = defaultdict(list)
    for result in results:
        groups[key(result) or _UNLABELLED].append(result)
    if set(groups) == {_UNLABELLED}:
        return {}
    return {name: scores(members, parser) for (_, name), members in sorted(groups.items())}


_UNLABELLED = (1_000, "unlabelled")


_UNNUMBERED_TASK = 999


def task_key(result: EvalResult) -> tuple[int, str] | None:
    """Return a result's task group: its MicroVQA task id, or its `task_str` when it has no id.

    MicroVQA groups by the integer `task` column, so a data set that spells `task_str` its own
    way ("expert_visual_understanding") still fills the V, H and E columns. Groups with an id
    are named from `TASK_NAMES`.
    """
    if result.task is not None:
        return (result.task, TASK_NAMES.get(result.task, result.task_str or f"task {result.task}"))
    if not result.task_str:
        return None
    return (_UNNUMBERED_TASK, result.task_str)


def blooms_key(result: EvalResult) -> tuple[int, str] | None:
    if result.blooms_level is None:
        return None
    return (result.blooms_level, f"{result.blooms_level} {result.blooms_name}".strip())


def parser_summary(results: Sequence[EvalResult], parser: str) -> dict[str, Any]:
    """Return the overall scores of one parser with its per-task and per-Bloom's-level scores."""
    summary = scores(results, parser)
    summary["per_task"] = grouped_scores(results, parser, task_key)
    per_blooms = grouped_scores(results, parser, blooms_key)
    if per_blooms:
        summary["per_blooms"] = per_blooms
    return summary


def disagreements(results: Sequence[EvalResult]) -> list[EvalResult]:
    """Return the questions whose answer differs between the reference and the robust parser."""
    return [result for result in results if answer_of(result, "reference") != answer_of(result, "robust")]
