"""Validation and selection of one raw sample: returns a Figure or a rejection reason.

Rejection reasons (the `reason` column of `stages/ingest.rejected.parquet`):

    unreadable_shard, truncated_shard, invalid_metadata   the reader could not read the sample
    missing_metadata      a BIOMEDICA sample without its json
    missing_caption, empty_caption, caption_not_utf8, caption_too_short, caption_too_long
    label_not_selected    no selected primary (or secondary) label, e.g. not microscopy
    license_not_allowed   the licence is outside the configured groups or values
    missing_image, unreadable_image, corrupt_image, image_too_small, image_too_large
    duplicate_image, near_duplicate   (set later, when the whole stream is de-duplicated)
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any

import imagehash
from PIL import Image, ImageFile

from microvqa_pp.config import IngestConfig
from microvqa_pp.records import Figure
from microvqa_pp.sources.base import RawSample, license_group, license_group_from_key, pmcid_from_key

# Pillow's own decompression-bomb check raises or warns at its own limit; `max_pixels` replaces it
# with a rejection that names the image.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

PHASH_INPUT_SIDE = 64
"""Images are reduced to this size before the perceptual hash (which works on 32 x 32 anyway)."""


class Rejected(Exception):
    """A sample that fails validation or selection; `reason` is a short snake_case name."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class CheckedImage:
    """The facts of a decoded image that a Figure records."""

    sha256: str
    phash: str
    width: int
    height: int
    format: str


def decode_caption(sample: RawSample, settings: IngestConfig) -> str:
    """Return the caption as normalised text, or raise Rejected."""
    if sample.caption is None:
        raise Rejected("missing_caption", f"{sample.key} has no caption")
    try:
        text = sample.caption.decode("utf-8") if isinstance(sample.caption, bytes) else str(sample.caption)
    except UnicodeDecodeError as error:
        raise Rejected("caption_not_utf8", f"caption of {sample.key} is not valid UTF-8: {error}") from error
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise Rejected("empty_caption", f"caption of {sample.key} is empty")
    if len(text) < settings.min_caption_chars:
        raise Rejected(
            "caption_too_short",
            f"caption of {sample.key} has {len(text)} characters, fewer than min_caption_chars={settings.min_caption_chars}",
        )
    if len(text) > settings.max_caption_chars:
        raise Rejected(
            "caption_too_long",
            f"caption of {sample.key} has {len(text)} characters, more than max_caption_chars={settings.max_caption_chars}",
        )
    return text


def check_image(key: str, data: bytes | None, settings: IngestConfig) -> CheckedImage:
    """Decode the whole image to prove it is intact, and compute its hashes; raise Rejected if not."""
    if not data:
        raise Rejected("missing_image", f"{key} has no image")
    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise Rejected("unreadable_image", f"image of {key} cannot be opened: {error}") from error

    width, height = image.size
    if width * height > settings.max_pixels:
        raise Rejected(
            "image_too_large",
            f"image of {key} declares {width}x{height} pixels, more than max_pixels={settings.max_pixels}",
        )
    if min(width, height) < settings.min_side:
        raise Rejected(
            "image_too_small",
            f"image of {key} is {width}x{height}, a side is below min_side={settings.min_side}",
        )

    image_format = (image.format or "unknown").lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as error:
        raise Rejected("corrupt_image", f"image of {key} fails to decode: {error}") from error

    reduced = image.convert("L") if image.mode not in ("L", "RGB") else image
    reduced = reduced.resize((PHASH_INPUT_SIDE, PHASH_INPUT_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return CheckedImage(
        sha256=hashlib.sha256(data).hexdigest(),
        phash=str(imagehash.phash(reduced)),
        width=width,
        height=height,
        format="jpg" if image_format == "jpeg" else image_format,
    )


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def check_selection(key: str, metadata: dict[str, Any], license_text: str, group: str, settings: IngestConfig) -> None:
    """Raise Rejected unless the figure's labels and licence are selected."""
    primary = _as_list(metadata.get("image_primary_label"))
    secondary = _as_list(metadata.get("image_secondary_label"))
    if settings.primary_labels and not set(primary) & set(settings.primary_labels):
        raise Rejected(
            "label_not_selected",
            f"{key} has primary labels {primary}, none of {settings.primary_labels}",
        )
    if settings.secondary_labels and not set(secondary) & set(settings.secondary_labels):
        raise Rejected(
            "label_not_selected",
            f"{key} has secondary labels {secondary}, none of {settings.secondary_labels}",
        )
    if group not in settings.licenses and license_text not in settings.licenses:
        raise Rejected(
            "license_not_allowed",
            f"{key} has licence {license_text!r} (group {group}), not in licenses={settings.licenses}",
        )


def build_figure(sample: RawSample, settings: IngestConfig) -> tuple[Figure, bytes]:
    """Validate and select one sample; return the Figure and its image bytes, or raise Rejected."""
    if sample.error:
        raise Rejected(sample.error, sample.error_detail or f"{sample.key}: {sample.error}")
    if sample.has_metadata and sample.metadata is None:
        raise Rejected("missing_metadata", f"{sample.key} has no json metadata")
    metadata = sample.metadata or {}
    extra = sample.extra

    caption = decode_caption(sample, settings)
    license_text = str(metadata.get("article_license") or extra.get("license") or "")
    group = license_group_from_key(sample.key) or license_group(license_text)
    if sample.has_metadata:
        check_selection(sample.key, metadata, license_text, group, settings)
    elif group not in settings.licenses and license_text not in settings.licenses:
        raise Rejected("license_not_allowed", f"{sample.key} has licence {license_text!r}, not in licenses={settings.licenses}")

    image = check_image(sample.key, sample.image, settings)
    pmcid = str(metadata.get("article_accession_id") or "") or pmcid_from_key(sample.key) or str(extra.get("pmcid", ""))
    figure = Figure(
        figure_id=sample.key,
        caption=caption,
        image_path="",
        image_sha256=image.sha256,
        image_hash=str(metadata.get("image_hash") or "") or image.sha256,
        phash=image.phash,
        width=image.width,
        height=image.height,
        image_format=image.format,
        article_id=pmcid or str(extra.get("article_id", "")) or sample.key,
        pmcid=pmcid,
        license=license_text,
        license_group=group,
        primary_labels=_as_list(metadata.get("image_primary_label")),
        secondary_labels=_as_list(metadata.get("image_secondary_label")),
        panel_type=str(metadata.get("image_panel_type") or ""),
        panel_subtype=str(metadata.get("image_panel_subtype") or ""),
        article_title=str(metadata.get("article_title") or extra.get("article_title", "")),
        doi=str(extra.get("doi", "")),
        source=sample.source,
        source_kind=sample.source_kind,
        source_key=sample.key,
    )
    return figure, sample.image or b""
