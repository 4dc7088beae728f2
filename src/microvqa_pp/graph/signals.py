"""The scalar signals of a QA as the graph reads them, and the two weak labels derived from them.

Every QA carries up to nine scalar signals (the `QASignals` fields below). The graph keeps them as
one matrix with NaN where a signal is missing, standardises the present values per column, and
feeds them to the QA node and to its cross-modal edges. Two of them become the soft weak labels
that the heads predict:

- `nli`: NLI entailment of the QA given the caption. Without an NLI model (offline profile) the
  word overlap of the QA with the caption stands in, a lexical entailment score.
- `alignment`: calibrated CLIP similarity of the image and the QA. Without CLIP the sentence-
  embedding similarity of the caption and the QA stands in, which compares text with text.

Calibration maps a raw similarity to (0, 1) by a robust z-score (median and scaled median absolute
deviation over the run's QAs) through the logistic function, so that cosine similarities of any
model land on the same scale as entailment probabilities.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from microvqa_pp.records import QASignals

SIGNALS: tuple[str, ...] = (
    "text_similarity",
    "lexical_overlap",
    "span_found",
    "nli_entailment",
    "nli_neutral",
    "nli_contradiction",
    "clip_image_caption",
    "clip_image_qa",
    "judge_score",
)
"""Signal columns, in the order of the signal matrix."""

TEXT_PAIR_SIGNALS: tuple[str, ...] = (
    "nli_entailment",
    "nli_neutral",
    "nli_contradiction",
    "text_similarity",
    "lexical_overlap",
    "span_found",
)
"""Signals that compare the caption with the QA: the features of caption-QA edges."""

NLI_SIGNALS: tuple[str, ...] = ("nli_entailment", "nli_neutral", "nli_contradiction")

HEADS: tuple[str, ...] = ("nli", "alignment")
"""The two weak labels, in the order of the model's heads."""

MAD_TO_STD = 1.4826
"""Scale of the median absolute deviation that estimates the standard deviation of a normal law."""


def signal_index(name: str) -> int:
    return SIGNALS.index(name)


def signal_matrix(signals: Iterable[QASignals | None]) -> np.ndarray:
    """Stack QA signals as a float32 matrix [num_qas, len(SIGNALS)], NaN where a value is missing.

    A missing `QASignals` row (None) gives a row of NaN.
    """
    rows = []
    for record in signals:
        if record is None:
            rows.append([math.nan] * len(SIGNALS))
            continue
        row = []
        for name in SIGNALS:
            value = getattr(record, name)
            row.append(math.nan if value is None else float(value))
        rows.append(row)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(SIGNALS))


@dataclass
class Calibration:
    """A robust z-score through the logistic function: `sigmoid((value - center) / scale)`."""

    center: float = 0.0
    scale: float = 1.0

    @classmethod
    def fit(cls, values: np.ndarray) -> "Calibration":
        present = values[~np.isnan(values)]
        if present.size == 0:
            return cls()
        center = float(np.median(present))
        scale = float(np.median(np.abs(present - center))) * MAD_TO_STD
        if not scale > 1e-6:
            scale = float(present.std()) or 1.0
        return cls(center, scale)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        z = (values - self.center) / self.scale
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


@dataclass
class SignalSpec:
    """The signals a run has, the source of each weak label, and the scaling of the features.

    Fitted once on a run's signals (`fit`) and saved with the model, so that scoring a graph later
    uses the same scaling.
    """

    available: list[str]
    """Signals present for at least one QA."""
    label_sources: dict[str, str]
    """Head name to the signal its weak label comes from (`nli_entailment` or its stand-in ...)."""
    hidden: dict[str, list[str]]
    """Head name to the signals hidden from a QA while that head predicts it."""
    alignment_calibration: Calibration
    mean: list[float]
    std: list[float]
    stand_ins: dict[str, str] = field(default_factory=dict)
    """Head name to a sentence saying which stand-in replaces a missing signal."""

    @classmethod
    def fit(cls, values: np.ndarray) -> "SignalSpec":
        """Choose the weak-label sources and fit the scaling on a signal matrix [num_qas, len(SIGNALS)]."""
        present = ~np.isnan(values)
        available = [name for index, name in enumerate(SIGNALS) if present[:, index].any()]

        stand_ins: dict[str, str] = {}
        if "nli_entailment" in available:
            nli_source, nli_hidden = "nli_entailment", list(NLI_SIGNALS)
        else:
            nli_source, nli_hidden = "lexical_overlap", ["lexical_overlap"]
            stand_ins["nli"] = (
                "NLI probabilities are unavailable, so the NLI head predicts the word overlap of QA and "
                "caption (lexical_overlap) instead"
            )
        if "clip_image_qa" in available:
            alignment_source = "clip_image_qa"
        else:
            alignment_source = "text_similarity"
            stand_ins["alignment"] = (
                "CLIP similarities are unavailable, so the alignment head predicts the caption-QA "
                "sentence-embedding similarity (text_similarity) instead, and image-QA edges carry that "
                "value; no signal compares the image itself with the QA"
            )

        mean, std = [], []
        for index in range(len(SIGNALS)):
            column = values[present[:, index], index]
            mean.append(float(column.mean()) if column.size else 0.0)
            deviation = float(column.std()) if column.size > 1 else 0.0
            std.append(deviation if deviation > 1e-6 else 1.0)

        calibration = Calibration.fit(values[:, signal_index(alignment_source)])
        return cls(
            available=available,
            label_sources={"nli": nli_source, "alignment": alignment_source},
            hidden={"nli": nli_hidden, "alignment": [alignment_source]},
            alignment_calibration=calibration,
            mean=mean,
            std=std,
            stand_ins=stand_ins,
        )

    def weak_labels(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Return the soft weak label of each head per QA, in [0, 1], NaN where its source is missing."""
        nli = values[:, signal_index(self.label_sources["nli"])].astype(np.float32)
        alignment = values[:, signal_index(self.label_sources["alignment"])]
        return {"nli": np.clip(nli, 0.0, 1.0), "alignment": self.alignment_calibration(alignment)}

    def standardise(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (standardised values with 0 where missing, presence mask), both [num_qas, len(SIGNALS)]."""
        present = ~np.isnan(values)
        scaled = (values - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.where(present, scaled, 0.0).astype(np.float32), present

    def hidden_indices(self, head: str) -> list[int]:
        return [signal_index(name) for name in self.hidden[head]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SignalSpec":
        data = dict(data)
        data["alignment_calibration"] = Calibration(**data["alignment_calibration"])
        return cls(**data)
