"""The report's plots, each returned as PNG bytes (matplotlib with the Agg backend)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from microvqa_pp.deps import require

SPLIT_COLOURS = {"train": "#4C72B0", "test": "#DD8452"}
BUILT_COLOUR = "#4C72B0"
REFERENCE_COLOUR = "#A0A0A0"
KEPT_COLOUR = "#55A868"
DROPPED_COLOUR = "#C44E52"
DPI = 110


@contextmanager
def _figure(columns: int = 1, rows: int = 1, width: float = 8.0, height: float = 3.6) -> Iterator[tuple[Any, Any]]:
    """Yield a matplotlib figure and its axes, and close the figure afterwards."""
    matplotlib = require("matplotlib", "report", "the data-set report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    try:
        yield figure, axes
    finally:
        plt.close(figure)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    # No software version in the file, so the same data gives the same bytes across matplotlib releases.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def stage_counts(stages: Sequence[tuple[str, int]], rejections: Sequence[tuple[str, str, int]]) -> bytes:
    """Bar charts of the records each stage wrote and of the rejection reasons per stage."""
    height = max(3.0, 0.32 * max(len(stages), len(rejections)) + 1.2)
    with _figure(columns=2, width=11.0, height=height) as (figure, axes):
        from matplotlib.ticker import MaxNLocator

        left, right = axes[0]
        names = [name for name, _ in stages][::-1]
        counts = [count for _, count in stages][::-1]
        bars = left.barh(names, counts, color=BUILT_COLOUR, height=0.6)
        left.bar_label(bars, padding=3, fontsize=8)
        left.set_xlabel("records written")
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_title("Records per stage")
        left.margins(x=0.15)
        if rejections:
            labels = [f"{stage}: {reason}" for stage, reason, _ in rejections][::-1]
            values = [count for _, _, count in rejections][::-1]
            bars = right.barh(labels, values, color=DROPPED_COLOUR, height=0.6)
            right.set_ylim(-0.75, max(len(labels), 3) - 0.25)
            right.bar_label(bars, padding=3, fontsize=8)
            right.set_xlabel("items dropped")
            right.xaxis.set_major_locator(MaxNLocator(integer=True))
            right.margins(x=0.15)
            right.tick_params(axis="y", labelsize=8)
        else:
            right.text(0.5, 0.5, "no rejections", ha="center", va="center", transform=right.transAxes)
            right.set_axis_off()
        right.set_title("Rejection reasons")
        return _png(figure)


def blooms(built: Mapping[int, int], reference: Mapping[int, int], reference_label: str, names: Mapping[int, str]) -> bytes:
    """Side-by-side bars of the share of questions per Bloom's level, built data against a reference."""
    levels = sorted(set(names) | set(built) | set(reference))
    built_total = max(sum(built.values()), 1)
    reference_total = max(sum(reference.values()), 1)
    positions = np.arange(len(levels))
    with _figure(width=8.5, height=3.8) as (figure, axes):
        axis = axes[0][0]
        built_shares = [built.get(level, 0) / built_total for level in levels]
        reference_shares = [reference.get(level, 0) / reference_total for level in levels]
        axis.bar(positions - 0.2, built_shares, 0.4, label=f"built data (n={sum(built.values())})", color=BUILT_COLOUR)
        axis.bar(positions + 0.2, reference_shares, 0.4, label=f"{reference_label} (n={sum(reference.values())})", color=REFERENCE_COLOUR)
        axis.set_xticks(positions, [f"{level}\n{names.get(level, '?')}" for level in levels], fontsize=8)
        axis.set_ylabel("share of questions")
        axis.set_title("Bloom's taxonomy levels")
        axis.legend(fontsize=8)
        return _png(figure)


def tsne(panels: Sequence[tuple[str, np.ndarray, Sequence[str]]]) -> bytes:
    """Scatter plots of 2-D t-SNE coordinates, one panel per (title, points, split labels)."""
    with _figure(columns=len(panels), width=5.0 * len(panels), height=4.6) as (figure, axes):
        for axis, (title, points, labels) in zip(axes[0], panels):
            labels_array = np.asarray(labels)
            for split, colour in SPLIT_COLOURS.items():
                chosen = labels_array == split
                if chosen.any():
                    axis.scatter(points[chosen, 0], points[chosen, 1], s=14, alpha=0.8, color=colour, label=f"{split} ({int(chosen.sum())})", edgecolors="none")
            axis.set_title(title, fontsize=10)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.legend(fontsize=8, loc="best")
        return _png(figure)


