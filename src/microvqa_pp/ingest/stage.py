"""Stage `ingest`: read sources, validate and select figures, store images, de-duplicate.

Work units: one per tar shard, one per `ingest.chunk_size` lines of a figure folder's JSONL,
one per row group of a local parquet file, and one per remote parquet file (downloaded into
`RUN/cache/downloads/` while its unit runs, and deleted afterwards). Units run in any order and
on any worker. `finish` then de-duplicates the stream in source order, so the output does not
depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa

from microvqa_pp.errors import SourceError
from microvqa_pp.ingest.dedup import NearDuplicateIndex
from microvqa_pp.ingest.images import store_image
from microvqa_pp.ingest.validate import Rejected, build_figure
from microvqa_pp.records import Figure, Rejection
from microvqa_pp.run.stage import ChunkedStage, UnitResult, WorkUnit
from microvqa_pp.sources import SourceLocation, biomedica, folder, parquet
from microvqa_pp.sources.base import RawSample, clean_text
from microvqa_pp.sources.remote import download, is_url

logger = logging.getLogger(__name__)


class IngestStage(ChunkedStage):
    """Turn the run's sources into validated, de-duplicated Figure records."""

    name = "ingest"
    config_sections = ("ingest",)
    record_type = Figure

    def __init__(self, run, config, sources: list[SourceLocation] | None = None):
        super().__init__(run, config)
        if sources is None:
            stored = run.read_manifest().get("sources") or []
            sources = [SourceLocation(**item) for item in stored]
        if not sources:
            raise SourceError(f"{run.root} has no sources; pass SOURCE arguments to `ingest` or `build`")
        self.sources = sources

    def fingerprint_inputs(self) -> dict[str, Any]:
        return {"sources": [(source.kind, source.location) for source in self.sources]}

    def stop_after(self) -> int | None:
        return self.config.limit

    # Work units ------------------------------------------------------------------------------

    def plan(self) -> list[WorkUnit]:
        units: list[WorkUnit] = []
        for source_index, source in enumerate(self.sources):
            prefix = f"{source_index:05d}"
            if source.kind == "biomedica":
                units.append(WorkUnit(f"{prefix}-00000", ("biomedica", source.location, _local_size(source.location))))
            elif source.kind == "folder":
                units.extend(self._folder_units(prefix, source.location))
            elif source.kind == "parquet":
                units.extend(self._parquet_units(prefix, source.location))
            else:
                raise SourceError(f"unknown source kind {source.kind!r} for {source.location}")
        return units

    def _folder_units(self, prefix: str, location: str) -> list[WorkUnit]:
        captions_file = folder.find_captions_file(Path(location))
        chunks = folder.chunk_captions_file(captions_file, self.config.ingest.chunk_size)
        return [WorkUnit(f"{prefix}-{index:05d}", ("folder", location, chunk), chunk.count) for index, chunk in enumerate(chunks)]

    def _parquet_units(self, prefix: str, location: str) -> list[WorkUnit]:
        if is_url(location):
            # The file is fetched by its unit, so planning needs no download.
            return [WorkUnit(f"{prefix}-00000", ("remote_parquet", location))]
        try:
            sizes = parquet.row_group_sizes(Path(location))
        except SourceError as error:
            return [WorkUnit(f"{prefix}-00000", ("unreadable_file", location, str(error)), 1)]
        return [
            WorkUnit(f"{prefix}-{group:05d}", ("parquet", location, group, _local_size(location)), rows)
            for group, rows in enumerate(sizes)
        ]

    def _samples(self, unit: WorkUnit) -> Iterator[RawSample]:
        kind = unit.payload[0]
        if kind == "biomedica":
            yield from biomedica.read_shard(unit.payload[1])
        elif kind == "folder":
            _, location, chunk = unit.payload
            yield from folder.read_folder(location, chunk)
        elif kind == "parquet":
            _, location, group, _ = unit.payload
            yield from _parquet_samples(location, lambda: parquet.read_row_group(Path(location), group, location))
        elif kind == "remote_parquet":
            location = unit.payload[1]
            logger.info("ingest: downloading %s", location)
            local = download(location, self.run.cache_dir / "downloads")
            try:
                yield from _parquet_samples(location, lambda: parquet.read_file(local, location))
            finally:
                local.unlink(missing_ok=True)
        elif kind == "unreadable_file":
            _, location, detail = unit.payload
            yield RawSample(key=location, source=location, source_kind="parquet", error="unreadable_file", error_detail=detail)
        else:
            raise ValueError(f"unknown ingest work unit kind {kind!r}")

    # Per unit ------------------------------------------------------------------------------

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        result = UnitResult()
        settings = self.config.ingest
        image_bytes = 0
        for sample in self._samples(unit):
            try:
                figure, image = build_figure(sample, settings)
            except Rejected as rejection:
                result.rejections.append(
                    Rejection(
                        self.name,
                        clean_text(sample.key),
                        rejection.reason,
                        clean_text(rejection.detail),
                        clean_text(sample.source),
                    )
                )
                logger.debug("ingest: rejected %s (%s): %s", sample.key, rejection.reason, rejection.detail)
            else:
                figure.image_path = store_image(self.run, figure.image_sha256, figure.image_format, image)
                image_bytes += len(image)
                result.records.append(figure)
            progress(1)
        result.counters = {
            "samples_read": len(result.records) + len(result.rejections),
            "figures_valid": len(result.records),
            "image_bytes": image_bytes,
        }
        return result

    # Whole stream --------------------------------------------------------------------------

    def finish(self, tables: Iterator[pa.Table], rejections: list[Rejection]) -> Iterator[pa.Table]:
        """Drop repeated ids and exact duplicate images; link (or drop) near-duplicates."""
        deduplicator = _Deduplicator(self.config.ingest, self.name)
        for table in tables:
            yield deduplicator.apply(table, rejections)


