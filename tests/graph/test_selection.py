"""Selection: exact keep shares, per-task shares, thresholds and a reason for every dropped QA."""

from __future__ import annotations

import numpy as np
import pytest

from microvqa_pp.graph.selection import (
    BELOW_KEEP_SHARE,
    BELOW_TASK_KEEP_SHARE,
    BELOW_THRESHOLD,
    keep_count,
    select,
)


@pytest.mark.parametrize("count", [1, 4, 7, 10, 35, 101])
@pytest.mark.parametrize("share", [0.1, 0.5, 0.75, 1.0])
def test_keeps_exactly_the_requested_share(count, share):
    scores = np.random.default_rng(count).random(count)
    selection = select(scores, keep_share=share)
    assert selection.kept == keep_count(share, count)
    assert selection.kept == min(count, int(np.floor(share * count + 0.5)))


def test_kept_qas_are_the_highest_scores():
    scores = np.array([0.2, 0.9, 0.5, 0.7, 0.1, 0.6, 0.3, 0.8])
    selection = select(scores, keep_share=0.5)
    assert selection.keep.tolist() == [False, True, False, True, False, True, False, True]
    assert selection.cutoff == {"all": 0.6}
    assert selection.rank.tolist() == [7, 1, 5, 3, 8, 4, 6, 2]


def test_every_dropped_qa_has_a_reason():
    scores = np.random.default_rng(0).random(40)
    selection = select(scores, keep_share=0.75)
    for keep, reason in zip(selection.keep, selection.reason):
        assert (reason == "") == bool(keep)
    assert {reason for reason in selection.reason if reason} == {BELOW_KEEP_SHARE}


def test_ties_break_by_input_order():
    selection = select(np.array([0.5, 0.5, 0.5, 0.5]), keep_share=0.5)
    assert selection.keep.tolist() == [True, True, False, False]


def test_per_task_share_applies_within_each_group():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.4])
    groups = ["a", "a", "a", "a", "b", "b", "b", "b"]
    selection = select(scores, keep_share=0.5, groups=groups)
    assert selection.keep.tolist() == [True, True, False, False, False, False, True, True]
    assert set(selection.reason) == {"", BELOW_TASK_KEEP_SHARE}
    assert selection.cutoff == {"a": 0.8, "b": 0.3}


def test_threshold_keeps_scores_at_or_above_it():
    scores = np.array([0.2, 0.5, 0.49, 0.8])
    selection = select(scores, keep_share=0.75, threshold=0.5)
    assert selection.keep.tolist() == [False, True, False, True]
    assert selection.reason == [BELOW_THRESHOLD, "", BELOW_THRESHOLD, ""]


def test_missing_scores_are_dropped_with_the_given_reason():
    scores = np.array([0.9, np.nan, 0.1, 0.5])
    selection = select(scores, keep_share=2 / 3, unscored_reason="missing_signal")
    assert selection.keep.tolist() == [True, False, False, True]
    assert selection.reason[1] == "missing_signal"
    assert selection.reason[2] == BELOW_KEEP_SHARE
    assert selection.rank.tolist() == [1, 0, 3, 2]
