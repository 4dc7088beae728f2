"""Stage `split`: train and test splits with no article, image or near-duplicate in both.

Questions are assigned by leakage group (see `grouping`), so the test share is met only as
closely as the group sizes allow. `assign_groups` visits groups in a seeded random order and
puts each in the test split when that brings the test split's per-task counts closer to their
targets, which stratifies by task type as far as the groups permit. Visiting groups in random
order rather than largest first keeps the test split from filling up with a few large articles.
A later search step takes a large group back out when the others fill the test split closer to
its target. The same seed and input give the same split. When the achieved test share still
differs from the target by more than `SHARE_TOLERANCE`, the stage logs a warning and leaves a
note that the data-set card shows.

The stage also measures what overlap is left: for each test question, the nearest training
question and image (see `overlap`). The stats in the manifest compare these similarities with
a random split of the same questions.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

import numpy as np

from microvqa_pp.records import MCQ, Embedding, Figure, Rejection, SplitAssignment
from microvqa_pp.release import overlap
from microvqa_pp.release.grouping import leakage_groups
from microvqa_pp.run.executor import Executor
from microvqa_pp.run.stage import Stage, StageResult, read_records

logger = logging.getLogger(__name__)

TRAIN = "train"
TEST = "test"
SPLITS = (TRAIN, TEST)
MAX_REFINE_PASSES = 20
TRAIN_ONLY_CANDIDATES = 4
"""Largest test groups tried in train per round of `assign_groups`' third step."""
MAX_TRAIN_ONLY_ROUNDS = 8
"""Rounds of the third step. Each round that finds a closer split keeps one more group in train."""
SHARE_TOLERANCE = 0.05
"""Absolute difference of the achieved from the target test share above which the stage warns."""
NOTE_KEY = "split"
"""Key of the manifest note written when a split is empty or the test share misses its target."""
_EPSILON = 1e-9


class _Objective:
    """Squared distance of a test split's per-task and total question counts from their targets."""

    def __init__(self, targets: list[float]) -> None:
        self.targets = targets
        self.total_target = sum(targets)

    def cost(self, counts: list[int]) -> float:
        per_task = sum((count - target) ** 2 for count, target in zip(counts, self.targets))
        return per_task + (sum(counts) - self.total_target) ** 2

    def change(self, counts: list[int], vector: list[int], sign: int) -> float:
        """Return the change of the cost when `sign` times `vector` is added to `counts`.

        For each count c with target t, (c + w - t)^2 - (c - t)^2 = w * (2 * (c - t) + w).
        """
        change = 0.0
        for count, target, value in zip(counts, self.targets, vector):
            if value:
                change += sign * value * (2 * (count - target) + sign * value)
        size = sign * sum(vector)
        return change + size * (2 * (sum(counts) - self.total_target) + size)


def _local_search(order: list[str], vectors: dict[str, list[int]], objective: _Objective, train_only: set[str]) -> tuple[set[str], list[int]]:
    """Return the test groups and their per-task counts found by greedy visits and single moves.

    Groups in `train_only` stay in train.
    """
    counts = [0] * len(objective.targets)
    test: set[str] = set()

    def move(name: str, sign: int) -> None:
        for task, value in enumerate(vectors[name]):
            counts[task] += sign * value
        test.symmetric_difference_update({name})

    candidates = [name for name in order if name not in train_only]
    for name in candidates:
        if objective.change(counts, vectors[name], +1) < -_EPSILON:
            move(name, +1)

    # Early additions can overshoot once later groups arrive, so move single groups in or out
    # while that lowers the cost. Every move lowers it, so the loop ends.
    for _ in range(MAX_REFINE_PASSES):
        moved = False
        for name in candidates:
            sign = -1 if name in test else +1
            if objective.change(counts, vectors[name], sign) < -_EPSILON:
                move(name, sign)
                moved = True
        if not moved:
            break
    return test, counts


