"""Rows of the three release layouts: MicroVQA++ parquet, MicroVQA evaluation parquet, chat JSONL.

The parquet schemas carry the Hugging Face `features` metadata, so `datasets` decodes the image
columns as `Image` (the metadata is written in the dialect of `datasets` 4 and later, as in the
published MicroVQA++ files).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import pyarrow as pa

from microvqa_pp.records import MCQ, Figure, FilterDecision, SplitAssignment

PROMPTS = Path(__file__).resolve().parent / "prompts"
CHAT_PROMPT_VERSION = "chat-v2"
"""Version of the chat templates in prompts/chat_user_v2.txt and prompts/chat_assistant_v2.txt.

Version 2 ends the reply with exactly `The answer is (N)`, the form that the user turn asks for and
that MicroVQA's evaluation prompt (evaluation/prompts/microvqa_reference.txt) requests. Version 1
appended the answer text after `(N)`.
"""

BIOMEDICA_URL = "https://huggingface.co/datasets/BIOMEDICA/biomedica_webdataset_24M"

STRING = {"dtype": "string", "_type": "Value"}
INT64 = {"dtype": "int64", "_type": "Value"}
FLOAT64 = {"dtype": "float64", "_type": "Value"}
IMAGE = {"_type": "Image"}
BOOL = {"dtype": "bool", "_type": "Value"}
STRINGS = {"feature": STRING, "_type": "List"}

RELEASE_FEATURES: dict[str, dict[str, Any]] = {
    # The MicroVQA++ release schema, in its column order.
    "image_name": STRING,
    "image": IMAGE,
    "question": STRING,
    "choices": STRINGS,
    "correct_index": INT64,
    "correct_answer": STRING,
    "cot": STRING,
    "task_str": STRING,
    "image_caption": STRING,
    "images_source": STRING,
    # Provenance, named as in the stage records.
    "mcq_id": STRING,
    "qa_id": STRING,
    "figure_id": STRING,
    "split": STRING,
    "task": INT64,
    "pmcid": STRING,
    "article_id": STRING,
    "doi": STRING,
    "license": STRING,
    "license_group": STRING,
    "blooms_level": INT64,
    "blooms_name": STRING,
    "blooms_source": STRING,
    "blooms_level_classifier": INT64,
    "consistency_score": FLOAT64,
    "head_nli": FLOAT64,
    "head_alignment": FLOAT64,
    "judge_score": FLOAT64,
    "no_image_outcome": STRING,
    "no_image_accuracy": FLOAT64,
    "generator": STRING,
    "leakage_group": STRING,
    "image_hash": STRING,
    "phash": STRING,
    "template_generated": BOOL,
}

MICROVQA_FEATURES: dict[str, dict[str, Any]] = {
    "key_question": STRING,
    "key_image": STRING,
    "images_list": {"feature": IMAGE, "_type": "List"},
    "question": STRING,
    "choices": STRINGS,
    "correct_index": INT64,
    "correct_answer": STRING,
    "task": INT64,
    "task_str": STRING,
    "image_caption": STRING,
    "images_source": STRING,
    "blooms_level": INT64,
    "pmcid": STRING,
    "license": STRING,
}

_ARROW_VALUES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _arrow_type(feature: dict[str, Any]) -> pa.DataType:
    kind = feature["_type"]
    if kind == "Value":
        return _ARROW_VALUES[feature["dtype"]]
    if kind == "Image":
        return IMAGE_STRUCT
    if kind == "List":
        # `element` is the Parquet name of list items, which the published files also use.
        return pa.list_(pa.field("element", _arrow_type(feature["feature"])))
    raise ValueError(f"unsupported feature type {kind!r}")


def hf_schema(features: dict[str, dict[str, Any]]) -> pa.Schema:
    """Return the Arrow schema of `features` with the Hugging Face metadata that `datasets` reads."""
    fields = [pa.field(name, _arrow_type(feature)) for name, feature in features.items()]
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(fields, metadata=metadata)


def features_yaml(features: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Describe `features` the way a data-set card's `dataset_info.features` does."""
    described = []
    for name, feature in features.items():
        if feature["_type"] == "Value":
            described.append({"name": name, "dtype": feature["dtype"]})
        elif feature["_type"] == "Image":
            described.append({"name": name, "dtype": "image"})
        else:
            inner = feature["feature"]
            described.append({"name": name, "list": "image" if inner["_type"] == "Image" else inner["dtype"]})
    return described


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def image_name(figure: Figure) -> str:
    """Return the release file name of a figure's image: its id (made file-safe) and extension."""
    stem = _UNSAFE_NAME.sub("_", figure.figure_id).strip("._") or figure.image_sha256[:16]
    return f"{stem}.{figure.image_format}"


