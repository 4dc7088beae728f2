"""The items an evaluation reads and the per-question results it writes.

Field names are the column names of `results.parquet` (see `microvqa_pp.records.to_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    Options are 1-based, as the prompt numbers them; `correct_index` stays 0-based as in the
    data. A parser's option is None when it could not read the reply. `error` is empty unless
    the request itself failed (then the reply is empty and both parsers score it wrong).
    """

    question_id: str
    task: int | None
    task_str: str
    blooms_level: int | None
    blooms_name: str
    correct_index: int
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
