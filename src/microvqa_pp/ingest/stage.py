"""Stage `ingest`: read sources, validate and select figures, store images, de-duplicate."""

from __future__ import annotations

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
from microvqa_pp.sources.base import RawSample
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

    def plan(self) -> list[WorkUnit]:
        units: list[WorkUnit] = []
        chunk = self.config.ingest.chunk_size
        for source_index, source in enumerate(self.sources):
            prefix = f"{source_index:05d}"
            if source.kind == "biomedica":
                units.append(WorkUnit(f"{prefix}-00000", ("biomedica", source.location)))
            elif source.kind == "folder":
                total = folder.count_lines(folder.find_captions_file(Path(source.location)))
                for part, start in enumerate(range(0, total, chunk)):
                    stop = min(start + chunk, total)
                    units.append(WorkUnit(f"{prefix}-{part:05d}", ("folder", source.location, start, stop), stop - start))
            elif source.kind == "parquet":
                local = self._local_copy(source.location)
                for group, rows in enumerate(parquet.row_group_sizes(local)):
                    units.append(WorkUnit(f"{prefix}-{group:05d}", ("parquet", str(local), group, source.location), rows))
            else:
                raise SourceError(f"unknown source kind {source.kind!r} for {source.location}")
        return units

    def _local_copy(self, location: str) -> Path:
        if not is_url(location):
            return Path(location)
        logger.info("ingest: downloading %s", location)
        return download(location, self.run.cache_dir / "downloads")

    def _samples(self, unit: WorkUnit) -> Iterator[RawSample]:
        kind = unit.payload[0]
        if kind == "biomedica":
            yield from biomedica.read_shard(unit.payload[1])
        elif kind == "folder":
            _, location, start, stop = unit.payload
            yield from folder.read_folder(location, start, stop)
        else:
            _, local, group, original = unit.payload
            yield from parquet.read_row_group(Path(local), group, original)

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        result = UnitResult()
        settings = self.config.ingest
        for sample in self._samples(unit):
            try:
                figure, image_bytes = build_figure(sample, settings)
            except Rejected as rejection:
                result.rejections.append(
                    Rejection(self.name, sample.key, rejection.reason, rejection.detail, sample.source)
                )
                logger.debug("ingest: rejected %s: %s", sample.key, rejection.detail)
            else:
                figure.image_path = store_image(self.run, figure.image_sha256, figure.image_format, image_bytes)
                result.records.append(figure)
            progress(1)
        result.counters["samples_read"] = len(result.records) + len(result.rejections)
        return result

    def finish(self, tables: Iterator[pa.Table], rejections: list[Rejection]) -> Iterator[pa.Table]:
        """Drop repeated ids and exact duplicate images; link (or drop) near-duplicates."""
        settings = self.config.ingest
        seen_ids: set[str] = set()
        first_by_hash: dict[str, str] = {}
        near_index = NearDuplicateIndex(settings.near_duplicate_distance)
        for table in tables:
            keep: list[bool] = []
            near_links: list[str] = []
            columns = table.select(["figure_id", "image_hash", "phash", "source"]).to_pylist()
            for row in columns:
                figure_id = row["figure_id"]
                if figure_id in seen_ids:
                    rejections.append(Rejection(self.name, figure_id, "duplicate_id", f"figure id {figure_id} appears twice; kept the first", row["source"]))
                    keep.append(False)
                    near_links.append("")
                    continue
                original = first_by_hash.get(row["image_hash"]) if settings.deduplicate else None
                if original is not None:
                    rejections.append(Rejection(self.name, figure_id, "duplicate_image", f"same image hash as {original}", row["source"]))
                    keep.append(False)
                    near_links.append("")
                    continue
                near = near_index.find(row["phash"])
                if near is not None and settings.drop_near_duplicates:
                    rejections.append(Rejection(self.name, figure_id, "near_duplicate", f"perceptual hash within {settings.near_duplicate_distance} bits of {near}", row["source"]))
                    keep.append(False)
                    near_links.append("")
                    continue
                seen_ids.add(figure_id)
                first_by_hash.setdefault(row["image_hash"], figure_id)
                if near is None:
                    near_index.add(row["phash"], figure_id)
                keep.append(True)
                near_links.append(near or "")
            column_index = table.schema.get_field_index("near_duplicate_of")
            table = table.set_column(column_index, "near_duplicate_of", pa.array(near_links, pa.string()))
            yield table.filter(pa.array(keep, pa.bool_()))
