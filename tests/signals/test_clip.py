"""CLIP embeddings through open_clip (`local-dir:`) and transformers, with tiny random models."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from microvqa_pp.signals.cache import SignalCache
from microvqa_pp.signals.clip import OpenClipEncoder, TransformersClipEncoder, is_open_clip_name, load_clip
from microvqa_pp.signals.pixels import open_image


@pytest.fixture(params=["open_clip", "transformers"])
def clip_name(request, tiny_open_clip, tiny_transformers_clip) -> str:
    return tiny_open_clip if request.param == "open_clip" else str(tiny_transformers_clip)


def make_encoder(name: str, tmp_path, batch_size: int = 2):
    return load_clip(name, "cpu", half_precision=True, batch_size=batch_size, cache=SignalCache(tmp_path / "cache"))


def test_library_chosen_by_name(tiny_open_clip, tiny_transformers_clip, tmp_path) -> None:
    assert is_open_clip_name("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    assert is_open_clip_name(tiny_open_clip)
    assert not is_open_clip_name("openai/clip-vit-base-patch16")
    assert isinstance(make_encoder(tiny_open_clip, tmp_path), OpenClipEncoder)
    assert isinstance(make_encoder(str(tiny_transformers_clip), tmp_path), TransformersClipEncoder)


def test_embeddings_unit_length_and_batch_independent(clip_name, elife_figures, tmp_path) -> None:
    figures = elife_figures[:3]
    texts = [figure.caption[:80] for figure in figures]

    single = make_encoder(clip_name, tmp_path / "a", batch_size=1)
    batched = make_encoder(clip_name, tmp_path / "b", batch_size=3)
    text_single = single.embed_texts(texts, Counter())
    text_batched = batched.embed_texts(texts, Counter())
    keys = [figure.image_sha256 for figure in figures]
    images_single = single.embed_images(keys, lambda index: open_image(figures[index].image_path), Counter())
    images_batched = batched.embed_images(keys, lambda index: open_image(figures[index].image_path), Counter())

    np.testing.assert_allclose(np.linalg.norm(text_single, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(text_single, text_batched, atol=1e-5)
    assert list(images_single) == keys
    for key in keys:
        assert np.linalg.norm(images_single[key]) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(images_single[key], images_batched[key], atol=1e-5)
    assert len({round(float(vector[0]), 6) for vector in images_single.values()}) == 3


def test_long_texts_truncated_and_counted(clip_name, elife_figures, tmp_path) -> None:
    encoder = make_encoder(clip_name, tmp_path)
    long_caption = max((figure.caption for figure in elife_figures), key=len)
    counters: Counter[str] = Counter()
    vectors = encoder.embed_texts([long_caption, "GamGFP foci.", long_caption + " More."], counters)
    assert vectors.shape[0] == 3
    assert counters["clip_text_truncated"] == 2
    # Only the context's first tokens are read, so a longer tail changes nothing.
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-5)


def test_cached_vectors_reused(clip_name, elife_figures, tmp_path) -> None:
    figure = elife_figures[0]
    first, second = Counter(), Counter()
    opened = []

    def opener(index):
        opened.append(index)
        return open_image(figure.image_path)

    make_encoder(clip_name, tmp_path).embed_images([figure.image_sha256], opener, first)
    make_encoder(clip_name, tmp_path).embed_images([figure.image_sha256], opener, second)
    make_encoder(clip_name, tmp_path).embed_texts(["a caption"], first)
    make_encoder(clip_name, tmp_path).embed_texts(["a caption"], second)
    assert opened == [0]
    assert first["clip_image_cache_hits"] == 0
    assert second["clip_image_cache_hits"] == 1
    assert second["clip_text_cache_hits"] == 1


def test_unreadable_image_left_out(clip_name, elife_figures, tmp_path) -> None:
    figure = elife_figures[0]
    vectors = make_encoder(clip_name, tmp_path).embed_images(
        ["good", "bad"], lambda index: open_image(figure.image_path) if index == 0 else None, Counter()
    )
    assert list(vectors) == ["good"]