def signal_histograms(signals: Sequence[tuple[str, np.ndarray, np.ndarray | None]], fused: tuple[np.ndarray, np.ndarray, float | None] | None) -> bytes:
    """Histograms of each signal split by the filter's verdict, and of the fused score with the threshold.

    Each entry of `signals` is (name, values, kept mask or None), and `fused` is (scores, kept mask,
    threshold).
    """
    panels = len(signals) + (1 if fused is not None else 0)
    columns = min(3, max(panels, 1))
    rows = max(1, -(-panels // columns))
    with _figure(columns=columns, rows=rows, width=4.0 * columns, height=3.0 * rows) as (figure, axes):
        flat = list(axes.flat)
        index = 0
        if fused is not None:
            scores, kept, threshold = fused
            _stacked_histogram(flat[index], scores, kept)
            if threshold is not None:
                flat[index].axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"keep threshold {threshold:.3f}")
            flat[index].set_title("fused consistency score", fontsize=10)
            flat[index].legend(fontsize=7, loc="best")
            index += 1
        for name, values, kept in signals:
            _stacked_histogram(flat[index], values, kept)
            flat[index].set_title(name, fontsize=10)
            flat[index].legend(fontsize=7)
            index += 1
        for axis in flat[index:]:
            axis.set_axis_off()
        return _png(figure)


def _stacked_histogram(axis: Any, values: np.ndarray, kept: np.ndarray | None) -> None:
    """Histogram of the finite values, stacked by the filter's verdict when `kept` is given."""
    finite = np.isfinite(values)
    values = values[finite]
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1e-6, 21)
    if kept is None:
        axis.hist(values, bins=bins, color=BUILT_COLOUR, label=f"all QAs ({len(values)})")
    else:
        kept = kept[finite]
        axis.hist([values[kept], values[~kept]], bins=bins, stacked=True, color=[KEPT_COLOUR, DROPPED_COLOUR], label=[f"kept ({int(kept.sum())})", f"dropped ({int((~kept).sum())})"])
    axis.set_ylabel("QAs", fontsize=8)
    axis.tick_params(labelsize=8)


def correct_positions(counts: Mapping[str, Mapping[int, int]], options: int) -> bytes:
    """Bars of how often the correct option sits at each position, per split, with the uniform share."""
    positions = np.arange(1, options + 1)
    width = 0.8 / max(len(counts), 1)
    with _figure(width=7.0, height=3.4) as (figure, axes):
        axis = axes[0][0]
        for offset, (split, by_position) in enumerate(counts.items()):
            total = max(sum(by_position.values()), 1)
            shares = [by_position.get(int(position), 0) / total for position in positions]
            shift = (offset - (len(counts) - 1) / 2) * width
            axis.bar(positions + shift, shares, width, color=SPLIT_COLOURS.get(split, BUILT_COLOUR), label=f"{split} (n={sum(by_position.values())})")
        axis.axhline(1 / options, color="black", linestyle="--", linewidth=1, label=f"uniform 1/{options}")
        axis.set_xticks(positions, [str(position) for position in positions])
        axis.set_ylim(0, axis.get_ylim()[1] * 1.25)
        axis.set_xlabel("position of the correct option (1-based)")
        axis.set_ylabel("share of questions")
        axis.set_title("Correct-option positions")
        axis.legend(fontsize=8, loc="upper center", ncol=len(counts) + 1)
        return _png(figure)


def overlap_curves(panels: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """Empirical distribution functions of nearest-training similarity: grouped against random split.

    Each panel is (title, grouped similarities, random-split similarities).
    """
    with _figure(columns=len(panels), width=5.0 * len(panels), height=3.8) as (figure, axes):
        for axis, (title, grouped, random) in zip(axes[0], panels):
            for label, values, colour in (("grouped split", grouped, SPLIT_COLOURS["test"]), ("random split", random, REFERENCE_COLOUR)):
                values = np.sort(values[np.isfinite(values)])
                if len(values) == 0:
                    continue
                fraction = np.arange(1, len(values) + 1) / len(values)
                axis.step(values, fraction, where="post", color=colour, label=f"{label} (median {np.median(values):.2f})")
            axis.set_xlabel("similarity to the nearest training item")
            axis.set_ylabel("share of test questions at or below")
            axis.set_title(title, fontsize=10)
            axis.legend(fontsize=8, loc="best")
        return _png(figure)
