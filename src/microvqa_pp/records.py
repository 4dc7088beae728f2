"""Typed records, one per stage output, and their Arrow schemas.

Each record is a dataclass whose field names are the column names in the stage's parquet file and
in the exports. `arrow_schema` derives the parquet schema from the type hints, so a field added
here appears in the output without further changes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import pyarrow as pa

TASK_NAMES: dict[int, str] = {
    1: "Expert Visual Understanding",
    2: "Hypothesis Generation",
    3: "Experimental Proposal",
}
"""MicroVQA task ids and their `task_str` names."""

R = TypeVar("R")

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
}


def _arrow_type(hint: Any) -> tuple[pa.DataType, bool]:
    """Map a type hint to (Arrow type, nullable)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions map to Arrow, not {hint}")
        arrow_type, _ = _arrow_type(args[0])
        return arrow_type, True
    if origin is list:
        (item,) = typing.get_args(hint)
        item_type, _ = _arrow_type(item)
        return pa.list_(item_type), False
    if origin is dict:
        key, value = typing.get_args(hint)
        key_type, _ = _arrow_type(key)
        value_type, _ = _arrow_type(value)
        return pa.map_(key_type, value_type), False
    if hint in _SCALARS:
        return _SCALARS[hint], False
    raise TypeError(f"no Arrow type for {hint!r}")


@cache
def arrow_schema(record_type: type) -> pa.Schema:
    """Return the Arrow schema of a record dataclass, one column per field in field order."""
    hints = typing.get_type_hints(record_type)
    columns = []
    for record_field in dataclasses.fields(record_type):
        arrow_type, nullable = _arrow_type(hints[record_field.name])
        columns.append(pa.field(record_field.name, arrow_type, nullable=nullable))
    return pa.schema(columns)


def to_table(records: list[Any], record_type: type) -> pa.Table:
    """Convert records of one dataclass type to an Arrow table with the derived schema."""
    rows = [dataclasses.asdict(record) for record in records]
    schema = arrow_schema(record_type)
    for row in rows:
        for name, value in row.items():
            if isinstance(value, dict):
                row[name] = list(value.items())
    return pa.Table.from_pylist(rows, schema=schema)


def from_table(table: pa.Table, record_type: type[R]) -> list[R]:
    """Convert an Arrow table back to records; columns the record does not define are ignored."""
    names = {record_field.name for record_field in dataclasses.fields(record_type)}
    hints = typing.get_type_hints(record_type)
    map_columns = {name for name in names if typing.get_origin(hints[name]) is dict}
    records = []
    for row in table.to_pylist():
        values = {name: value for name, value in row.items() if name in names}
        for name in map_columns & values.keys():
            if values[name] is not None:
                values[name] = dict(values[name])
        records.append(record_type(**values))
    return records


@dataclass
class Rejection:
    """An input item that a stage did not pass on, with the reason."""

    stage: str
    item_id: str
    reason: str
    detail: str = ""
    source: str = ""


@dataclass
class Figure:
    """A validated figure with its caption: the output of the `ingest` stage.

    `figure_id` is the BIOMEDICA sample key (`{filelist batch}-{PMCID}-{position}-{file stem}`) or
    the source's own id. The image file is stored once in the run folder under `image_path`,
    addressed by the SHA-256 of its bytes.
    """

    figure_id: str
    caption: str
    image_path: str
    image_sha256: str
    image_hash: str
    phash: str
    width: int
    height: int
    image_format: str
    article_id: str
    pmcid: str
    license: str
    license_group: str
    primary_labels: list[str] = field(default_factory=list)
    secondary_labels: list[str] = field(default_factory=list)
    panel_type: str = ""
    panel_subtype: str = ""
    article_title: str = ""
    doi: str = ""
    source: str = ""
    source_kind: str = ""
    source_key: str = ""
    near_duplicate_of: str = ""


@dataclass
class QA:
    """A caption-grounded question-answer pair: the output of the `generate` stage.

    `answer_span` is copied from the caption, and `span_start`/`span_end` are its character
    offsets in `Figure.caption` (end exclusive). `task` is the MicroVQA task id (see TASK_NAMES).
    """

    qa_id: str
    figure_id: str
    question: str
    answer: str
    answer_span: str
    span_start: int
    span_end: int
    support_sentence: str
    task: int
    task_str: str
    generator: str
    template_generated: bool
    prompt_version: str
    answer_kind: str = "other"
    """What the answer is: a kind of `generate.spans.SPAN_KINDS` ("stain", "organism",
    "concentration", ...) or "other". Multiple-choice distractors come from answers of the same
    kind in other captions."""
    panel: str = ""
    """The panel label of the supporting sentence as written in the caption ("B", "C and D"), or
    empty when the sentence has no label of its own."""