class _Deduplicator:
    """The state of de-duplication over the stream of part tables, in order."""

    def __init__(self, settings, stage_name: str):
        self.settings = settings
        self.stage_name = stage_name
        self.seen_ids: set[str] = set()
        self.first_by_hash: dict[int, str] = {}
        """The first kept figure id for each image hash (see `_hash_key`)."""
        self.near_index = NearDuplicateIndex(settings.near_duplicate_distance)

    def apply(self, table: pa.Table, rejections: list[Rejection]) -> pa.Table:
        """Return the table without the duplicates, with `near_duplicate_of` filled in."""
        keep: list[bool] = []
        near_links: list[str] = []
        columns = table.select(["figure_id", "image_sha256", "image_hash", "phash", "source"]).to_pylist()
        for row in columns:
            figure_id = row["figure_id"]
            reason, detail, near = self._check(row)
            if reason:
                rejections.append(Rejection(self.stage_name, figure_id, reason, detail, row["source"]))
                keep.append(False)
                near_links.append("")
                continue

            self.seen_ids.add(figure_id)
            self.first_by_hash.setdefault(_hash_key(row["image_sha256"]), figure_id)
            self.first_by_hash.setdefault(_hash_key(row["image_hash"]), figure_id)
            if near is None:
                self.near_index.add(row["phash"], figure_id)
            keep.append(True)
            near_links.append(near or "")

        column_index = table.schema.get_field_index("near_duplicate_of")
        table = table.set_column(column_index, "near_duplicate_of", pa.array(near_links, pa.string()))
        return table.filter(pa.array(keep, pa.bool_()))

    def _check(self, row: dict[str, str]) -> tuple[str, str, str | None]:
        """Return (reason, detail, near-duplicate id); the reason is empty when the row is kept."""
        figure_id = row["figure_id"]
        if figure_id in self.seen_ids:
            return "duplicate_id", f"figure id {figure_id} appears twice; kept the first", None
        if self.settings.deduplicate:
            original = self.first_by_hash.get(_hash_key(row["image_sha256"])) or self.first_by_hash.get(
                _hash_key(row["image_hash"])
            )
            if original is not None:
                return "duplicate_image", f"same image as {original}", None
        near = self.near_index.find(row["phash"])
        if near is not None and self.settings.drop_near_duplicates:
            distance = self.settings.near_duplicate_distance
            return "near_duplicate", f"perceptual hash within {distance} bits of {near}", near
        return "", "", near


def _hash_key(image_hash: str) -> int:
    """Return the first 64 bits of a hex digest (or of the BLAKE2b digest of any other text).

    An int takes a third of the memory of the 64-character string. Two different images share a
    key with probability about n^2 / 2^65 among n figures (2e-7 for 2.5 million).
    """
    try:
        return int(image_hash[:16], 16)
    except ValueError:
        return int.from_bytes(hashlib.blake2b(image_hash.encode(), digest_size=8).digest(), "big")


def _parquet_samples(location: str, read: Callable[[], Iterator[RawSample]]) -> Iterator[RawSample]:
    """Yield a parquet reader's samples; a file that cannot be read becomes one rejected sample."""
    try:
        yield from read()
    except SourceError as error:
        yield RawSample(key=location, source=location, source_kind="parquet", error="unreadable_file", error_detail=str(error))


def _local_size(location: str) -> int | None:
    """Return a local file's size, so that a replaced file invalidates the parts of its old plan."""
    if is_url(location):
        return None
    try:
        return Path(location).stat().st_size
    except OSError:
        return None
