"""Validation and selection of one raw sample: returns a Figure or a rejection reason.

Rejection reasons (the `reason` column of `stages/ingest.rejected.parquet`):

    unreadable_shard, unreadable_file   a tar shard or parquet file that cannot be read at all
    truncated_shard       the shard ends early; the samples before the damage are kept
    unreadable_member     a corrupt tar header; the member it described is lost
    member_too_large      a tar member too large to be a figure file
    invalid_metadata      the json (or JSONL line) is not a JSON object
    missing_metadata      a BIOMEDICA sample without its json
    missing_caption, empty_caption, caption_not_utf8, caption_too_short, caption_too_long
    label_not_selected    no selected primary (or secondary) label, e.g. not microscopy
    license_not_allowed   the licence is outside the configured groups or values
    missing_image         no image member, column or file, or an empty one
    unreadable_image      bytes that are not an image format Pillow knows
    corrupt_image         an image file that fails to decode (truncated, garbled)
    image_too_small, image_too_large   outside min_side or max_pixels (checked before decoding)
    duplicate_id, duplicate_image, near_duplicate   (set when the stream is de-duplicated)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from microvqa_pp.config import IngestConfig
from microvqa_pp.records import Figure
from microvqa_pp.sources.base import RawSample, clean_text, license_group, license_group_from_key, pmcid_from_key

HASH_REDUCE_SIDE = 64
"""Images are first shrunk to this side with a cheap filter, then to 32 x 32 for the hash."""
HASH_SIDE = 32
HASH_BITS_SIDE = 8
_DCT_ROWS = np.cos(np.pi / (2 * HASH_SIDE) * np.outer(np.arange(HASH_BITS_SIDE), 2 * np.arange(HASH_SIDE) + 1))
"""The lowest 8 rows of the 32-point DCT-II matrix (scipy's unnormalised `dct`, up to a factor 2)."""

IMAGE_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",
)
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""16-bit and 32-bit grayscale modes, common in microscopy TIFFs."""
FORMAT_EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg", "tiff": "tif"}


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
    text = unicodedata.normalize("NFC", text.removeprefix("\ufeff")).strip()
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
    """Decode the whole image to prove it is intact, and compute its hashes; raise Rejected if not.

    The declared size is checked before any pixel is decoded, so a decompression bomb (a small
    file that declares a huge image) is rejected without allocating its pixels.
    """
    if data is None:
        raise Rejected("missing_image", f"{key} has no image")
    if not data:
        raise Rejected("missing_image", f"the image of {key} is empty (0 bytes)")
    image = _open_image(key, data)

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
    if image_format == "jpeg":
        # Decode at the smallest DCT scale that keeps HASH_REDUCE_SIDE pixels, in grayscale:
        # libjpeg still entropy-decodes every block, so truncated or broken data fails here
        # as in a full decode, and only the inverse DCT and colour conversion get cheaper.
        image.draft("L", (HASH_REDUCE_SIDE, HASH_REDUCE_SIDE))
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise Rejected("corrupt_image", f"image of {key} fails to decode: {error}") from error
    # NOTE: libjpeg repairs some garbled entropy-coded data with only a warning, which Pillow
    # does not pass on, so such a JPEG decodes (with visible damage) and is kept.

    return CheckedImage(
        sha256=hashlib.sha256(data).hexdigest(),
        phash=perceptual_hash(image),
        width=width,
        height=height,
        format=FORMAT_EXTENSIONS.get(image_format, image_format),
    )


def _open_image(key: str, data: bytes) -> Image.Image:
    """Open an image lazily (header only), turning every failure into a rejection."""
    with warnings.catch_warnings():
        # `max_pixels` is checked by the caller; Pillow's own warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            # NOTE: Pillow refuses images above 2 * Image.MAX_IMAGE_PIXELS (about 179 M pixels
            # by default) at open, so a larger `max_pixels` needs that limit raised too.
            raise Rejected("image_too_large", f"image of {key}: {error}") from error
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            if data.startswith(IMAGE_SIGNATURES) or data[8:12] == b"WEBP":
                raise Rejected("corrupt_image", f"image of {key} has a broken header: {error}") from error
            raise Rejected(
                "unreadable_image",
                f"image of {key} is not in an image format Pillow reads (first bytes {data[:8]!r})",
            ) from error


def perceptual_hash(image: Image.Image) -> str:
    """Return the 64-bit DCT perceptual hash of an image as 16 hex digits.

    The algorithm and bit order are those of `imagehash.phash` (grayscale, 32 x 32, the 8 x 8
    lowest DCT frequencies compared with their median), computed with one small matrix product.
    """
    small = image
    if small.mode in ("1", "P", "PA"):
        small = small.convert("RGBA" if "transparency" in small.info or small.mode == "PA" else "L")
    elif small.mode in HIGH_DEPTH_MODES:
        small = _grayscale(small)  # Pillow resizes these modes with nearest-neighbour only
    small = small.resize((HASH_REDUCE_SIDE, HASH_REDUCE_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    gray = _grayscale(small).resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    frequencies = _DCT_ROWS @ pixels @ _DCT_ROWS.T
    bits = (frequencies > np.median(frequencies)).flatten()  # row by row, the first bit highest
    return np.packbits(bits).tobytes().hex()


def _grayscale(image: Image.Image) -> Image.Image:
    """Convert to 8-bit grayscale; 16-bit and float images are scaled from their own range."""
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    return image.convert("L")


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _folded(values: list[str]) -> set[str]:
    return {value.strip().casefold() for value in values}


def check_selection(key: str, metadata: dict[str, Any], license_text: str, group: str, settings: IngestConfig) -> None:
    """Raise Rejected unless the figure's labels and licence are selected (labels ignore case)."""
    primary = _as_list(metadata.get("image_primary_label"))
    secondary = _as_list(metadata.get("image_secondary_label"))
    if settings.primary_labels and not _folded(primary) & _folded(settings.primary_labels):
        raise Rejected(
            "label_not_selected",
            f"{key} has primary labels {primary}, none of {settings.primary_labels}",
        )
    if settings.secondary_labels and not _folded(secondary) & _folded(settings.secondary_labels):
        raise Rejected(
            "label_not_selected",
            f"{key} has secondary labels {secondary}, none of {settings.secondary_labels}",
        )
    check_license(key, license_text, group, settings)


def check_license(key: str, license_text: str, group: str, settings: IngestConfig) -> None:
    """Raise Rejected unless the licence group or the exact licence text is allowed."""
    if group not in settings.licenses and license_text not in settings.licenses:
        raise Rejected(
            "license_not_allowed",
            f"{key} has licence {license_text!r} (group {group}), not in licenses={settings.licenses}",
        )


def build_figure(sample: RawSample, settings: IngestConfig) -> tuple[Figure, bytes]:
    """Validate and select one sample; return the Figure and its image bytes, or raise Rejected.

    The cheap checks (metadata, caption, labels, licence) run before the image is decoded.
    """
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
    else:
        check_license(sample.key, license_text, group, settings)

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
    return _clean_strings(figure), sample.image or b""


def _clean_strings(figure: Figure) -> Figure:
    """Make every text field storable in parquet (metadata may hold lone surrogates)."""
    for record_field in dataclasses.fields(figure):
        value = getattr(figure, record_field.name)
        if isinstance(value, str):
            setattr(figure, record_field.name, clean_text(value))
        elif isinstance(value, list):
            setattr(figure, record_field.name, [clean_text(item) for item in value])
    return figure