@dataclass
class QASignals:
    """Consistency evidence for one QA: the output of the `score` stage.

    A signal whose model is not configured (CLIP or NLI in the offline profile) is None, and the
    run manifest's notes say so. `hypothesis` is the QA restated as a declarative statement, the
    text that NLI and CLIP compare with the caption and the image.
    """

    qa_id: str
    figure_id: str
    hypothesis: str
    text_similarity: float | None = None
    """Cosine similarity of the caption and the hypothesis under the sentence embedder."""
    lexical_overlap: float | None = None
    """Share of the hypothesis' content words that occur in the caption (0 to 1)."""
    span_found: bool = False
    """Whether the answer span occurs in the caption after normalisation."""
    nli_entailment: float | None = None
    nli_neutral: float | None = None
    nli_contradiction: float | None = None
    nli_window: int | None = None
    """Index of the caption window that gave the highest entailment."""
    clip_image_caption: float | None = None
    clip_image_qa: float | None = None
    judge_score: float | None = None
    """The agent judge's consistency rating, 0 to 1."""
    judge_reason: str = ""


@dataclass
class Embedding:
    """One cached embedding: `kind` is `image`, `caption` or `qa`; `item_id` a figure or QA id."""

    kind: str
    item_id: str
    model: str
    vector: list[float]


@dataclass
class FilterDecision:
    """The HiCQA-Graph verdict on one QA: the output of the `filter` stage.

    `score` is the fused consistency score (higher is more consistent); `reason` says why a QA
    was dropped (empty when kept). For `filter --input`, `image_name` and `question` come from the
    user's data set and `qa_id` is the row number.
    """

    qa_id: str
    figure_id: str
    image_name: str
    question: str
    score: float
    keep: bool
    reason: str
    method: str
    rank: int
    head_nli: float | None = None
    head_alignment: float | None = None
    judge_score: float | None = None
    baseline_clip: float | None = None
    baseline_nli: float | None = None
    baseline_text: float | None = None
    baseline_lexical: float | None = None


@dataclass
class MCQ:
    """A multiple-choice question with its rationale: the output of the `mcq` stage.

    `choices` carry no number prefixes and `correct_index` is 0-based (the MicroVQA layout); the
    release export converts to the MicroVQA++ schema. `no_image_outcome` is `passed`,
    `rewritten-passed` or `failed`.
    """

    mcq_id: str
    qa_id: str
    figure_id: str
    question: str
    choices: list[str]
    correct_index: int
    correct_answer: str
    cot: str
    task: int
    task_str: str
    blooms_level: int
    blooms_name: str
    blooms_source: str
    no_image_outcome: str
    no_image_accuracy: float | None
    rewrite_rounds: int
    consistency_score: float
    generator: str
    prompt_version: str
    span_kind: str = ""
    """Kind of the correct answer by the MCQ span lexicon or stage 1 (`stain`, `organism`, `quantity:μM`, ... or `other`)."""
    distractor_source: str = ""
    """Origin of the distractors: `agent`, or offline `corpus`, `lexicon`, `scaled`, `other-answers` joined by `+`."""
    blooms_level_classifier: int | None = None
    """The offline classifier's Bloom's level, kept beside the agent's so the two can be compared."""


@dataclass
class SplitAssignment:
    """The split of one MCQ and its nearest training neighbours: the output of the `split` stage.

    `leakage_group` names the connected group of figures that share an article, an image hash or
    a near-duplicate image, and a group lies wholly in one split. For a test question,
    `nearest_train_mcq` is the most similar training question and `question_similarity` their
    similarity. `nearest_train_figure` and `image_similarity` do the same for the figure. The
    similarity is cosine, or 1 - Hamming distance / 64 for perceptual hashes; the stage's
    manifest stats name the representation. These fields are empty for training questions.
    """

    mcq_id: str
    qa_id: str
    figure_id: str
    article_id: str
    image_hash: str
    leakage_group: str
    task: int
    split: str
    nearest_train_mcq: str = ""
    question_similarity: float | None = None
    nearest_train_figure: str = ""
    image_similarity: float | None = None


@dataclass
class ExportedQuestion:
    """One question of the release: the output of the `export` stage.

    `files` lists the export files that contain the question, relative to `RUN/export/`.
    """

    mcq_id: str
    figure_id: str
    split: str
    image_name: str
    files: list[str] = field(default_factory=list)
