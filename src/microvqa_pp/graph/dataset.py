"""Import a VQA data set that a user brings, so the filter can clean data sets made elsewhere.

`filter --input DATASET --out RUN` accepts:

- a parquet file in the MicroVQA++ release schema: `image_name`, `image` (`{bytes, path}`),
  `question`, `correct_answer` (or `choices` with a 1-based `correct_index`), `image_caption`
  and optionally `task_str`. The QA is the question with its correct answer, without the
  option number that the release puts in front of it (`2) `).
- a JSONL file with one QA per line: `image` (a path relative to the file, also read from
  `image_path`), `caption`, `question`, `answer`, and optionally `task_str` or `task`.

Rows that show the same image with the same caption share one figure. `import_dataset` writes the
outputs of the `ingest`, `generate` and `score` stages into the run folder and marks those stages
done: the figures, one QA per input row with its row number as `qa_id`, and their signals. The
`filter` stage then runs as on any run. A row whose image or caption is unusable becomes a figure
rejection in `stages/ingest.rejected.parquet` whose `source` is the row's image name; the filter
reports that row as dropped with the rejection's reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from microvqa_pp.config import Config, IngestConfig
from microvqa_pp.errors import MicroVQAError
from microvqa_pp.graph.bench import ScoreFunction
from microvqa_pp.graph.inputs import EMBEDDINGS_STAGE
from microvqa_pp.ingest.images import store_image
from microvqa_pp.ingest.validate import Rejected, build_figure
from microvqa_pp.records import QA, TASK_NAMES, Embedding, Figure, QASignals, Rejection, to_table
from microvqa_pp.run.rundir import RunDir, _now
from microvqa_pp.run.stage import write_parquet
from microvqa_pp.sources.base import RawSample

logger = logging.getLogger(__name__)

_CHOICE_PREFIX = re.compile(r"^\s*(\d{1,2})\)\s+")
"""The release format's option number, "2) Allopurinol"."""
_TASK_IDS = {name.lower(): task for task, name in TASK_NAMES.items()}

# A user's data set is taken as it is: no label or licence selection, any caption length.
IMPORT_SETTINGS = IngestConfig(primary_labels=[], secondary_labels=[], min_caption_chars=1, deduplicate=False)


@dataclass
class InputRow:
    """One QA of the user's data set, with its image as bytes and the image name to report."""

    row: int
    image_name: str
    image: bytes | None
    caption: str | None
    question: str
    answer: str
    task_str: str
    error: str = ""
    error_detail: str = ""


def _numbered(choices: Any) -> bool:
    """True when every choice starts with its own number, "1) ", "2) ", ... (the release format)."""
    if not isinstance(choices, (list, tuple)) or not choices:
        return False
    for number, choice in enumerate(choices, start=1):
        match = _CHOICE_PREFIX.match(str(choice))
        if match is None or int(match.group(1)) != number:
            return False
    return True


def _row_answer(row: dict[str, Any]) -> str:
    """Return the correct answer's text: `correct_answer`, else the choice at the 1-based `correct_index`.

    The option number is removed only when every choice of the row carries its own, so an answer
    such as "2.4 μg/mL" or "3:1 ratio" in an unnumbered data set stays whole.
    """
    choices, index = row.get("choices"), row.get("correct_index")
    numbered = _numbered(choices)
    answer = str(row.get("correct_answer") or "")
    if not answer and isinstance(choices, (list, tuple)) and isinstance(index, int) and 1 <= index <= len(choices):
        answer = str(choices[index - 1])
    return _CHOICE_PREFIX.sub("", answer, count=1) if numbered else answer


def read_parquet_rows(path: Path) -> Iterator[InputRow]:
    """Yield the QAs of a MicroVQA++-schema parquet file."""
    try:
        parquet_file = pq.ParquetFile(path)
    except (OSError, ValueError) as error:
        raise MicroVQAError(f"{path} is not a readable parquet file: {error}") from error
    names = parquet_file.schema_arrow.names
    missing = [name for name in ("image_name", "image", "question", "image_caption") if name not in names]
    if missing:
        raise MicroVQAError(
            f"{path} lacks the MicroVQA++ columns {', '.join(missing)}; expected image_name, image, question, "
            "correct_answer (or choices and correct_index) and image_caption"
        )
    number = 0
    for batch in parquet_file.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            image = row.get("image")
            image_bytes = image.get("bytes") if isinstance(image, dict) else image
            yield InputRow(
                row=number,
                image_name=str(row.get("image_name") or f"row-{number}"),
                image=image_bytes if isinstance(image_bytes, bytes) and image_bytes else None,
                caption=row.get("image_caption"),
                question=str(row.get("question") or ""),
                answer=_row_answer(row),
                task_str=str(row.get("task_str") or ""),
            )
            number += 1


