"""Stage `split`: train and test splits with no article, image or near-duplicate in both.

Questions are assigned by leakage group (see `grouping`), so the test share is met only as
closely as the group sizes allow. Groups are visited in a seeded random order, and each joins
the test split when that brings the test split's per-task counts closer to their targets, which
stratifies by task type as far as the groups permit. Visiting groups in random order rather
than largest first keeps the test split from filling up with a few large articles. The same
seed and input give the same split.

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
NOTE_KEY = "split"
"""Key of the manifest note written when the test split is empty."""


def _cost(test_counts: Counter[int], targets: dict[int, float]) -> float:
    """Squared distance of the test split from its targets, per task and in total."""
    per_task = sum((test_counts[task] - target) ** 2 for task, target in targets.items())
    total = (sum(test_counts.values()) - sum(targets.values())) ** 2
    return per_task + total


def assign_groups(group_tasks: dict[str, Counter[int]], test_share: float, seed: int) -> set[str]:
    """Choose the leakage groups of the test split.

    `group_tasks` maps each group to its question count per task. Groups are visited in a
    seeded random order, and a group joins the test split when that lowers the squared distance
    of the test split's per-task and total counts from `test_share` of the data. Later passes
    move single groups in or out while that lowers the distance further. With two or more
    groups, neither split is empty: the smallest group moves to the empty side.
    """
    totals: Counter[int] = Counter()
    for counts in group_tasks.values():
        totals.update(counts)
    targets = {task: test_share * count for task, count in totals.items()}

    names = sorted(group_tasks)
    random.Random(seed).shuffle(names)

    test: set[str] = set()
    test_counts: Counter[int] = Counter()
    for name in names:
        candidate = test_counts + group_tasks[name]
        if _cost(candidate, targets) < _cost(test_counts, targets):
            test.add(name)
            test_counts = candidate

    # Early additions can overshoot once later groups arrive, so move single groups in or out
    # while that lowers the cost. Every move lowers it, so the loop ends.
    for _ in range(MAX_REFINE_PASSES):
        moved = False
        for name in names:
            if name in test:
                candidate = test_counts - group_tasks[name]
            else:
                candidate = test_counts + group_tasks[name]
            if _cost(candidate, targets) < _cost(test_counts, targets) - 1e-9:
                test.symmetric_difference_update({name})
                test_counts = candidate
                moved = True
        if not moved:
            break

    if len(names) >= 2 and len(test) in (0, len(names)):
        # Neither split may be empty while there are two groups to split.
        smallest = min(names, key=lambda name: (sum(group_tasks[name].values()), name))
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
