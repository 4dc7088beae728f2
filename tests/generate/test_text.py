"""Caption text: folding, span offsets in the original caption, sentences and panels."""

from __future__ import annotations

import pytest

from microvqa_pp.generate.text import contains_phrase, expand_label, find_span, fold, folded_text, split_sentences


@pytest.mark.parametrize(
    ("caption", "span", "expected"),
    [
        ("Cells were treated with MMC (2.4 μg/mL).", "2.4 µg/mL", "2.4 μg/mL"),
        ("Cells were treated with MMC (2.4 μg/mL).", "2.4 ug/ml", "2.4 μg/mL"),
        ("Cells were treated with MMC (2.4 μg/mL).", "2.4 microg/mL", "2.4 μg/mL"),
        ("Scale bar: 20 µm.", "20 μm", "20 µm"),
        ("Scale bar: 20 µm.", "20um", "20 µm"),
        ("The effects of TNF-α on BMSCs morphology", "TNF-alpha", "TNF-α"),
        ("Light microscopy (periodic acid–Schiff staining).", "periodic acid-Schiff", "periodic acid–Schiff"),
        ("The nuclei were stained with DAPI (blue).", "dapi", "DAPI"),
        ("Scale bar = 200\u00a0μm, Data are", "200 μm", "200\u00a0μm"),
        ("magnification, ×200). The nuclei", "x200", "×200"),
        ("GamGFP co-localizes with γH2AX in fixed Hela cells.", "gammaH2AX", "γH2AX"),
        ("Twenty µg/ml bleomycin (BLC) promotes GamGFP foci.", "twenty  µg/ml\nbleomycin", "Twenty µg/ml bleomycin"),
        ("Doxycycline was added.", "doxycycline.", "Doxycycline"),
    ],
)
def test_find_span_returns_original_offsets(caption, span, expected):
    located = find_span(caption, span)
    assert located is not None
    start, end = located
    assert caption[start:end] == expected


def test_find_span_misses_absent_text():
    assert find_span("Cells were stained with DAPI.", "Hoechst") is None
    assert find_span("Cells were stained with DAPI.", "") is None


def test_find_span_prefers_support_sentence_and_word_boundaries():
    caption = "GamGFP marks DSBs. (B) GFP alone is diffuse. (C) GFP foci form after damage."
    third = caption.index("(C)")
    assert find_span(caption, "GFP") == (caption.index("GFP alone"), caption.index("GFP alone") + 3)
    assert find_span(caption, "GFP", near=(third, len(caption))) == (caption.index("GFP foci"), caption.index("GFP foci") + 3)


def test_fold_keeps_ranges_of_expanded_characters():
    folded = fold("TNF-α levels")
    assert folded.text == "tnf-alpha levels"
    start = folded.text.index("alpha")
    assert folded.original_range(start, start + 5) == (4, 5)
    assert folded_text("Micro-CT  ×10") == "u-ct x10"


def test_contains_phrase_whole_words():
    assert contains_phrase("Which cells were DAPI-stained?", "DAPI")
    assert contains_phrase("What does the µm scale bar show?", "μm")
    assert not contains_phrase("Which protein does GamGFP bind?", "GFP")
    assert not contains_phrase("Which stain labels nuclei?", "")


def test_split_keeps_abbreviations_and_initials():
    caption = (
        "GamGFP foci at DSBs in living E. coli. Cells were scored (Ponder et al., 2005) at 37°C. "
        "We observe fewer foci, e.g. in Figure 2F. The end."
    )
    texts = [sentence.text for sentence in split_sentences(caption)]
    assert texts == [
        "GamGFP foci at DSBs in living E. coli.",
        "Cells were scored (Ponder et al., 2005) at 37°C.",
        "We observe fewer foci, e.g. in Figure 2F.",
        "The end.",
    ]


def test_split_attaches_panel_labels():
    caption = (
        "Title sentence. (A) Light microscopy. Second sentence of A. (B–H) Diagrams. "
        "(C and D) Fissuring ulcers (20×, hematoxylin and eosin). (C, E, G, I) Results.levels.J, Bars."
    )
    sentences = split_sentences(caption)
    assert [(sentence.panel_text, sentence.panels) for sentence in sentences] == [
        ("", ()),
        ("A", ("A",)),
        ("", ()),
        ("B–H", ("B", "C", "D", "E", "F", "G", "H")),
        ("C and D", ("C", "D")),
        ("C, E, G, I", ("C", "E", "G", "I")),
        ("J", ("J",)),
    ]
    assert sentences[1].body == "Light microscopy."
    for sentence in sentences:
        assert caption[sentence.start : sentence.end] == sentence.text


def test_split_finds_label_without_period_before_it():
    caption = (
        "Rad51 focus formation in BRCA2-mutated cell lines. a. Cells were treated for 8 hours with MMC. "
        "BRCA2-/- cells are derived from a patient with complementation group D1/BRCA2 b. Cells were "
        "treated with MMC (2.4 μg/mL) or ionizing radiation (12 Gy). RAD51 foci were counted."
    )
    sentences = split_sentences(caption)
    assert [sentence.panel_text for sentence in sentences] == ["", "a", "", "b", ""]
    assert sentences[2].text.endswith("group D1/BRCA2")
    assert sentences[3].text.startswith("b. Cells were treated with MMC")


def test_split_panel_label_after_period_without_space():
    caption = "Exposure to CO reduces GSH levels.A, Quantification of neurons. B, Representative images."
    assert [sentence.panel_text for sentence in split_sentences(caption)] == ["", "A", "B"]


@pytest.mark.parametrize(
    ("label", "letters"),
    [("B", ("B",)), ("B-D", ("B", "C", "D")), ("C and D", ("C", "D")), ("a, c", ("a", "c")), ("A to C", ("A", "B", "C"))],
)
def test_expand_label(label, letters):
    assert expand_label(label) == letters
