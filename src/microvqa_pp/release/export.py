"""Stage `export`: the release files and the data-set card under `RUN/export/`.

    export/README.md                              data-set card with the Hugging Face YAML header
    export/data/{split}-00000-of-00001.parquet    MicroVQA++ release schema plus provenance
    export/microvqa/{split}-00000-of-00001.parquet  MicroVQA evaluation layout (test by default)
    export/chat/{split}.jsonl                     conversations for LLaMA-Factory and ms-swift
    export/chat/dataset_info.json                 LLaMA-Factory's description of the chat files
    export/chat/images/NAME                       the images that the chat files name

A split without questions gets no files. The files hold no timestamps or absolute paths, so the same run inputs give byte-identical
files. The folder is written beside the run's `export/` and swapped in when complete, so a
killed export never leaves a mix of old and new files (and single files need no atomic writes).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from microvqa_pp.records import MCQ, ExportedQuestion, Figure, FilterDecision, Rejection, SplitAssignment
from microvqa_pp.release import card, formats
from microvqa_pp.release.split import SPLITS
from microvqa_pp.run.executor import Executor
from microvqa_pp.run.stage import Stage, StageResult, iter_batches, read_records

logger = logging.getLogger(__name__)

CHAT_IMAGES = "chat/images"


def release_file(split: str) -> str:
    return f"data/{split}-00000-of-00001.parquet"


def microvqa_file(split: str) -> str:
    return f"microvqa/{split}-00000-of-00001.parquet"


def chat_file(split: str) -> str:
    return f"chat/{split}.jsonl"


@dataclass
class ParquetFacts:
    """Size facts of one written parquet file, for the card's `dataset_info`."""

    path: str
    rows: int
    num_bytes: int
    """Size of the rows in memory as Arrow, as `datasets` reports `num_bytes`."""
    file_bytes: int


@dataclass
class ExportSummary:
    """Facts about the written files and their questions, for the data-set card."""

    items: dict[str, list[formats.ReleaseItem]]
    release: dict[str, ParquetFacts] = field(default_factory=dict)
    microvqa: dict[str, ParquetFacts] = field(default_factory=dict)
    chat_images: int = 0


