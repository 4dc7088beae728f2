"""Lexical grounding features and caption sentence splitting."""

from __future__ import annotations

import json

import pytest

from microvqa_pp.signals.lexical import content_words, lexical_overlap, span_found, split_sentences


@pytest.fixture(scope="module")
def captions(elife_folder) -> list[str]:
    with open(elife_folder / "figures.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["caption"] for line in handle]


def test_content_words_drop_stopwords() -> None:
    assert content_words("The GamGFP foci are at the DSBs in E. coli") == {"gamgfp", "foci", "dsbs", "coli"}


def test_lexical_overlap_share() -> None:
    caption = "GamGFP foci mark double-strand breaks in living E. coli cells."
    assert lexical_overlap("GamGFP foci mark double-strand breaks.", caption) == 1.0
    assert lexical_overlap("GamGFP foci mark mitochondria.", caption) == 0.75
    assert lexical_overlap("Ribosomes translate proteins.", caption) == 0.0
    assert lexical_overlap("It is the one.", caption) == 0.0


def test_span_found_by_offsets_and_text() -> None:
    caption = "GamGFP foci at DSBs in living E. coli. (A) Strategy."
    assert span_found("foci at DSBs", caption, 7, 19)
    assert span_found("Foci at  DSBs.", caption)
    assert span_found("living E. coli", caption, 0, 3)
    assert not span_found("foci at telomeres", caption)
    assert not span_found("  ", caption)


def test_split_sentences_keeps_abbreviations() -> None:
    text = (
        "GamGFP foci at DSBs in living E. coli. (A) Strategy, see Fig. 2 and Shee et al. 2013. "
        "Cells were imaged, e.g. in panel B. Foci increase with dose!  Scale bar, 2 μm."
    )
    assert split_sentences(text) == [
        "GamGFP foci at DSBs in living E. coli.",
        "(A) Strategy, see Fig. 2 and Shee et al. 2013.",
        "Cells were imaged, e.g. in panel B.",
        "Foci increase with dose!",
        "Scale bar, 2 μm.",
    ]


def test_split_sentences_rejoins_real_captions(captions: list[str]) -> None:
    for caption in captions:
        sentences = split_sentences(caption)
        assert " ".join(sentences) == " ".join(caption.split())
        assert all(sentence == sentence.strip() and sentence for sentence in sentences)
    longest = max(captions, key=len)
    assert len(split_sentences(longest)) >= 8
