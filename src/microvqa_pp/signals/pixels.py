"""Image loading, and a deterministic pixel descriptor for when no CLIP model is configured.

The graph needs a feature vector for every image node. Without CLIP, `pixel_descriptor` gives one
computed from the pixels alone: a coarse colour layout, an intensity histogram, a gradient
(texture) histogram and a saturation-weighted hue histogram. It separates a fluorescence
micrograph from an H&E section or a plot, and near-duplicate images get near-identical vectors,
which is what the image neighbour edges need. It carries no semantics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PIXEL_DESCRIPTOR = "pixel-descriptor-v1"
"""Model name recorded for pixel-descriptor image embeddings; change it when the maths changes."""
PIXEL_DESCRIPTOR_SIZE = 256
"""8 x 8 x 3 colour layout + 32 intensity bins + 16 gradient bins + 16 hue bins."""

_WORK_SIDE = 64  # pixels of the grey image that the histograms are computed on


class UnreadableImage(Exception):
    """An image file that is missing or cannot be decoded. The message gives the cause."""


def open_image(path: Path, *, draft_side: int | None = None) -> Any:
    """Open and decode an image as RGB.

    `draft_side` lets the JPEG decoder shrink the image while decoding (to no less than that
    many pixels a side), which is much faster for large figures when only a small copy is needed.
    Raises UnreadableImage for a missing, truncated or undecodable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if draft_side is not None:
                image.draft("RGB", (draft_side, draft_side))
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as error:
        raise UnreadableImage(f"{type(error).__name__}: {error}") from error


def pixel_descriptor(image: Any) -> np.ndarray:
    """Return a unit-length float32 vector of PIXEL_DESCRIPTOR_SIZE values describing an RGB image."""
    from PIL import Image

    layout = np.asarray(image.resize((8, 8), Image.Resampling.BOX), dtype=np.float32).reshape(-1) / 255.0
    layout -= layout.mean()

    grey = np.asarray(image.convert("L").resize((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BOX), dtype=np.float32)
    intensity, _ = np.histogram(grey, bins=32, range=(0, 256))

    gradient = np.hypot(np.diff(grey, axis=0)[:, :-1], np.diff(grey, axis=1)[:-1, :])
    texture, _ = np.histogram(np.clip(gradient, 0, 127), bins=16, range=(0, 128))

    hsv = np.asarray(image.resize((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BOX).convert("HSV"), dtype=np.float32)
    hue, _ = np.histogram(hsv[..., 0], bins=16, range=(0, 256), weights=hsv[..., 1] / 255.0)

    # Each part is scaled to unit length first, so the four weigh equally in a cosine similarity.
    parts = [_unit(layout), _unit(intensity), _unit(texture), _unit(hue)]
    return _unit(np.concatenate(parts))


def _unit(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 0 else values