def write_parquet_split(
    path: Path,
    schema: pa.Schema,
    items: list[formats.ReleaseItem],
    build_row: Callable[[formats.ReleaseItem, bytes], dict[str, Any]],
    read_image: Callable[[formats.ReleaseItem], bytes],
    row_group_size: int,
) -> tuple[int, int]:
    """Write the rows of `items` in row groups of `row_group_size`; return (rows, Arrow bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    num_bytes = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer, tqdm(total=len(items), desc=f"export {path.parent.name}/{path.name}", unit="row", leave=False) as bar:
        for batch in iter_batches(items, row_group_size):
            table = pa.Table.from_pylist([build_row(item, read_image(item)) for item in batch], schema=schema)
            writer.write_table(table)
            rows += table.num_rows
            num_bytes += table.nbytes
            bar.update(table.num_rows)
    return rows, num_bytes


class ExportStage(Stage):
    """Write the release parquet, the MicroVQA layout, the chat files and the card."""

    name = "export"
    requires = ("ingest", "mcq", "split")
    config_sections = ("export",)
    record_type = ExportedQuestion

    def execute(self, executor: Executor) -> StageResult:
        items, rejections = self._collect()
        staging = self.run.root / ".export.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)

        summary = ExportSummary(items=items)
        self._write_parquet(staging, summary)
        self._write_chat(staging, summary)
        manifest = self.run.read_manifest()
        (staging / "README.md").write_text(card.render_card(summary, manifest, self.config), encoding="utf-8")
        _swap_in(staging, self.run.export_dir)

        records = []
        for split in SPLITS:
            for item in items[split]:
                files = [release_file(split)]
                if split in self.config.export.microvqa_splits:
                    files.append(microvqa_file(split))
                files += [chat_file(split), f"{CHAT_IMAGES}/{item.image_name}"]
                records.append(ExportedQuestion(item.mcq.mcq_id, item.figure.figure_id, split, item.image_name, files))
        self.write_output(records)
        self.write_rejections(rejections)
        logger.info(
            "export: %s in %s",
            ", ".join(f"{len(items[split])} {split}" for split in SPLITS),
            self.run.export_dir,
        )
        return StageResult(
            count=len(records),
            rejected=dict(Counter(rejection.reason for rejection in rejections)),
            stats={split: len(items[split]) for split in SPLITS} | {"images": summary.chat_images},
        )

    def _collect(self) -> tuple[dict[str, list[formats.ReleaseItem]], list[Rejection]]:
        """Join each split assignment with its MCQ, figure and filter decision, in split-file order."""
        assignments = read_records(self.run.stage_output("split"), SplitAssignment)
        mcqs = {mcq.mcq_id: mcq for mcq in read_records(self.run.stage_output("mcq"), MCQ)}
        figures = {figure.figure_id: figure for figure in read_records(self.run.stage_output("ingest"), Figure)}
        filter_path = self.run.stage_output("filter")
        decisions = {}
        if filter_path.exists():
            decisions = {decision.qa_id: decision for decision in read_records(filter_path, FilterDecision)}
        template_flags = self._template_flags()

        names = _image_names([figures[a.figure_id] for a in assignments if a.figure_id in figures])
        items: dict[str, list[formats.ReleaseItem]] = {split: [] for split in SPLITS}
        rejections: list[Rejection] = []
        for assignment in assignments:
            mcq = mcqs.get(assignment.mcq_id)
            figure = figures.get(assignment.figure_id)
            if mcq is None or figure is None:
                missing = "MCQ" if mcq is None else f"figure {assignment.figure_id}"
                rejections.append(Rejection(self.name, assignment.mcq_id, "missing_input", f"{missing} not found in the run's stage outputs"))
                continue
            if not (self.run.root / figure.image_path).is_file():
                rejections.append(Rejection(self.name, assignment.mcq_id, "missing_image", f"image file {figure.image_path} of {figure.figure_id} is missing"))
                continue
            if not 0 <= mcq.correct_index < len(mcq.choices):
                rejections.append(Rejection(self.name, mcq.mcq_id, "invalid_correct_index", f"correct_index {mcq.correct_index} outside {len(mcq.choices)} choices"))
                continue
            item = formats.ReleaseItem(mcq, figure, assignment, decisions.get(mcq.qa_id), names[figure.figure_id], template_flags.get(mcq.qa_id))
            items[assignment.split].append(item)
        return items, rejections

    def _template_flags(self) -> dict[str, bool]:
        path = self.run.stage_output("generate")
        if not path.exists():
            return {}
        table = pq.read_table(path, columns=["qa_id", "template_generated"])
        return dict(zip(table.column("qa_id").to_pylist(), table.column("template_generated").to_pylist()))

    def _read_image(self, item: formats.ReleaseItem) -> bytes:
        return (self.run.root / item.figure.image_path).read_bytes()

    def _write_parquet(self, staging: Path, summary: ExportSummary) -> None:
        settings = self.config.export
        release_schema = formats.hf_schema(formats.RELEASE_FEATURES)
        microvqa_schema = formats.hf_schema(formats.MICROVQA_FEATURES)
        for split in SPLITS:
            items = summary.items[split]
            if not items:
                # `datasets` cannot load a split file without rows, so an empty split has no files.
                continue
            path = staging / release_file(split)
            rows, num_bytes = write_parquet_split(path, release_schema, items, formats.release_row, self._read_image, settings.row_group_size)
            summary.release[split] = ParquetFacts(release_file(split), rows, num_bytes, path.stat().st_size)
            if split in settings.microvqa_splits:
                path = staging / microvqa_file(split)
                rows, num_bytes = write_parquet_split(path, microvqa_schema, items, formats.microvqa_row, self._read_image, settings.row_group_size)
                summary.microvqa[split] = ParquetFacts(microvqa_file(split), rows, num_bytes, path.stat().st_size)

    def _write_chat(self, staging: Path, summary: ExportSummary) -> None:
        images_dir = staging / CHAT_IMAGES
        images_dir.mkdir(parents=True)
        copied: set[str] = set()
        info: dict[str, Any] = {}
        for split in SPLITS:
            if not summary.items[split]:
                continue
            lines = []
            for item in tqdm(summary.items[split], desc=f"export chat/{split}", unit="row", leave=False):
                relative = f"images/{item.image_name}"
                if item.image_name not in copied:
                    shutil.copyfile(self.run.root / item.figure.image_path, images_dir / item.image_name)
                    copied.add(item.image_name)
                lines.append(json.dumps(formats.chat_record(item, relative), ensure_ascii=False))
            (staging / chat_file(split)).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            info[f"microvqa_pp_{split}"] = {
                "file_name": Path(chat_file(split)).name,
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "images": "images"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
            }
        (staging / "chat/dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        summary.chat_images = len(copied)


def _image_names(figures: list[Figure]) -> dict[str, str]:
    """Give each figure a unique image file name; clashing names get a hash suffix."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for figure in figures:
        if figure.figure_id in names:
            continue
        name = formats.image_name(figure)
        if name in taken:
            stem, _, extension = name.rpartition(".")
            name = f"{stem}-{figure.image_sha256[:12]}.{extension}"
        names[figure.figure_id] = name
        taken.add(name)
    return names


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` with the finished `staging` folder."""
    previous = target.with_name(f".{target.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
