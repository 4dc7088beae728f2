"""Selection of the QAs to keep: the top share of scores (over all QAs or per task type), or a threshold.

Every dropped QA gets a reason: `below_keep_share` (outside the top share of all QAs),
`below_task_keep_share` (outside the top share of its task type), `below_threshold`, or the
reason the caller gives for QAs without a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BELOW_KEEP_SHARE = "below_keep_share"
BELOW_TASK_KEEP_SHARE = "below_task_keep_share"
BELOW_THRESHOLD = "below_threshold"


@dataclass
class Selection:
    """The verdict on every QA, aligned with the scores it was made from."""

    keep: np.ndarray
    reason: list[str]
    rank: np.ndarray
    """1 for the highest score, counted over all scored QAs; 0 for QAs without a score."""
    cutoff: dict[str, float] = field(default_factory=dict)
    """Lowest kept score per group (`all` or a task name); absent when a group keeps nothing."""

    @property
    def kept(self) -> int:
        return int(self.keep.sum())


def keep_count(share: float, total: int) -> int:
    """Return how many of `total` QAs a keep share keeps: share times total, halves rounded up."""
    return min(total, int(np.floor(share * total + 0.5)))


def _descending(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Return `rows` ordered by score, highest first; ties keep the input order."""
    return rows[np.lexsort((rows, -scores[rows]))]


def select(
    scores: np.ndarray,
    *,
    keep_share: float = 0.75,
    threshold: float | None = None,
    groups: list[str] | None = None,
    unscored_reason: str = "no_score",
) -> Selection:
    """Decide keep or drop for every QA from its score (NaN: no score, always dropped).

    With `threshold`, a QA is kept when its score is at least the threshold. Otherwise the
    `keep_count(keep_share, n)` highest-scoring of the n scored QAs are kept, over all QAs or,
    when `groups` is given, within each group (for example each task type).
    """
    scores = np.asarray(scores, dtype=np.float64)
    count = scores.size
    scored = ~np.isnan(scores)
    keep = np.zeros(count, dtype=bool)
    reason = [unscored_reason if not scored[row] else "" for row in range(count)]
    cutoff: dict[str, float] = {}

    if threshold is not None:
        keep = scored & (scores >= threshold)
        for row in np.nonzero(scored & ~keep)[0]:
            reason[row] = BELOW_THRESHOLD
        if keep.any():
            cutoff["all"] = float(scores[keep].min())
    else:
        labels = np.asarray(groups if groups is not None else ["all"] * count, dtype=object)
        below = BELOW_TASK_KEEP_SHARE if groups is not None else BELOW_KEEP_SHARE
        for group in sorted(set(labels[scored].tolist())):
            rows = _descending(scores, np.nonzero(scored & (labels == group))[0])
            kept = rows[: keep_count(keep_share, rows.size)]
            keep[kept] = True
            for row in rows[kept.size :]:
                reason[row] = below
            if kept.size:
                cutoff[str(group)] = float(scores[kept].min())

    rank = np.zeros(count, dtype=np.int64)
    ordered = _descending(scores, np.nonzero(scored)[0])
    rank[ordered] = np.arange(1, ordered.size + 1)
    return Selection(keep=keep, reason=reason, rank=rank, cutoff=cutoff)
