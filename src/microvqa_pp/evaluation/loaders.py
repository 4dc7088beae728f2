"""Readers of evaluation data sets, all normalised to `EvalQuestion` in the MicroVQA layout.

Accepted inputs (`DATASET` of `microvqa-pp eval`):

- a Hugging Face data set id such as `jmhb/microvqa`, loaded through `datasets`;
- a parquet file, or a folder of parquet files, in the MicroVQA layout (`images_list`,
  `question`, `choices`, 0-based `correct_index`, `task`, `task_str`). The project's test-split
  export has this layout too, and a run folder is searched under `export/`;
- parquet in the MicroVQA++ release schema (`image`, choices with `1) ` prefixes, 1-based
  `correct_index`), detected and normalised with a log line saying so;
- MicroVQA-format CSV, text only, with `choices` as a Python list literal.

Images are written once under the evaluation folder, named by the SHA-256 of their bytes. A
row that cannot be used (no question, fewer than two options, an index outside the options, an
image that does not decode) becomes a `Rejection` and the other rows go on.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from microvqa_pp.deps import require
from microvqa_pp.errors import SourceError
from microvqa_pp.evaluation.records import EvalQuestion
from microvqa_pp.records import TASK_NAMES, Rejection

logger = logging.getLogger(__name__)

STAGE = "eval"

BLOOMS_NAMES: dict[int, str] = {
    1: "Recall",
    2: "Comprehension",
    3: "Application",
    4: "Analysis",
    5: "Synthesis/Evaluation",
    6: "Create",
}
"""Bloom's taxonomy levels as MicroVQA labels them."""

_TASK_NAME_SEPARATORS = re.compile(r"[\s_-]+")


def _task_name_key(name: str) -> str:
    """Normalise a task name to lower case and single spaces, so "Expert_visual-understanding" matches."""
    return _TASK_NAME_SEPARATORS.sub(" ", name).strip().lower()


TASK_IDS = {_task_name_key(name): task for task, name in TASK_NAMES.items()}

ID_COLUMNS = ("key_question", "question_id", "mcq_id", "id", "image_name")
IMAGE_LIST_COLUMNS = ("images_list", "images")
SINGLE_IMAGE_COLUMNS = ("image",)
BLOOMS_COLUMNS = ("blooms_level", "bloom_level", "blooms", "blooms_name")

