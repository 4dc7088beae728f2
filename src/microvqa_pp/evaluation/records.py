"""The items an evaluation reads and the per-question results it writes.

Field names are the column names of `results.parquet` (see `microvqa_pp.records.to_table`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import pyarrow as pa

from microvqa_pp.records import to_table

NO_IMAGE_MODES = ("off", "reference", "choices-only", "last-sentence")
"""No-image modes: `off` sends the images and the others send none (see `prompt.py`)."""


@dataclass
class EvalQuestion:
    """One multiple-choice question, normalised to the MicroVQA layout.

    `choices` carry no number prefixes and `correct_index` is 0-based. `images` are paths of the
    image files stored for this evaluation, in the order of the data set's image list.
    """

    question_id: str
    question: str
    choices: list[str]
    correct_index: int
    task: int | None = None
    task_str: str = ""
    blooms_level: int | None = None
    blooms_name: str = ""
    images: list[str] = field(default_factory=list)
    image_sha256: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    """The outcome of one question: the request, the raw reply and each parser's reading.

    `correct_index` is 0-based as in the data. `correct_option`, `reference_option` and
    `robust_option` are 1-based, as the prompt numbers the options, so they compare directly.
    A parser's option is None when it could not read the reply. `error` is empty unless the
    request itself failed (then the reply is empty and both parsers score it wrong).
    """

    question_id: str
    task: int | None
    task_str: str
    blooms_level: int | None
    blooms_name: str
    correct_index: int
    correct_option: int
    n_choices: int
    n_images: int
    prompt_hash: str
    """SHA-256 of the rendered messages: the prompt text and the SHA-256 of each image."""
    request_key: str
    """SHA-256 of the prompt hash and every setting that changes the reply; resume matches on it."""
    model: str
    reply: str
    error: str
    error_detail: str
    cached: bool
    reference_option: int | None
    reference_reason: str
    reference_correct: bool
    robust_option: int | None
    robust_reason: str
    robust_correct: bool


RESULT_COLUMN_DESCRIPTIONS = {
    "correct_index": "0-based index of the correct option in the data set's choices, as MicroVQA stores it",
    "correct_option": "1-based number of the correct option, as the prompt numbers the options",
    "reference_option": "1-based option read by MicroVQA's reference parser, or null when it read none",
    "robust_option": "1-based option read by the robust parser, or null when it read none",
}
"""Descriptions stored in the field metadata (`description`) of results.parquet."""


def results_table(results: Sequence[EvalResult]) -> pa.Table:
    """Convert results to the Arrow table of results.parquet, with column descriptions.

    Nullable integer columns are marked as pandas `Int64` in the schema's pandas metadata, so
    `pandas.read_parquet` keeps an unparsed option as `<NA>` in an integer column instead of
    turning the column into floats with NaN.
    """
    table = to_table(list(results), EvalResult)
    fields = []
    nullable_integers = []
    for column in table.schema:
        description = RESULT_COLUMN_DESCRIPTIONS.get(column.name)
        if description is not None:
            column = column.with_metadata({"description": description})
        if column.nullable and pa.types.is_integer(column.type):
            nullable_integers.append(column.name)
        fields.append(column)
    pandas_metadata = {
        "index_columns": [],
        "column_indexes": [],
        "columns": [
            {"name": name, "field_name": name, "pandas_type": "int64", "numpy_type": "Int64", "metadata": None}
            for name in nullable_integers
        ],
    }
    schema = pa.schema(fields, metadata={b"pandas": json.dumps(pandas_metadata).encode("utf-8")})
    return pa.Table.from_arrays(table.columns, schema=schema)