def images_source(figure: Figure) -> str:
    """Say where a figure comes from and under which licence, for the `images_source` column."""
    licence = figure.license or "not stated by the source"
    if figure.source_kind == "biomedica":
        origin = f"From {BIOMEDICA_URL}, PubMed Central article {figure.pmcid or figure.article_id}"
    elif figure.doi:
        origin = f"From https://doi.org/{figure.doi}"
    elif figure.pmcid:
        origin = f"From PubMed Central article {figure.pmcid}"
    else:
        origin = f"From {Path(figure.source).name or figure.source_kind}"
    return f"{origin}. License: {licence}."


def numbered(choices: list[str]) -> list[str]:
    """Prefix choices with `1) `, `2) `... as the MicroVQA++ release does."""
    return [f"{number}) {choice}" for number, choice in enumerate(choices, start=1)]


@dataclass
class ReleaseItem:
    """The joined records of one exported question."""

    mcq: MCQ
    figure: Figure
    assignment: SplitAssignment
    decision: FilterDecision | None
    image_name: str
    template_generated: bool | None = None
    """Whether the `generate` stage wrote the source QA from a template; None without that stage's output."""


def release_row(item: ReleaseItem, image: bytes) -> dict[str, Any]:
    """Return one row of the MicroVQA++ release parquet: `1) ` prefixes and a 1-based `correct_index`."""
    mcq, figure, decision = item.mcq, item.figure, item.decision
    choices = numbered(mcq.choices)
    return {
        "image_name": item.image_name,
        "image": {"bytes": image, "path": item.image_name},
        "question": mcq.question,
        "choices": choices,
        "correct_index": mcq.correct_index + 1,
        "correct_answer": choices[mcq.correct_index],
        "cot": mcq.cot,
        "task_str": mcq.task_str,
        "image_caption": figure.caption,
        "images_source": images_source(figure),
        "mcq_id": mcq.mcq_id,
        "qa_id": mcq.qa_id,
        "figure_id": figure.figure_id,
        "split": item.assignment.split,
        "task": mcq.task,
        "pmcid": figure.pmcid,
        "article_id": figure.article_id,
        "doi": figure.doi,
        "license": figure.license,
        "license_group": figure.license_group,
        "blooms_level": mcq.blooms_level,
        "blooms_name": mcq.blooms_name,
        "blooms_source": mcq.blooms_source,
        "blooms_level_classifier": mcq.blooms_level_classifier,
        "consistency_score": mcq.consistency_score,
        "head_nli": decision.head_nli if decision else None,
        "head_alignment": decision.head_alignment if decision else None,
        "judge_score": decision.judge_score if decision else None,
        "no_image_outcome": mcq.no_image_outcome,
        "no_image_accuracy": mcq.no_image_accuracy,
        "generator": mcq.generator,
        "leakage_group": item.assignment.leakage_group,
        "image_hash": figure.image_hash,
        "phash": figure.phash,
        "template_generated": item.template_generated,
    }


def microvqa_row(item: ReleaseItem, image: bytes) -> dict[str, Any]:
    """Return one row in the MicroVQA evaluation layout: plain choices and a 0-based `correct_index`."""
    mcq, figure = item.mcq, item.figure
    return {
        "key_question": mcq.mcq_id,
        "key_image": item.image_name,
        "images_list": [{"bytes": image, "path": item.image_name}],
        "question": mcq.question,
        "choices": list(mcq.choices),
        "correct_index": mcq.correct_index,
        "correct_answer": mcq.choices[mcq.correct_index],
        "task": mcq.task,
        "task_str": mcq.task_str,
        "image_caption": figure.caption,
        "images_source": images_source(figure),
        "blooms_level": mcq.blooms_level,
        "pmcid": figure.pmcid,
        "license": figure.license,
    }


def _template(name: str) -> Template:
    return Template((PROMPTS / name).read_text(encoding="utf-8"))


CHAT_USER = _template("chat_user_v2.txt")
CHAT_ASSISTANT = _template("chat_assistant_v2.txt")


def chat_record(item: ReleaseItem, image_path: str) -> dict[str, Any]:
    """Return one fine-tuning conversation: the image and question, then the rationale and answer.

    The reply ends with `The answer is (N)`, N the 1-based number of the correct choice, which is
    the form that the user turn asks for.

    The layout (`messages` with one `<image>` token per image, and `images`) is what LLaMA-Factory
    (sharegpt formatting with role/content tags) and ms-swift read.
    """
    mcq = item.mcq
    choices = "\n".join(f"({number}) {choice}" for number, choice in enumerate(mcq.choices, start=1))
    user = CHAT_USER.substitute(question=mcq.question.strip(), choices=choices).strip()
    reply = CHAT_ASSISTANT.substitute(cot=mcq.cot.strip(), number=mcq.correct_index + 1).strip()
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
        "images": [image_path],
    }