_OPTION_PREFIX = re.compile(r"^\s*(\d{1,2})\)\s")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedDataset:
    """The questions read from one DATASET, what was dropped, and how the input was read."""

    source: str
    layout: str
    """`microvqa`, `microvqa-pp-release` or `microvqa-csv`."""
    questions: list[EvalQuestion] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Normalisations applied, for the log and the report."""


def load_dataset(dataset: str, image_dir: Path, *, split: str | None = None) -> LoadedDataset:
    """Read DATASET (a path or a Hugging Face id) into normalised questions."""
    path = Path(dataset).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_csv(path)
    if path.is_file() and path.suffix.lower() == ".parquet":
        return load_tables(dataset, _read_parquet_files([path]), image_dir)
    if path.is_dir():
        return load_tables(dataset, _read_parquet_files(parquet_files_in(path)), image_dir)
    if path.exists():
        raise SourceError(f"cannot read {dataset}: expected a .parquet or .csv file, a folder of parquet files, or a Hugging Face data set id")
    if _HUB_ID.match(dataset):
        return load_tables(dataset, [hub_table(dataset, split)], image_dir)
    raise SourceError(
        f"data set {dataset!r} not found: it is neither an existing file or folder nor a Hugging Face "
        "id of the form OWNER/NAME (such as jmhb/microvqa)"
    )


def dataset_identity(dataset: str) -> str:
    """Return the absolute path of a local DATASET, or DATASET itself (a Hugging Face id)."""
    path = Path(dataset).expanduser()
    return str(path.resolve()) if path.exists() else dataset


# Sources ---------------------------------------------------------------------------------------


def parquet_files_in(folder: Path) -> list[Path]:
    """Return the parquet files of a folder; in a run folder, the MicroVQA-layout exports."""
    root = folder / "export" if (folder / "manifest.json").is_file() else folder
    files = sorted(
        path
        for path in root.rglob("*.parquet")
        if not any(part.startswith(".") or part.endswith(".parts") for part in path.relative_to(root).parts)
    )
    if root is not folder:
        files = [path for path in files if "images_list" in pq.read_schema(path).names]
        if not files:
            raise SourceError(
                f"run folder {folder} has no export in the MicroVQA layout: no parquet file with an "
                f"images_list column under {root}. Run `microvqa-pp export {folder}` first (it writes "
                "export/microvqa/test-*.parquet), or pass a parquet file, a CSV file or a Hugging Face id"
            )
        tests = [path for path in files if "test" in path.relative_to(root).as_posix().lower()]
        if tests:
            files = tests
        logger.info("run folder %s: evaluating the exported %s", folder, ", ".join(str(path.relative_to(folder)) for path in files))
    if not files:
        raise SourceError(f"no parquet files found in {root}; pass a parquet file, a CSV file or a Hugging Face id")
    return files


def _read_parquet_files(paths: list[Path]) -> list[pa.Table]:
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path))
        except (OSError, pa.ArrowInvalid) as error:
            raise SourceError(f"{path} is not a readable parquet file: {error}") from error
    return tables


def hub_table(dataset_id: str, split: str | None) -> pa.Table:
    """Load a Hugging Face data set through `datasets` and return it as an Arrow table.

    Images stay encoded (`{bytes, path}` structs) so they are stored byte for byte. Without a
    split, a data set with a single split uses it (MicroVQA has only `train`).
    """
    datasets = require("datasets", "report", "loading Hugging Face data sets")
    try:
        loaded = datasets.load_dataset(dataset_id, split=split)
    except (OSError, ValueError) as error:
        # OSError covers ConnectionError and the data-set-not-found errors of `datasets`.
        offline = _hub_offline()
        hint = (
            "the Hugging Face hub is switched off (HF_HUB_OFFLINE=1) and the data set is not in the local cache"
            if offline
            else "check the id, your network and, for a gated data set, your token (huggingface-cli login)"
        )
        raise SourceError(
            f"could not load the Hugging Face data set {dataset_id!r}: {error}. Cause: {hint}. "
            "Download it where the hub is reachable, or pass a local parquet file"
        ) from error

    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if len(names) != 1:
            raise SourceError(f"data set {dataset_id!r} has the splits {', '.join(names)}; choose one with --split")
        logger.info("%s: using its only split %r", dataset_id, names[0])
        loaded = loaded[names[0]]
    return loaded.with_format("arrow")[:]


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


# Tables in the MicroVQA and MicroVQA++ layouts -----------------------------------------------


def load_tables(source: str, tables: list[pa.Table], image_dir: Path) -> LoadedDataset:
    """Normalise parquet tables in the MicroVQA layout or the MicroVQA++ release schema."""
    names = tables[0].schema.names
    for column in ("question", "choices", "correct_index"):
        if column not in names:
            raise SourceError(
                f"{source} has no {column!r} column; expected the MicroVQA layout (images_list, question, "
                "choices, correct_index, task, task_str) or the MicroVQA++ release schema"
            )

    rows = [row for table in tables for row in _rows(table)]
    release = _has_release_prefixes(rows)
    result = LoadedDataset(source=source, layout="microvqa-pp-release" if release else "microvqa")
    if release:
        one_based = _index_is_one_based(rows)
        note = "MicroVQA++ release schema detected: stripped the 'N) ' prefixes from the choices"
        note += " and converted the 1-based correct_index to 0-based" if one_based else " (correct_index is already 0-based)"
        result.notes.append(note)
        logger.info("%s: %s", source, note)
    else:
        one_based = False

    seen: set[str] = set()
    for position, row in enumerate(rows):
        question_id = _question_id(row, position, seen)
        try:
            question = _question_from_row(row, question_id, release, one_based, image_dir)
        except _RowError as error:
            result.rejections.append(Rejection(STAGE, question_id, error.reason, error.detail, source))
            continue
        result.questions.append(question)
    _log_loaded(result)
    return result


def _rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    for batch in table.to_batches(max_chunksize=256):
        yield from batch.to_pylist()


class _RowError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _has_release_prefixes(rows: list[dict[str, Any]]) -> bool:
    """True when every option of every row starts with its own number, "1) ", "2) ", ..."""
    if not rows:
        return False
    for row in rows:
        choices = row.get("choices") or []
        for number, choice in enumerate(choices, start=1):
            match = _OPTION_PREFIX.match(str(choice))
            if match is None or int(match.group(1)) != number:
                return False
    return True


def _index_is_one_based(rows: list[dict[str, Any]]) -> bool:
    """Decide the index base of release rows: from `correct_answer` where present, else 1-based.

    The MicroVQA++ release numbers its options from 1 and its `correct_index` matches the prefix.
    """
    votes_one = votes_zero = 0
    for row in rows:
        answer, choices, index = row.get("correct_answer"), row.get("choices") or [], row.get("correct_index")
        if not isinstance(answer, str) or not isinstance(index, int):
            continue
        if 1 <= index <= len(choices) and choices[index - 1].strip() == answer.strip():
            votes_one += 1
        elif 0 <= index < len(choices) and choices[index].strip() == answer.strip():
            votes_zero += 1
    return votes_one >= votes_zero


def _question_id(row: dict[str, Any], position: int, seen: set[str]) -> str:
    value = next((row[column] for column in ID_COLUMNS if row.get(column) not in (None, "")), None)
    question_id = str(value) if value is not None else f"row-{position}"
    if question_id in seen:
        question_id = f"{question_id}#{position}"
    seen.add(question_id)
    return question_id


def _question_from_row(row: dict[str, Any], question_id: str, release: bool, one_based: bool, image_dir: Path) -> EvalQuestion:
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _RowError("missing_question", f"{question_id}: the question text is empty")

    choices = [str(choice) for choice in (row.get("choices") or [])]
    if release:
        choices = [_OPTION_PREFIX.sub("", choice, count=1) for choice in choices]
    correct_index = _correct_index(row.get("correct_index"), len(choices), one_based, question_id)

    task = _task(row.get("task"), row.get("task_str"))
    blooms_level, blooms_name = _blooms(row)
    images, digests = _store_images(_image_values(row), image_dir, question_id)
    return EvalQuestion(
        question_id=question_id,
        question=question,
        choices=choices,
        correct_index=correct_index,
        task=task,
        task_str=str(row.get("task_str") or TASK_NAMES.get(task or 0, "")),
        blooms_level=blooms_level,
        blooms_name=blooms_name,
        images=images,
        image_sha256=digests,
    )


def _correct_index(value: Any, option_count: int, one_based: bool, question_id: str) -> int:
    if option_count < 2:
        raise _RowError("too_few_choices", f"{question_id}: {option_count} option(s); a question needs at least 2")
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise _RowError("invalid_correct_index", f"{question_id}: correct_index {value!r} is not an integer") from None
    index -= 1 if one_based else 0
    if not 0 <= index < option_count:
        raise _RowError(
            "invalid_correct_index",
            f"{question_id}: correct_index {value!r} is outside the {option_count} options"
            + (" (read as 1-based)" if one_based else " (read as 0-based)"),
        )
    return index


def _task(task: Any, task_str: Any) -> int | None:
    if isinstance(task, (int, float)) and int(task) in TASK_NAMES:
        return int(task)
    if isinstance(task, str) and task.strip().isdigit() and int(task) in TASK_NAMES:
        return int(task)
    if isinstance(task_str, str):
        return TASK_IDS.get(_task_name_key(task_str))
    return None


def _blooms(row: dict[str, Any]) -> tuple[int | None, str]:
    """Read a Bloom's level from a number ("4"), a name ("Analysis") or both ("4 Analysis")."""
    for column in BLOOMS_COLUMNS:
        value = row.get(column)
        if value is None or value == "":
            continue
        text = str(value).strip()
        digits = re.search(r"\d", text)
        if digits and int(digits.group()) in BLOOMS_NAMES:
            level = int(digits.group())
            return level, BLOOMS_NAMES[level]
        for level, name in BLOOMS_NAMES.items():
            if name.lower().split("/")[0] in text.lower():
                return level, name
    return None, ""


