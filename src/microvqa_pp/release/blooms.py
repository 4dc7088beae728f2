"""Bloom's taxonomy levels and the reference distribution the report compares with."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from importlib import resources
from pathlib import Path

from microvqa_pp import models
from microvqa_pp.errors import MicroVQAError

logger = logging.getLogger(__name__)

BLOOMS_NAMES = {1: "Recall", 2: "Comprehension", 3: "Application", 4: "Analysis", 5: "Synthesis/Evaluation", 6: "Create"}
"""Bloom's revised taxonomy levels as MicroVQA labels them."""

_LEVEL = re.compile(r"Level:\s*([1-6])\b")


def read_blooms_reference(spec: str) -> tuple[Counter[int], str]:
    """Return the Bloom's-level counts of a reference file and its label.

    `spec` is `models.BLOOMS_REFERENCE` for the expert-labelled MicroVQA questions shipped with
    the package, or a JSONL path. Each line is a chat record whose assistant turn contains
    `Level: N` (the MicroVQA layout) or an object with a `blooms_level` field.
    """
    if spec == models.BLOOMS_REFERENCE:
        text = resources.files("microvqa_pp").joinpath("data/blooms_train.jsonl").read_text(encoding="utf-8")
        label = "MicroVQA expert labels"
    else:
        path = Path(spec)
        if not path.is_file():
            raise MicroVQAError(
                f"Bloom's reference file not found: {spec}; pass a JSONL file to --blooms-reference or set "
                f"report.blooms_reference={models.BLOOMS_REFERENCE} for the packaged MicroVQA labels"
            )
        text = path.read_text(encoding="utf-8")
        label = path.stem

    counts: Counter[int] = Counter()
    unreadable = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        level = _reference_level(line)
        if level is None:
            unreadable += 1
        else:
            counts[level] += 1
    if unreadable:
        logger.warning("report: %d lines of the Bloom's reference %s carry no level; skipped them", unreadable, label)
    if not counts:
        raise MicroVQAError(f"invalid Bloom's reference {spec}: no line has a level; expected `Level: N` in the assistant turn or a `blooms_level` field")
    return counts, label


def _reference_level(line: str) -> int | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("blooms_level"), int):
        return row["blooms_level"]
    for message in row.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "assistant":
            match = _LEVEL.search(str(message.get("content", "")))
            if match:
                return int(match.group(1))
    return None