def assign_groups(group_tasks: dict[str, Counter[int]], test_share: float, seed: int) -> set[str]:
    """Choose the leakage groups of the test split.

    `group_tasks` maps each group to its question count per task. The choice lowers the squared
    distance of the test split's per-task and total counts from `test_share` of the data, which
    stratifies by task type as far as the groups permit:

    1. Groups are visited in a seeded random order, and a group joins the test split when that
       lowers the distance.
    2. Passes over all groups move single groups in or out while that lowers the distance.
    3. A large group that joined early can overshoot the target further than any single move
       repairs (a group of 29 questions against a target of 15, with the other groups all small).
       So steps 1 and 2 run again with one of the largest test groups kept in train, and that
       result is kept when it is closer. Rounds go on while one of them gets closer.

    With two or more groups, neither split is empty: the smallest group moves to the empty side.

    NOTE: this is a local search, so it can miss a closer split that needs several large groups
    moved at once.
    """
    tasks = sorted({task for counts in group_tasks.values() for task in counts})
    vectors = {name: [counts.get(task, 0) for task in tasks] for name, counts in group_tasks.items()}
    totals = [sum(vector[index] for vector in vectors.values()) for index in range(len(tasks))]
    objective = _Objective([test_share * total for total in totals])

    order = sorted(group_tasks)
    random.Random(seed).shuffle(order)

    train_only: set[str] = set()
    test, counts = _local_search(order, vectors, objective, train_only)
    for _ in range(MAX_TRAIN_ONLY_ROUNDS):
        largest = sorted(test, key=lambda name: (-sum(vectors[name]), name))[:TRAIN_ONLY_CANDIDATES]
        for name in largest:
            candidate, candidate_counts = _local_search(order, vectors, objective, train_only | {name})
            if objective.cost(candidate_counts) < objective.cost(counts) - _EPSILON:
                train_only.add(name)
                test, counts = candidate, candidate_counts
                break
        else:
            break

    if len(order) >= 2 and len(test) in (0, len(order)):
        # Neither split may be empty while there are two groups to split.
        smallest = min(order, key=lambda name: (sum(group_tasks[name].values()), name))
        test.symmetric_difference_update({smallest})
    return test