def _image_values(row: dict[str, Any]) -> list[Any]:
    for column in IMAGE_LIST_COLUMNS:
        if column in row and row[column] is not None:
            return list(row[column])
    for column in SINGLE_IMAGE_COLUMNS:
        if column in row and row[column] is not None:
            return [row[column]]
    return []


def _store_images(values: Iterable[Any], image_dir: Path, question_id: str) -> tuple[list[str], list[str]]:
    """Write each image once as IMAGE_DIR/ab/SHA256.EXT and return the paths and digests."""
    from PIL import Image

    paths, digests = [], []
    for position, value in enumerate(values):
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data and isinstance(value, dict) and value.get("path") and Path(value["path"]).is_file():
            data = Path(value["path"]).read_bytes()
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise _RowError("missing_image", f"{question_id}: image {position} has no bytes")
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                extension = (image.format or "png").lower().replace("jpeg", "jpg")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise _RowError("invalid_image", f"{question_id}: image {position} does not decode: {error}") from None
        digest = hashlib.sha256(data).hexdigest()
        path = image_dir / digest[:2] / f"{digest}.{extension}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_bytes(bytes(data))
            temporary.replace(path)
        paths.append(str(path))
        digests.append(digest)
    return paths, digests


# MicroVQA-format CSV -----------------------------------------------------------------------


