"""Validation of one sample: images, captions, labels and licences, with real sample bytes."""

from __future__ import annotations

import hashlib
import io
import json
import resource
import struct
import zlib

import imagehash
import numpy as np
import pytest
from PIL import Image

from microvqa_pp.config import IngestConfig
from microvqa_pp.ingest.validate import Rejected, build_figure, check_image, check_selection, decode_caption, perceptual_hash
from microvqa_pp.sources.base import RawSample


@pytest.fixture(scope="module")
def jpeg(elife_folder) -> bytes:
    """A real JPEG: an eLife figure, 1445 x 1442 grayscale."""
    return (elife_folder / "images" / "elife-01222-fig2s1.jpg").read_bytes()


@pytest.fixture(scope="module")
def png(sample_members) -> bytes:
    """A real BIOMEDICA image: PNG bytes in a `.jpg` member, 512 x 512 RGB."""
    return sample_members[0][1]["jpg"]


def _reason(function, *args) -> str:
    with pytest.raises(Rejected) as rejected:
        function(*args)
    return rejected.value.reason


def _jpeg_declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0 or SOF2) patched to declare another size."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        position = data.find(marker)
        if position > 0:
            data[position + 5 : position + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no frame header in the sample JPEG")


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB pixels, with one tiny compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_valid_jpeg_and_png(jpeg, png):
    checked = check_image("key", jpeg, IngestConfig())
    checked_png = check_image("key", png, IngestConfig())

    assert (checked.width, checked.height, checked.format) == (1445, 1442, "jpg")
    assert checked.sha256 == hashlib.sha256(jpeg).hexdigest()
    assert len(checked.phash) == 16
    assert (checked_png.width, checked_png.height, checked_png.format) == (512, 512, "png")


def test_perceptual_hash_matches_imagehash(sample_members, elife_folder):
    images = [members["jpg"] for _, members in sample_members]
    images += [path.read_bytes() for path in sorted((elife_folder / "images").glob("*.jpg"))[:4]]

    for data in images:
        image = Image.open(io.BytesIO(data))
        reduced = image.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
        assert perceptual_hash(image) == str(imagehash.phash(reduced))


def test_truncated_images_are_corrupt(jpeg, png):
    for data in (jpeg, png):
        for cut in (len(data) // 4, len(data) // 2, len(data) - 2000):
            assert _reason(check_image, "key", data[:cut], IngestConfig()) == "corrupt_image"


def test_garbled_png_data_is_corrupt(png):
    garbled = bytearray(png)
    middle = len(png) // 2
    garbled[middle : middle + 64] = bytes(64)

    assert _reason(check_image, "key", bytes(garbled), IngestConfig()) == "corrupt_image"


def test_garbled_jpeg_header_is_corrupt(jpeg):
    garbled = bytearray(jpeg)
    garbled[20:600] = bytes(range(256)) * 2 + bytes(range(68))

    assert _reason(check_image, "key", bytes(garbled), IngestConfig()) == "corrupt_image"


def test_bytes_that_are_no_image(jpeg):
    assert _reason(check_image, "key", b"<html>not an image</html>", IngestConfig()) == "unreadable_image"
    assert _reason(check_image, "key", b"", IngestConfig()) == "missing_image"
    assert _reason(check_image, "key", None, IngestConfig()) == "missing_image"


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_huge_declared_size_rejected_without_decoding(jpeg, kind):
    data = _jpeg_declaring(jpeg, 50000, 50000) if kind == "jpeg" else _png_declaring(50000, 50000)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    with pytest.raises(Rejected) as rejected:
        check_image("bomb", data, IngestConfig())

    assert rejected.value.reason == "image_too_large"
    assert "bomb" in rejected.value.detail
    # Decoding would need 50000 * 50000 * 3 bytes (7.5 GB); the peak must not move by much.
    peak_after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_after_kib - peak_before_kib < 200 * 1024


def test_max_pixels_checked_before_decoding(png):
    settings = IngestConfig(max_pixels=512 * 512 - 1)
    truncated = png[: len(png) // 2]

    with pytest.raises(Rejected) as rejected:
        check_image("key", truncated, settings)

    assert rejected.value.reason == "image_too_large"
    assert "declares 512x512 pixels, more than max_pixels=262143" in rejected.value.detail


def test_small_image(png):
    assert _reason(check_image, "key", png, IngestConfig(min_side=513)) == "image_too_small"


def test_sixteen_bit_tiff_and_palette_png():
    gradient = (np.arange(256 * 256, dtype=np.uint32).reshape(256, 256) % 65536).astype(np.uint16)
    tiff = io.BytesIO()
    Image.fromarray(gradient).save(tiff, format="TIFF")
    palette = io.BytesIO()
    Image.fromarray((np.indices((128, 128)).sum(axis=0) % 256).astype(np.uint8)).convert("P").save(palette, format="PNG")

    checked_tiff = check_image("tiff", tiff.getvalue(), IngestConfig())
    checked_png = check_image("png", palette.getvalue(), IngestConfig())

    assert (checked_tiff.format, checked_tiff.width, checked_tiff.height) == ("tif", 256, 256)
    assert checked_tiff.phash not in ("0000000000000000", "ffffffffffffffff")
    assert checked_png.format == "png"


def _sample(caption: bytes | None, **fields) -> RawSample:
    return RawSample(key="k", source="s", source_kind="folder", caption=caption, has_metadata=False, **fields)


def test_caption_checks():
    settings = IngestConfig(min_caption_chars=10, max_caption_chars=40)

    assert _reason(decode_caption, _sample(None), settings) == "missing_caption"
    assert _reason(decode_caption, _sample(b""), settings) == "empty_caption"
    assert _reason(decode_caption, _sample(b" \n\t "), settings) == "empty_caption"
    assert _reason(decode_caption, _sample(b"caf\xe9 au lait and cells"), settings) == "caption_not_utf8"
    assert _reason(decode_caption, _sample(b"too short"), settings) == "caption_too_short"
    assert _reason(decode_caption, _sample(b"x" * 41), settings) == "caption_too_long"
    assert decode_caption(_sample("\ufeff  Cafe\u0301 cells, stained.  ".encode()), settings) == "Caf\u00e9 cells, stained."


def test_label_and_license_selection():
    settings = IngestConfig(licenses=["commercial", "CC BY-ND"])
    microscopy = {"image_primary_label": ["Plots and Charts", "microscopy"], "image_secondary_label": ["light microscopy"]}

    check_selection("k", microscopy, "CC BY", "commercial", settings)
    check_selection("k", microscopy, "CC BY-ND", "other", settings)
    assert _reason(check_selection, "k", {"image_primary_label": ["Plots and Charts"]}, "CC BY", "commercial", settings) == "label_not_selected"
    assert _reason(check_selection, "k", microscopy, "CC BY-NC", "noncommercial", settings) == "license_not_allowed"
    electron_only = IngestConfig(secondary_labels=["Electron Microscopy"])
    assert _reason(check_selection, "k", microscopy, "CC BY", "commercial", electron_only) == "label_not_selected"
    check_selection("k", {**microscopy, "image_secondary_label": ["electron microscopy"]}, "CC BY", "commercial", electron_only)
    check_selection("k", {"image_primary_label": ["Chart"]}, "CC BY", "commercial", IngestConfig(primary_labels=[]))


def test_build_figure_from_real_sample(sample_members):
    key, members = sample_members[0]
    metadata = json.loads(members["json"])
    sample = RawSample(key=key, source="shard.tar", source_kind="biomedica", image=members["jpg"], caption=members["txt"], metadata=metadata)

    figure, image = build_figure(sample, IngestConfig())

    assert image == members["jpg"]
    assert figure.figure_id == key
    assert figure.caption == members["txt"].decode().strip()
    assert figure.pmcid == "PMC3310724"
    assert figure.article_id == "PMC3310724"
    assert figure.license == "CC BY"
    assert figure.license_group == "commercial"
    assert figure.primary_labels == ["Microscopy", "Plots and Charts"]
    assert figure.secondary_labels == ["fluorescence microscopy"]
    assert figure.image_hash == metadata["image_hash"]
    assert figure.image_sha256 == hashlib.sha256(members["jpg"]).hexdigest()
    assert figure.panel_type == "multiple"
    # The `.jpg` members of the sample hold PNG bytes; the format comes from the bytes.
    assert (figure.width, figure.height, figure.image_format) == (512, 512, "png")
    assert (figure.source, figure.source_kind, figure.source_key) == ("shard.tar", "biomedica", key)


def test_build_figure_rejections(sample_members):
    key, members = sample_members[0]
    metadata = json.loads(members["json"])

    def build(changes):
        fields = {"key": key, "source": "s", "source_kind": "biomedica", "image": members["jpg"], "caption": members["txt"], "metadata": metadata}
        return build_figure(RawSample(**{**fields, **changes}), IngestConfig())

    assert _reason(build, {"metadata": None}) == "missing_metadata"
    assert _reason(build, {"error": "truncated_shard", "error_detail": "cut"}) == "truncated_shard"
    assert _reason(build, {"metadata": {**metadata, "image_primary_label": ["Chemical Structures"]}}) == "label_not_selected"
    # The caption is checked before the image is decoded.
    assert _reason(build, {"caption": b"", "image": b"broken"}) == "empty_caption"


def test_build_figure_cleans_undecodable_text(sample_members):
    _, members = sample_members[0]
    sample = RawSample(
        key="fig-\udcff",
        source="folder",
        source_kind="folder",
        image=members["jpg"],
        caption=b"A caption long enough to pass the check.",
        has_metadata=False,
        extra={"article_title": "Title \ud800"},
    )

    figure, _ = build_figure(sample, IngestConfig())

    assert figure.figure_id == "fig-\ufffd"
    assert figure.article_title == "Title ?"