def read_jsonl_rows(path: Path) -> Iterator[InputRow]:
    """Yield the QAs of a JSONL file of image path, caption, question and answer."""
    folder = path.parent.resolve()
    number = 0
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            entry = InputRow(number, f"line-{line_number}", None, None, "", "", "")
            number += 1
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except (ValueError, UnicodeDecodeError) as error:
                entry.error, entry.error_detail = "invalid_row", f"line {line_number} of {path} is not a JSON object: {error}"
                yield entry
                continue
            image_name = row.get("image") or row.get("image_path")
            entry.caption = row.get("caption")
            entry.question = str(row.get("question") or "")
            entry.answer = str(row.get("answer") or "")
            task = row.get("task_str") or row.get("task") or ""
            entry.task_str = TASK_NAMES.get(task, "") if isinstance(task, int) else str(task)
            if not image_name:
                entry.error, entry.error_detail = "missing_image", f"line {line_number} of {path} names no image"
                yield entry
                continue
            entry.image_name = str(image_name)
            image_path = (folder / entry.image_name).resolve()
            try:
                entry.image = image_path.read_bytes()
            except OSError as error:
                entry.error, entry.error_detail = "missing_image", f"line {line_number}: cannot read image {image_name}: {error.strerror}"
            yield entry


def read_rows(path: Path) -> tuple[str, list[InputRow]]:
    """Return (source kind, rows) of a data set, chosen by the file's extension."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "vqa-parquet", list(read_parquet_rows(path))
    if suffix in (".jsonl", ".json"):
        return "vqa-jsonl", list(read_jsonl_rows(path))
    raise MicroVQAError(f"{path}: unknown data set format {suffix!r}; give a MicroVQA++ .parquet file or a .jsonl file")


def _task(task_str: str) -> tuple[int, str]:
    task = _TASK_IDS.get(task_str.strip().lower(), 0)
    return task, TASK_NAMES.get(task, task_str)


def dataset_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def import_dataset(path: Path, run: RunDir, config: Config, score_function: ScoreFunction) -> dict[str, int]:
    """Write a user's data set into the run as the done stages `ingest`, `generate` and `score`.

    Skips the work when the run already contains this file's import with the same signal settings.
    Returns counts: rows, figures, rejected figures.
    """
    fingerprint = hashlib.sha256(
        json.dumps([dataset_fingerprint(path), config.section_fingerprint("signals")]).encode()
    ).hexdigest()[:16]
    if run.stage_entry("score").get("fingerprint") == fingerprint and run.stage_output("score").exists():
        logger.info("filter: %s is already imported into %s", path, run.root)
        entry = run.stage_entry("generate")
        return {"rows": int(entry.get("count", 0))}

    kind, rows = read_rows(path)
    figures, qas, rejections = _figures_and_qas(rows, kind, path, run)
    logger.info("filter: read %d QAs of %d figures from %s (%d figures unusable)", len(qas), len(figures), path, len(rejections))
    placed_ids = {figure.figure_id for figure in figures}
    scorable = [qa for qa in qas if qa.figure_id in placed_ids and qa.question.strip() and qa.answer.strip()]
    signals, embeddings = score_function(figures, scorable) if scorable else ([], [])

    outputs: list[tuple[str, list[Any], type]] = [
        ("ingest", figures, Figure),
        ("generate", qas, QA),
        ("score", signals, QASignals),
        (EMBEDDINGS_STAGE, embeddings, Embedding),
    ]
    for name, records, record_type in outputs:
        write_parquet(run.stage_output(name), to_table(records, record_type))
    write_parquet(run.stage_rejected("ingest"), to_table(rejections, Rejection))
    rejected: dict[str, int] = {}
    for rejection in rejections:
        rejected[rejection.reason] = rejected.get(rejection.reason, 0) + 1
    for name, records, _ in outputs[:3]:
        run.set_stage(
            name,
            state="done",
            count=len(records),
            rejected=rejected if name == "ingest" else {},
            fingerprint=fingerprint,
            output=run.relative(run.stage_output(name)),
            finished_at=_now(),
            imported_from=str(path),
        )
    run.add_note("filter_input", f"QAs imported from {path} by `filter --input`; the QA is the question with its correct answer")
    return {"rows": len(qas), "figures": len(figures), "rejected_figures": len(rejections)}


def _figures_and_qas(rows: list[InputRow], kind: str, path: Path, run: RunDir) -> tuple[list[Figure], list[QA], list[Rejection]]:
    """Group rows into figures (validated and stored like ingested ones) and QAs."""
    figures: list[Figure] = []
    rejections: list[Rejection] = []
    figure_of: dict[tuple[str, str | None], str] = {}
    used_ids: set[str] = set()
    qas: list[QA] = []
    for entry in rows:
        key = (entry.image_name, entry.caption)
        if key not in figure_of:
            figure_id = _unique_id(Path(entry.image_name).stem or f"row-{entry.row}", used_ids)
            figure_of[key] = figure_id
            figure, rejection = _figure(entry, figure_id, kind, path, run)
            if figure is not None:
                figures.append(figure)
            else:
                rejections.append(rejection)
        figure_id = figure_of[key]
        task, task_str = _task(entry.task_str)
        caption = entry.caption or ""
        start = caption.find(entry.answer) if entry.answer else -1
        qas.append(
            QA(
                qa_id=str(entry.row),
                figure_id=figure_id,
                question=entry.question,
                answer=entry.answer,
                answer_span=entry.answer,
                span_start=start,
                span_end=start + len(entry.answer) if start >= 0 else -1,
                support_sentence="",
                task=task,
                task_str=task_str,
                generator=f"input:{path.name}",
                template_generated=False,
                prompt_version="",
            )
        )
    return figures, qas, rejections


def _unique_id(base: str, used: set[str]) -> str:
    candidate, number = base, 1
    while candidate in used:
        number += 1
        candidate = f"{base}~{number}"
    used.add(candidate)
    return candidate


def _figure(entry: InputRow, figure_id: str, kind: str, path: Path, run: RunDir) -> tuple[Figure | None, Rejection | None]:
    """Validate one row's image and caption as ingest does; return the Figure or the rejection."""
    if entry.error:
        return None, Rejection("ingest", figure_id, entry.error, entry.error_detail, entry.image_name)
    sample = RawSample(
        key=figure_id,
        source=str(path),
        source_kind=kind,
        image=entry.image,
        caption=entry.caption.encode("utf-8") if isinstance(entry.caption, str) else None,
        has_metadata=False,
    )
    try:
        figure, image_bytes = build_figure(sample, IMPORT_SETTINGS)
    except Rejected as rejection:
        return None, Rejection("ingest", figure_id, rejection.reason, rejection.detail, entry.image_name)
    figure.source_key = entry.image_name
    figure.image_path = store_image(run, figure.image_sha256, figure.image_format, image_bytes)
    return figure, None


def signals_function(run: RunDir, config: Config) -> ScoreFunction:
    """Return the signals package's `score_qas`, bound to this run's settings, cache and agent."""
    try:
        from microvqa_pp.signals import score_qas
    except ImportError as error:
        raise MicroVQAError(
            f"computing signals needs microvqa_pp.signals.score_qas, which this version lacks ({error})"
        ) from error

    agent = None
    if config.signals.judge:
        from microvqa_pp.agents import make_agent

        agent = make_agent(config.agent, run, seed=config.seed)

    def score(figures: list[Figure], qas: list[QA]) -> tuple[list[QASignals], list[Embedding]]:
        # The same embedding cache as the `score` stage, and images stored in the run folder.
        return score_qas(figures, qas, config.signals, run.cache_dir / "embeddings", agent=agent, image_root=run.root)

    return score


ScoreFactory = Callable[[RunDir, Config], ScoreFunction]