def load_csv(path: Path) -> LoadedDataset:
    """Read MicroVQA-format CSV: text only, `choices` a Python list literal, 0-based index.

    `choices` is read with `ast.literal_eval`, which accepts literals only and runs no code.
    The task comes from a `task` or `use_case` column when it contains 1, 2 or 3.
    """
    result = LoadedDataset(source=str(path), layout="microvqa-csv")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SourceError(f"cannot read the CSV file {path}: {error}") from error
    if rows and not {"question", "choices", "correct_index"} <= set(rows[0]):
        raise SourceError(f"{path} lacks a question, choices or correct_index column; found {', '.join(rows[0])}")

    seen: set[str] = set()
    for position, row in enumerate(rows):
        question_id = _question_id(row, position, seen)
        try:
            result.questions.append(_question_from_csv_row(row, question_id))
        except _RowError as error:
            result.rejections.append(Rejection(STAGE, question_id, error.reason, error.detail, str(path)))
    result.notes.append("MicroVQA-format CSV: text only, no images are sent")
    _log_loaded(result)
    return result


def _question_from_csv_row(row: dict[str, str], question_id: str) -> EvalQuestion:
    question = row.get("question") or ""
    if not question.strip():
        raise _RowError("missing_question", f"{question_id}: the question text is empty")
    try:
        choices = ast.literal_eval(row.get("choices") or "")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise _RowError("invalid_choices", f"{question_id}: choices is not a Python list literal: {error}") from None
    if not isinstance(choices, (list, tuple)) or not all(isinstance(choice, str) for choice in choices):
        raise _RowError("invalid_choices", f"{question_id}: choices must be a list of strings, got {type(choices).__name__}")
    correct_index = _correct_index(row.get("correct_index"), len(choices), False, question_id)
    task = _task(row.get("task") or row.get("use_case"), row.get("task_str"))
    blooms_level, blooms_name = _blooms(row)
    return EvalQuestion(
        question_id=question_id,
        question=question,
        choices=list(choices),
        correct_index=correct_index,
        task=task,
        task_str=row.get("task_str") or TASK_NAMES.get(task or 0, ""),
        blooms_level=blooms_level,
        blooms_name=blooms_name,
    )


def _log_loaded(result: LoadedDataset) -> None:
    logger.info(
        "%s: read %d questions (%s layout), rejected %d",
        result.source,
        len(result.questions),
        result.layout,
        len(result.rejections),
    )
    for rejection in result.rejections[:10]:
        logger.warning("rejected %s: %s", rejection.item_id, rejection.detail)