class SplitStage(Stage):
    """Assign every MCQ to `train` or `test` by leakage group and measure the overlap left."""

    name = "split"
    requires = ("ingest", "mcq")
    config_sections = ("split",)
    record_type = SplitAssignment

    def execute(self, executor: Executor) -> StageResult:
        settings = self.config.split
        mcqs: list[MCQ] = read_records(self.run.stage_output("mcq"), MCQ)
        figures = {figure.figure_id: figure for figure in read_records(self.run.stage_output("ingest"), Figure)}

        rejections = [
            Rejection(self.name, mcq.mcq_id, "missing_figure", f"figure {mcq.figure_id} is not in the ingest output")
            for mcq in mcqs
            if mcq.figure_id not in figures
        ]
        mcqs = [mcq for mcq in mcqs if mcq.figure_id in figures]
        used_figures = [figures[figure_id] for figure_id in dict.fromkeys(mcq.figure_id for mcq in mcqs)]
        group_of = leakage_groups(used_figures, settings.near_duplicate_distance)

        group_tasks: dict[str, Counter[int]] = {}
        for mcq in mcqs:
            group_tasks.setdefault(group_of[mcq.figure_id], Counter())[mcq.task] += 1
        test_groups = assign_groups(group_tasks, settings.test_share, self.config.seed)
        is_test = np.array([group_of[mcq.figure_id] in test_groups for mcq in mcqs], dtype=bool)

        records = [
            SplitAssignment(
                mcq_id=mcq.mcq_id,
                qa_id=mcq.qa_id,
                figure_id=mcq.figure_id,
                article_id=figures[mcq.figure_id].article_id,
                image_hash=figures[mcq.figure_id].image_hash,
                leakage_group=group_of[mcq.figure_id],
                task=mcq.task,
                split=TEST if test else TRAIN,
            )
            for mcq, test in zip(mcqs, is_test)
        ]
        stats = split_stats(records, group_tasks, settings.test_share)
        if mcqs:
            stats.update(self._measure_overlap(mcqs, used_figures, is_test, records))
        if not mcqs:
            logger.warning("split: the mcq stage wrote no questions, so both splits are empty")
            self.run.add_note(NOTE_KEY, "Both splits are empty: the mcq stage wrote no questions.")
        elif not is_test.any():
            logger.warning("split: the test split is empty: all %d questions form one leakage group", len(mcqs))
            self.run.add_note(NOTE_KEY, f"The test split is empty: all {len(mcqs)} questions share one leakage group (article, image or near-duplicate).")
        elif abs(stats["test_share"] - settings.test_share) > SHARE_TOLERANCE:
            logger.warning(
                "split: test share %.3f differs from the target %.3f by more than %.2f: whole leakage groups go to one split, and the largest has %d of %d questions",
                stats["test_share"],
                settings.test_share,
                SHARE_TOLERANCE,
                stats["largest_group"],
                len(mcqs),
            )
            self.run.add_note(
                NOTE_KEY,
                f"The test split holds {stats['test']} of {len(mcqs)} questions ({stats['test_share']:.1%}) against a "
                f"target of {settings.test_share:.1%} (split.test_share). Whole leakage groups go to one split, and the "
                f"assignment found no closer split with these groups (the largest has {stats['largest_group']} questions).",
            )
        else:
            # A note from an earlier run of this stage no longer applies.
            with self.run.update_manifest() as manifest:
                manifest.get("notes", {}).pop(NOTE_KEY, None)

        self.write_output(records)
        self.write_rejections(rejections)
        logger.info(
            "split: %d train, %d test questions (test share %.3f, target %.3f) in %d leakage groups",
            stats["train"],
            stats["test"],
            stats["test_share"],
            settings.test_share,
            stats["groups"],
        )
        return StageResult(count=len(records), rejected=dict(Counter(r.reason for r in rejections)), stats=stats)

    def _measure_overlap(self, mcqs: list[MCQ], figures: list[Figure], is_test: np.ndarray, records: list[SplitAssignment]) -> dict:
        """Fill in the nearest training neighbours of test records; return the grouped and random summaries."""
        embeddings_path = self.run.stage_output("embeddings")
        embeddings = read_records(embeddings_path, Embedding) if embeddings_path.exists() else []
        comparison = overlap.compare_with_random(
            mcqs,
            figures,
            is_test,
            embeddings,
            seed=self.config.seed,
            text_model=self.config.signals.text_model,
            image_model=self.config.signals.clip_model,
        )
        grouped = comparison.grouped
        by_id = {record.mcq_id: record for record in records}
        for position, mcq_id in enumerate(grouped.test_mcqs):
            record = by_id[mcq_id]
            record.nearest_train_mcq = grouped.nearest_question[position]
            record.question_similarity = _finite_or_none(grouped.question_similarity[position])
            record.nearest_train_figure = grouped.nearest_figure[position]
            record.image_similarity = _finite_or_none(grouped.image_similarity[position])

        return {
            "question_representation": comparison.questions.description,
            "image_representation": comparison.images.description,
            "overlap_grouped": {
                "question": overlap.summarise(grouped.question_similarity),
                "image": overlap.summarise(grouped.image_similarity),
            },
            "overlap_random": {
                "question": overlap.summarise(comparison.random.question_similarity),
                "image": overlap.summarise(comparison.random.image_similarity),
            },
        }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def split_stats(records: list[SplitAssignment], group_tasks: dict[str, Counter[int]], test_share: float) -> dict:
    """Return the counts of a split for the manifest: questions, groups and per-task test shares."""
    counts = Counter(record.split for record in records)
    per_task: dict[str, float] = {}
    for task in sorted({record.task for record in records}):
        in_task = [record for record in records if record.task == task]
        per_task[str(task)] = round(sum(record.split == TEST for record in in_task) / len(in_task), 4)
    sizes = [sum(counts_.values()) for counts_ in group_tasks.values()]
    return {
        "train": counts[TRAIN],
        "test": counts[TEST],
        "test_share": round(counts[TEST] / len(records), 4) if records else 0.0,
        "test_share_target": test_share,
        "test_share_per_task": per_task,
        "groups": len(group_tasks),
        "largest_group": max(sizes, default=0),
        "test_groups": len({record.leakage_group for record in records if record.split == TEST}),
    }
