"""The deterministic pixel descriptor and image loading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from microvqa_pp.signals.pixels import PIXEL_DESCRIPTOR_SIZE, UnreadableImage, open_image, pixel_descriptor


def test_descriptor_deterministic_unit_vector(elife_figures) -> None:
    image = open_image(elife_figures[0].image_path, draft_side=128)
    first = pixel_descriptor(image)
    second = pixel_descriptor(open_image(elife_figures[0].image_path, draft_side=128))
    assert first.shape == (PIXEL_DESCRIPTOR_SIZE,)
    assert first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(first, second)


def test_near_duplicate_closer_than_other_figures(elife_figures, tmp_path) -> None:
    original = open_image(elife_figures[3].image_path)
    copy_path = tmp_path / "copy.jpg"
    original.resize((original.width // 3, original.height // 3)).save(copy_path, quality=70)

    reference = pixel_descriptor(original)
    duplicate = float(reference @ pixel_descriptor(open_image(copy_path)))
    others = [float(reference @ pixel_descriptor(open_image(figure.image_path, draft_side=128))) for figure in elife_figures[4:12]]
    assert duplicate > 0.98
    assert duplicate > max(others)


def test_unreadable_images_raise(tmp_path, elife_figures) -> None:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(elife_figures[0].image_path, "rb").read()[:2000])
    not_an_image = tmp_path / "caption.jpg"
    not_an_image.write_text("not an image")

    for path in (truncated, not_an_image, tmp_path / "missing.jpg"):
        with pytest.raises(UnreadableImage):
            open_image(path)


def test_grey_and_colour_images_differ() -> None:
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    green = Image.new("RGB", (64, 64), (0, 200, 0))
    assert float(pixel_descriptor(grey) @ pixel_descriptor(green)) < 0.9
