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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from microvqa_pp.errors import SourceError
from microvqa_pp.sources.base import RawSample, clean_text

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


@dataclass(frozen=True)
class FolderChunk:
    """A run of JSONL lines: bytes `start` to `stop` of the file, holding `count` figures."""

    start: int
    stop: int
    count: int
    first_line: int


def count_lines(path: Path) -> int:
    """Return the number of non-empty lines of a JSONL file."""
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def chunk_captions_file(path: Path, chunk_size: int) -> list[FolderChunk]:
    """Split a JSONL file into runs of `chunk_size` non-empty lines, by byte offset (one pass)."""
    chunks: list[FolderChunk] = []
    start = position = count = 0
    first_line = 1
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if count == 0:
                start, first_line = position, line_number
            position += len(line)
            if not line.strip():
                continue
            count += 1
            if count == chunk_size:
                chunks.append(FolderChunk(start, position, count, first_line))
                count = 0
    if count:
        chunks.append(FolderChunk(start, position, count, first_line))
    return chunks


def _first(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    return None


def read_folder(location: str, chunk: FolderChunk | None = None) -> Iterator[RawSample]:
    """Yield the figures described by the non-empty JSONL lines of `chunk` (default: all)."""
    folder = Path(location)
    captions_file = find_captions_file(folder)
    with open(captions_file, "rb") as handle:
        line_number = 1
        if chunk is not None:
            handle.seek(chunk.start)
            line_number = chunk.first_line
        position = handle.tell()
        for raw_line in handle:
            if chunk is not None and position >= chunk.stop:
                break
            position += len(raw_line)
            if raw_line.strip():
                yield _sample_from_line(folder, captions_file, line_number, raw_line)
            line_number += 1


def _parse_line(raw_line: bytes) -> Any:
    """Parse a JSONL line; bytes that are not UTF-8 survive as surrogate escapes in strings."""
    try:
        text = raw_line.decode("utf-8")
    except UnicodeDecodeError:
        text = raw_line.decode("utf-8", "surrogateescape")
    return json.loads(text)


def _caption_bytes(caption: str) -> bytes:
    """Return the caption's original bytes, so that validation can reject one that is not UTF-8."""
    try:
        return caption.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A lone surrogate written as a JSON escape such as \ud800: keep it, invalid as it is.
        return caption.encode("utf-8", "surrogatepass")


def _sample_from_line(folder: Path, captions_file: Path, line_number: int, raw_line: bytes) -> RawSample:
    place = f"{captions_file.name}:{line_number}"
    try:
        row = _parse_line(raw_line)
        if not isinstance(row, dict):
            raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    except ValueError as error:
        return RawSample(
            key=f"{folder.name}/{place}",
            source=str(folder),
            source_kind=KIND,
            error="invalid_metadata",
            error_detail=f"line {line_number} of {captions_file} is not a JSON object: {error}",
        )

    image_name = _first(row, IMAGE_FIELDS)
    key = _first(row, ID_FIELDS) or (Path(str(image_name)).stem if image_name else f"{folder.name}/{place}")
    sample = RawSample(key=clean_text(str(key)), source=str(folder), source_kind=KIND, has_metadata=False)
    caption = _first(row, CAPTION_FIELDS)
    sample.caption = _caption_bytes(caption) if isinstance(caption, str) else None
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

    # The image must lie inside the folder (checked on the path as written, so that symbolic
    # links inside the folder may point anywhere).
    relative = os.path.normpath(str(image_name))
    if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
        sample.error = "missing_image"
        sample.error_detail = f"{place}: image path {image_name!r} points outside {folder}"
        return sample
    try:
        sample.image = (folder / relative).read_bytes()
    except OSError as error:
        sample.error = "missing_image"
        sample.error_detail = f"{place}: cannot read image {image_name}: {error.strerror}"
    return sample
