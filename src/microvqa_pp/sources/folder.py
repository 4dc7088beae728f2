"""Reader for a folder of images with a JSONL file of captions (the eLife layout).

Each JSONL line describes one figure. Recognised fields (first present wins):

    id            `id`, `figure_id`, `key`; default: the image file's stem
    image         `image`, `image_path`, `file_name`, `path` (relative to the folder)
    caption       `caption`, `text`
    licence       `license`, `licence`
    article       `doi`, `article_id`, `pmcid`; `title`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from microvqa_pp.errors import SourceError
from microvqa_pp.sources.base import RawSample

KIND = "folder"
ID_FIELDS = ("id", "figure_id", "key")
IMAGE_FIELDS = ("image", "image_path", "file_name", "path")
CAPTION_FIELDS = ("caption", "text")


def find_captions_file(folder: Path) -> Path:
    """Return the folder's single JSONL file of captions."""
    candidates = sorted(folder.glob("*.jsonl"))
    if not candidates:
        raise SourceError(f"{folder} holds no *.jsonl file of captions, so it is not a figure folder")
    if len(candidates) > 1:
        preferred = [path for path in candidates if path.name in ("figures.jsonl", "captions.jsonl")]
        if len(preferred) != 1:
            names = ", ".join(path.name for path in candidates)
            raise SourceError(f"{folder} holds several JSONL files ({names}); name it figures.jsonl")
        return preferred[0]
    return candidates[0]


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def _first(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    return None


def read_folder(location: str, start: int = 0, stop: int | None = None) -> Iterator[RawSample]:
    """Yield the figures described by non-empty JSONL lines `start` to `stop` (0-based, end exclusive)."""
    folder = Path(location)
    captions_file = find_captions_file(folder)
    index = -1
    with open(captions_file, "rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            if not raw_line.strip():
                continue
            index += 1
            if index < start:
                continue
            if stop is not None and index >= stop:
                break
            yield _sample_from_line(folder, captions_file, line_number, raw_line)


def _sample_from_line(folder: Path, captions_file: Path, line_number: int, raw_line: bytes) -> RawSample:
    place = f"{captions_file}:{line_number}"
    try:
        row = json.loads(raw_line)
        if not isinstance(row, dict):
            raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    except (ValueError, UnicodeDecodeError) as error:
        return RawSample(
            key=place,
            source=str(folder),
            source_kind=KIND,
            error="invalid_metadata",
            error_detail=f"line {line_number} of {captions_file} is not a JSON object: {error}",
        )

    image_name = _first(row, IMAGE_FIELDS)
    key = _first(row, ID_FIELDS) or (Path(image_name).stem if image_name else place)
    sample = RawSample(key=str(key), source=str(folder), source_kind=KIND, has_metadata=False)
    caption = _first(row, CAPTION_FIELDS)
    sample.caption = caption.encode("utf-8") if isinstance(caption, str) else None
    sample.extra = {
        "license": str(row.get("license") or row.get("licence") or ""),
        "doi": str(row.get("doi") or ""),
        "article_id": str(row.get("article_id") or row.get("doi") or row.get("pmcid") or ""),
        "pmcid": str(row.get("pmcid") or ""),
        "article_title": str(row.get("title") or row.get("article_title") or ""),
    }
    if image_name is None:
        sample.error = "missing_image"
        sample.error_detail = f"{place} names no image (expected one of {', '.join(IMAGE_FIELDS)})"
        return sample
    image_path = (folder / str(image_name)).resolve()
    if folder.resolve() not in image_path.parents:
        sample.error = "missing_image"
        sample.error_detail = f"{place}: image path {image_name!r} points outside {folder}"
        return sample
    try:
        sample.image = image_path.read_bytes()
    except OSError as error:
        sample.error = "missing_image"
        sample.error_detail = f"{place}: cannot read image {image_name}: {error.strerror}"
    return sample
