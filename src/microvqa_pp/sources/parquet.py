"""Reader for figures in parquet files, including the MicroVQA++ release schema.

Columns are recognised by name (first present wins):

    key       `__key__`, `image_name` (its extension is dropped), `key`, `figure_id`, `id`;
              default: `FILE_STEM-row-N`
    image     `image` (a Hugging Face Image struct `{bytes, path}` or raw bytes), `jpg`, `png`
    caption   `image_caption`, `caption`, `txt`
    metadata  `json` (a BIOMEDICA json string or struct); otherwise any BIOMEDICA field that is
              a column of its own (`image_primary_label`, `article_license`, ...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pyarrow.parquet as pq

from microvqa_pp.errors import SourceError
from microvqa_pp.sources.base import RawSample

KIND = "parquet"
KEY_COLUMNS = ("__key__", "image_name", "key", "figure_id", "id")
IMAGE_COLUMNS = ("image", "jpg", "png")
CAPTION_COLUMNS = ("image_caption", "caption", "txt")
BIOMEDICA_FIELDS = (
    "image_hash",
    "image_primary_label",
    "image_secondary_label",
    "image_panel_type",
    "image_panel_subtype",
    "image_size",
    "article_accession_id",
    "article_title",
    "article_license",
)


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        if candidate in names:
            return candidate
    return None


def row_group_sizes(path: Path) -> list[int]:
    """Return the number of rows in each row group of a parquet file."""
    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError) as error:
        raise SourceError(f"{path} is not a readable parquet file: {error}") from error
    return [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)]


def read_file(path: Path, source: str) -> Iterator[RawSample]:
    """Yield the figures of every row group of a parquet file, in order."""
    for row_group in range(len(row_group_sizes(path))):
        yield from read_row_group(path, row_group, source)


def read_row_group(path: Path, row_group: int, source: str) -> Iterator[RawSample]:
    """Yield the figures in one row group of a parquet file (the group is read whole)."""
    try:
        parquet_file = pq.ParquetFile(path)
    except (OSError, ValueError) as error:
        raise SourceError(f"{source} is not a readable parquet file: {error}") from error
    names = parquet_file.schema_arrow.names
    key_column = _pick(names, KEY_COLUMNS)
    image_column = _pick(names, IMAGE_COLUMNS)
    caption_column = _pick(names, CAPTION_COLUMNS)
    if image_column is None:
        raise SourceError(f"{source} has no image column (expected one of {', '.join(IMAGE_COLUMNS)})")
    has_json = "json" in names
    metadata_columns = [name for name in BIOMEDICA_FIELDS if name in names]
    columns = [name for name in (key_column, image_column, caption_column) if name]
    columns += metadata_columns + (["json"] if has_json else [])
    table = parquet_file.read_row_group(row_group, columns=sorted(set(columns)))

    offset = sum(parquet_file.metadata.row_group(index).num_rows for index in range(row_group))
    for position, row in enumerate(table.to_pylist()):
        yield _sample_from_row(row, offset + position, source, key_column, image_column, caption_column, has_json, metadata_columns)


def _sample_from_row(
    row: dict[str, Any],
    row_number: int,
    source: str,
    key_column: str | None,
    image_column: str,
    caption_column: str | None,
    has_json: bool,
    metadata_columns: list[str],
) -> RawSample:
    raw_key = row.get(key_column) if key_column else None
    key = str(raw_key) if raw_key else f"{Path(urlparse(source).path).stem}-row-{row_number}"
    if key_column == "image_name":
        key = Path(key).stem if "." in Path(key).name else key
    sample = RawSample(key=key, source=source, source_kind=KIND)

    image = row.get(image_column)
    if isinstance(image, dict):
        image = image.get("bytes")
    sample.image = image if isinstance(image, bytes) and image else None
    if sample.image is None:
        sample.error = "missing_image"
        sample.error_detail = f"row {row_number} ({key}) of {source} has no image bytes"

    caption = row.get(caption_column) if caption_column else None
    sample.caption = caption.encode("utf-8") if isinstance(caption, str) else caption

    metadata: dict[str, Any] | None = None
    if has_json and row.get("json") is not None:
        raw = row["json"]
        try:
            metadata = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
        except (ValueError, TypeError) as error:
            sample.error = sample.error or "invalid_metadata"
            sample.error_detail = sample.error_detail or f"row {row_number} ({key}): invalid json: {error}"
    elif metadata_columns:
        metadata = {name: row[name] for name in metadata_columns if row.get(name) is not None}
    sample.metadata = metadata
    sample.has_metadata = metadata is not None
    return sample
