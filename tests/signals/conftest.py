"""Figures and QAs built from the bundled eLife captions, for the signal tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microvqa_pp.config import SignalsConfig
from microvqa_pp.records import QA, Figure
from microvqa_pp.signals.lexical import split_sentences


def load_figures(folder: Path) -> list[Figure]:
    """Return Figure records of a bundled eLife folder, with absolute image paths."""
    figures = []
    with open(folder / "figures.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            figures.append(
                Figure(
                    figure_id=row["id"],
                    caption=row["caption"],
                    image_path=str((folder / row["image"]).resolve()),
                    image_sha256=row["image_sha256"],
                    image_hash="",
                    phash="",
                    width=row["width"],
                    height=row["height"],
                    image_format="JPEG",
                    article_id=row["doi"],
                    pmcid="",
                    license=row["license"],
                    license_group="commercial",
                )
            )
    return figures


def qa_from_sentence(figure: Figure, sentence_index: int, number: int = 0) -> QA:
    """Return a QA whose answer is one sentence of the figure's caption, with its offsets."""
    sentences = split_sentences(figure.caption)
    sentence = sentences[min(sentence_index, len(sentences) - 1)].rstrip(".")
    start = figure.caption.find(sentence)
    return QA(
        qa_id=f"{figure.figure_id}-qa{number}",
        figure_id=figure.figure_id,
        question="What does the figure show?",
        answer=sentence,
        answer_span=sentence,
        span_start=start,
        span_end=start + len(sentence) if start >= 0 else -1,
        support_sentence=sentence,
        task=1,
        task_str="Expert Visual Understanding",
        generator="test",
        template_generated=True,
        prompt_version="test",
    )


def informative_qa(figure: Figure, number: int = 0) -> QA:
    """Return a QA answered by the longest of the caption's first three sentences.

    The longest sentence carries the figure's content; a short one such as "(A) Strategy."
    says too little to tell the figure apart from the others.
    """
    sentences = split_sentences(figure.caption)[:3]
    return qa_from_sentence(figure, max(range(len(sentences)), key=lambda index: len(sentences[index])), number)


@pytest.fixture(scope="session")
def elife_figures(elife_folder: Path, elife_small_folder: Path) -> list[Figure]:
    """The 20 bundled eLife figures (15 from eLife 01222, 5 from eLife 00230)."""
    return load_figures(elife_folder) + load_figures(elife_small_folder)


@pytest.fixture(scope="session")
def make_qa():
    """Return `informative_qa`, for tests (conftest modules cannot be imported by name)."""
    return informative_qa


@pytest.fixture
def offline_settings() -> SignalsConfig:
    return SignalsConfig(device="cpu", batch_size=8)
