"""The reference prompt, rendered exactly as MicroVQA renders it, and its no-image variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from microvqa_pp.agents.base import ImagePart
from microvqa_pp.errors import ConfigError
from microvqa_pp.evaluation.prompt import build_messages, build_request, last_sentence, load_template
from microvqa_pp.evaluation.records import EvalQuestion

QUESTION = EvalQuestion(
    question_id="q-1",
    question="A confocal image of HeLa cells. Which organelle is labelled?",
    choices=["Nucleus", "Golgi apparatus", "Mitochondria"],
    correct_index=1,
    images=["/data/a.png", "/data/b.png"],
    image_sha256=["a" * 64, "b" * 64],
)

# MicroVQA's eval.py, PROMPT_TEMPLATE with the question and choices filled in. The first line
# ends with a space in the original.
EXPECTED_REFERENCE = (
    "The following is a multiple choice question (with answers). \n"
    'Think step by step and then output the answer in the format of "The answer is (X)" at the end.\n'
    "\n"
    "A confocal image of HeLa cells. Which organelle is labelled?\n"
    "\n"
    "Options:\n"
    "  (1): Nucleus\n"
    "  (2): Golgi apparatus\n"
    "  (3): Mitochondria\n"
    "\n"
)

# PROMPT_TEMPLATE_NO_IMAGE: the line continuation drops the space before "If", and a stray
# quote follows "at the end.".
EXPECTED_NO_IMAGE_HEADER = (
    "The following is a multiple choice question (with answers).If an image is mentioned ignore this "
    "information and try your best to answer the question.\n"
    'Think step by step and then output the answer in the format of "The answer is (X)" at the end."\n'
    "\n"
)


def test_reference_prompt_is_exact() -> None:
    (message,) = build_messages(QUESTION)
    assert message.role == "user"
    assert message.content[0] == EXPECTED_REFERENCE


def test_images_follow_text_as_parts() -> None:
    (message,) = build_messages(QUESTION)
    assert message.content[1:] == (ImagePart(Path("/data/a.png")), ImagePart(Path("/data/b.png")))


def test_no_image_reference_prompt() -> None:
    (message,) = build_messages(QUESTION, "reference")
    assert len(message.content) == 1
    assert message.content[0].startswith(EXPECTED_NO_IMAGE_HEADER)
    assert message.content[0].endswith(
        "A confocal image of HeLa cells. Which organelle is labelled?\n\nOptions:\n  (1): Nucleus\n  (2): Golgi apparatus\n  (3): Mitochondria\n\n"
    )


def test_no_image_choices_only() -> None:
    (message,) = build_messages(QUESTION, "choices-only")
    assert message.content == (EXPECTED_NO_IMAGE_HEADER + "\n\nOptions:\n  (1): Nucleus\n  (2): Golgi apparatus\n  (3): Mitochondria\n\n",)


def test_no_image_last_sentence() -> None:
    (message,) = build_messages(QUESTION, "last-sentence")
    assert message.content[0] == EXPECTED_NO_IMAGE_HEADER + "Which organelle is labelled?\n\nOptions:\n  (1): Nucleus\n  (2): Golgi apparatus\n  (3): Mitochondria\n\n"


def test_last_sentence_splitting() -> None:
    assert last_sentence("Cells were fixed. Stained with DAPI! What is shown?") == "What is shown?"
    assert last_sentence("What is shown?") == "What is shown?"
    assert last_sentence("  ") == ""


def test_invalid_no_image_mode() -> None:
    with pytest.raises(ConfigError, match="choices-only"):
        build_messages(QUESTION, "blank")


def test_template_headers() -> None:
    template = load_template("microvqa_reference.txt")
    assert template.name == "microvqa-reference"
    assert template.version == "1"
    assert template.cache_namespace == "microvqa-eval/microvqa-reference@1"
    assert "licence" not in template.text


def test_prompt_hash_follows_content() -> None:
    request, first = build_request(QUESTION)
    _, again = build_request(QUESTION)
    other_image = EvalQuestion(**{**QUESTION.__dict__, "image_sha256": ["c" * 64, "b" * 64]})
    _, changed_image = build_request(other_image)
    _, no_image = build_request(QUESTION, no_image="reference")
    assert first == again
    assert len({first, changed_image, no_image}) == 3
    assert request.seed == 0
    assert request.temperature == 1.0
    assert request.max_tokens == 2048
    assert request.cache_namespace == "microvqa-eval/microvqa-reference@1"
