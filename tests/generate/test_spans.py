"""Answer spans found by rules in real captions."""

from __future__ import annotations

from microvqa_pp.generate.spans import SPAN_KINDS, find_spans

RAD51_CAPTION = (
    "Rad51 focus formation in BRCA2-mutated cell lines. a. Cells were treated for 8 hours with MMC "
    "(2.4 μg/mL) and immunolabeled for RAD51 (green) and DAPI (blue). b. Cells were treated with MMC "
    "(2.4 μg/mL) or ionizing radiation (12 Gy); after recovery for 8 or 24 hours, cells were stained for RAD51."
)


def spans_of(caption: str, kind: str) -> list:
    return [span for span in find_spans(caption) if span.kind == kind]


def test_every_span_is_a_caption_slice(bundled_captions):
    for caption_id, caption in bundled_captions:
        for span in find_spans(caption):
            assert caption[span.start : span.end] == span.text, caption_id
            assert span.kind in SPAN_KINDS, span.kind
            assert span.sentence.start <= span.start and span.end <= span.sentence.end, (caption_id, span.text)


def test_kinds_found_across_bundled_captions(bundled_captions):
    kinds = {span.kind for _, caption in bundled_captions for span in find_spans(caption)}
    expected = {"stain", "marker", "cell_type", "organism", "modality", "magnification", "scale", "concentration", "dose", "treatment", "duration", "outcome", "conclusion"}
    assert expected <= kinds


def test_treatment_concentration_dose_and_colours():
    concentration = spans_of(RAD51_CAPTION, "concentration")[0]
    assert concentration.text == "2.4 μg/mL"
    assert concentration.context["reagent"] == "MMC"

    [dose] = spans_of(RAD51_CAPTION, "dose")
    assert dose.text == "12 Gy"
    assert dose.context["reagent"] == "ionizing radiation"

    duration = spans_of(RAD51_CAPTION, "duration")[0]
    assert duration.text == "8 hours"
    assert duration.context["reagent"] == "MMC"

    assert {span.text for span in spans_of(RAD51_CAPTION, "treatment")} == {"MMC"}
    assert {(span.text, span.context.get("colour")) for span in spans_of(RAD51_CAPTION, "marker")} >= {("RAD51", "green")}
    [dapi] = spans_of(RAD51_CAPTION, "stain")
    assert (dapi.text, dapi.context["colour"]) == ("DAPI", "blue")
    assert dapi.sentence.panel_text == "a"


def test_stain_target_magnification_and_cells():
    caption = (
        "Selective dye uptake in DU-145, LNCaP, PC-3 prostate cancer cells. Only a weak near infrared "
        "fluorescence (red) was observed in RWPE-1 normal human prostate epithelial cells (magnification, ×200). "
        "The nuclei were stained with DAPI (blue)."
    )
    [stain] = spans_of(caption, "stain")
    assert stain.text == "DAPI"
    assert stain.context["target"] == "nuclei"
    assert [span.text for span in spans_of(caption, "magnification")] == ["×200"]
    assert [span.text for span in spans_of(caption, "cell_type")] == [
        "DU-145, LNCaP, PC-3 prostate cancer cells",
        "RWPE-1 normal human prostate epithelial cells",
    ]
    # "fluorescence (red)" names no label.
    assert spans_of(caption, "marker") == []


def test_scale_bars_and_standard_error():
    caption = (
        "(C and D) Ku inhibits recruitment of GamGFP, fixed cells. Mean ± SEM of three experiments. "
        "(c) SEM image of PVO nanoparticles. Scale bars = 25 μm (TA) and 30 μm (TVA)."
    )
    assert [span.text for span in spans_of(caption, "modality")] == ["SEM"]
    assert spans_of(caption, "modality")[0].start == caption.index("SEM image")
    assert [span.text for span in spans_of(caption, "scale")] == ["25 μm"]


def test_organisms():
    caption = (
        "(A) In the absence of sulfate, the bacterium Desulfovibrio vulgaris (Dv) and the archaeon "
        "Methanococcus maripaludis (Mm) cooperate. GamGFP foci at DSBs in living E. coli."
    )
    assert [span.text for span in spans_of(caption, "organism")] == ["Desulfovibrio vulgaris", "Methanococcus maripaludis", "E. coli"]


def test_outcome_subject_and_object():
    [outcome] = spans_of("Exposure of neuronal cultures to CO reduces endogenous GSH levels.A, Bars.", "outcome")
    assert outcome.text == "reduces"
    assert outcome.context == {"subject": "Exposure of neuronal cultures to CO", "object": "endogenous GSH levels", "form": "verb"}

    [viability] = spans_of("Long-term GamGFP production reduces E. coli viability. Greater loss.", "outcome")
    assert viability.context["object"] == "E. coli viability"


def test_conclusion_and_effect():
    caption = (
        "(F) Induction of Gam or GamGFP with 200 ng/ml doxycycline causes UV sensitivity similar to that of "
        "recB-null mutant cells, indicating that Gam or GamGFP block RecBCD action on double-stranded DNA ends."
    )
    [conclusion] = spans_of(caption, "conclusion")
    assert conclusion.text == "Gam or GamGFP block RecBCD action on double-stranded DNA ends"
    assert conclusion.context["observation"].startswith("Induction of Gam or GamGFP")
    [effect] = spans_of(caption, "effect")
    assert effect.text == "UV sensitivity"
    assert effect.context["verb"] == "causes"


def test_caption_without_content_has_no_spans():
    assert find_spans("The complete results of Figure 5B and C (panel A and B, respectively).") == []
