"""Span kinds and the corpus pool of same-kind spans, on the real bundled captions."""

from __future__ import annotations

import pytest

from microvqa_pp.mcq.spans import SpanPool, classify_span, default_lexicon, fallback_values, find_quantities, format_like


@pytest.mark.parametrize(
    ("span", "key"),
    [
        ("α-bungarotoxin (BTX)", "stain"),
        ("hematoxylin and eosin", "stain"),
        ("periodic acid–Schiff staining", "stain"),
        ("DAPI", "stain"),
        ("mCherry", "label"),
        ("E. coli", "organism"),
        ("Desulfovibrio vulgaris", "organism"),
        ("L929", "cell_line"),
        ("eosinophils", "cell_type"),
        ("FISH", "technique"),
        ("green", "color"),
        ("glomerular basement membrane", "structure"),
        ("53BP1", "marker"),
        ("ROBO2", "marker"),
        ("10 μM", "quantity:μM"),
        ("2.4 μg/mL", "quantity:μg/ml"),
        ("20 µg/ml", "quantity:μg/ml"),
        ("×200", "quantity:×"),
        ("100×", "quantity:×"),
        ("12 Gy", "quantity:Gy"),
        ("37°C", "quantity:°C"),
        ("8 hours", "quantity:h"),
    ],
)
def test_classify_span(span, key):
    mention = classify_span(span)
    assert mention is not None
    assert mention.key == key


@pytest.mark.parametrize("span", ["crypt abscesses", "the cells", "CO2", "a weak signal in RWPE-1 normal epithelium"])
def test_unknown_span(span):
    assert classify_span(span) is None


def test_short_forms_are_case_sensitive():
    lexicon = default_lexicon()
    assert [mention.text for mention in lexicon.find("HE staining of arterial tissue")] == ["HE staining"]
    assert lexicon.find("he stained the tissue") == []


def test_quantities_skip_ranges():
    found = find_quantities("λex = 550 nm, λem = 560–650 nm, 10 μM for 16 min")
    assert [(mention.key, mention.value) for mention in found] == [("quantity:nm", 550.0), ("quantity:μM", 10.0), ("quantity:min", 16.0)]


def test_pool_from_real_captions(captions):
    pool = SpanPool.from_captions(captions.items())
    lexicon = pool.lexicon

    def canonical(key: str) -> set[str]:
        return {lexicon.entry(key, item.identity).forms[0] for item in pool.same_kind(key)}

    # "HE staining" and "hematoxylin and eosin" are one entry, whichever spelling came first.
    assert {"DAPI", "α-bungarotoxin", "hematoxylin and eosin", "periodic acid-Schiff"} <= canonical("stain")
    assert {"Escherichia coli", "Desulfovibrio vulgaris", "Actinomadura madurae"} <= canonical("organism")
    assert {item.value for item in pool.same_kind("quantity:μm")} >= {25.0, 20.0, 100.0}
    assert {item.text for item in pool.same_kind("marker")} >= {"ROBO2", "SLIT3"}


def test_pool_json_round_trip(captions):
    pool = SpanPool.from_captions(captions.items())
    pool.add_answer("figure-1", "crypt abscesses")
    copy = SpanPool.from_json(pool.to_json())
    assert copy.counts() == pool.counts()
    assert copy.same_kind("quantity:×")[0].value == pool.same_kind("quantity:×")[0].value
    assert copy.answers == {"cryptabscesses": "crypt abscesses"}
    assert copy.answer_figures["cryptabscesses"] == {"figure-1"}


@pytest.mark.parametrize(
    ("value", "template", "text"),
    [(20.0, "2.4", "20"), (4.8, "2.4", "4.8"), (0.24, "2.4", "0.24"), (0.5, "10", "0.5"), (16000.0, "8,000", "16,000"), (5.0, "10", "5")],
)
def test_format_like(value, template, text):
    assert format_like(value, template) == text


def test_fallback_values():
    assert fallback_values("quantity:μM", 10.0) == [5.0, 20.0, 50.0, 2.0, 100.0, 1.0]
    assert 37.0 not in fallback_values("quantity:°C", 37.0)
    assert all(value <= 100 for value in fallback_values("quantity:%", 30.0))
