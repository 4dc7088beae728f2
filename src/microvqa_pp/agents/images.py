"""Images for chat requests: shrunk to a maximum side and encoded as base64 data URIs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

PASSTHROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
"""Formats that every OpenAI-compatible server decodes; other formats are re-encoded as JPEG."""

JPEG_QUALITY = 90


class ImageEncodeError(ValueError):
    """An image file that cannot be read or decoded."""


def encode_image(path: Path, max_side: int) -> str:
    """Return the image as a `data:` URI whose longer side is at most `max_side` pixels.

    An image that fits and is JPEG, PNG or WebP is sent byte for byte. Any other image is
    decoded, shrunk with Lanczos resampling and re-encoded as JPEG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageEncodeError(f"cannot read image {path}: {error}") from error

    try:
        with Image.open(io.BytesIO(data)) as image:
            mime = PASSTHROUGH_FORMATS.get(image.format or "")
            if mime is not None and max(image.size) <= max_side:
                return _data_uri(mime, data)

            # For JPEG, draft() decodes at a power-of-two reduced scale, far faster for large scans.
            image.draft("RGB", (max_side, max_side))
            image.load()
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageEncodeError(f"cannot decode image {path}: {error}") from error
    return _data_uri("image/jpeg", buffer.getvalue())


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
