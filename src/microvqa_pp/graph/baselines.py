"""Single-signal filters, the baselines of the HiCQA-Graph under the same selection interface.

Each baseline scores a QA by one signal alone, higher meaning more consistent:

    clip     CLIP image-QA similarity, calibrated to (0, 1) (see `signals.Calibration`)
    nli      NLI entailment probability of the QA given the caption
    text     cosine similarity of the caption and QA sentence embeddings
    lexical  share of the QA's content words found in the caption

A baseline whose signal is missing for every QA (CLIP or NLI in the offline profile) is unavailable.
"""

from __future__ import annotations

import numpy as np

from microvqa_pp.graph.signals import Calibration, signal_index

BASELINE_SIGNALS: dict[str, str] = {
    "clip": "clip_image_qa",
    "nli": "nli_entailment",
    "text": "text_similarity",
    "lexical": "lexical_overlap",
}
"""Baseline method name to the signal it ranks by."""


def baseline_scores(signals: np.ndarray) -> dict[str, np.ndarray]:
    """Return every baseline's scores [Q] (NaN where its signal is missing) from a signal matrix."""
    scores = {}
    for method, name in BASELINE_SIGNALS.items():
        values = signals[:, signal_index(name)].astype(np.float64)
        if method == "clip":
            values = Calibration.fit(values)(values).astype(np.float64)
            values[np.isnan(signals[:, signal_index(name)])] = np.nan
        scores[method] = values
    return scores


def available_baselines(signals: np.ndarray) -> list[str]:
    """Return the baselines whose signal is present for at least one QA."""
    return [method for method, name in BASELINE_SIGNALS.items() if not np.isnan(signals[:, signal_index(name)]).all()]
