"""The offline writer on the real bundled captions: same-kind distractors, stems, rationales."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from microvqa_pp.agents.base import ReplyError
from microvqa_pp.mcq.offline import OfflineWriter, QAContext
from microvqa_pp.mcq.spans import SpanPool, classify_span
from microvqa_pp.mcq.text import contains_phrase, longest_shared_run, normalize_option
from microvqa_pp.mcq.validation import ValidationSettings, validate_draft


def test_every_fixture_qa_gives_a_valid_draft(writer, contexts):
    for answer, context in contexts.items():
        draft = writer.write(context)
        assert validate_draft(draft, ValidationSettings(), context.caption) is None, answer
        assert draft.options[0] == context.answer
        assert draft.correct_position() == 0


def test_stem_gives_no_option_away(writer, contexts):
    for context in contexts.values():
        draft = writer.write(context)
        for option in draft.options:
            assert not contains_phrase(draft.question, option), (draft.question, option)
        assert longest_shared_run(draft.question, context.caption) < 12


@pytest.mark.parametrize(
    ("answer", "kind"),
    [("DAPI", "stain"), ("Actinomadura madurae", "organism"), ("L929", "cell_line"), ("astrocytes", "cell_type"), ("53BP1", "marker"), ("green", "color")],
)
def test_distractors_same_kind(writer, contexts, answer, kind):
    draft = writer.write(contexts[answer])
    assert draft.span_kind == kind
    for option in draft.options:
        mention = classify_span(option, writer.lexicon)
        assert mention is not None and mention.key == kind, option


@pytest.mark.parametrize(("answer", "unit"), [("10 μM", " μM"), ("2.4 μg/mL", " μg/mL"), ("12 Gy", " Gy"), ("×8,000", None), ("25 μm", " μm")])
def test_quantity_distractors_same_unit(writer, contexts, answer, unit):
    draft = writer.write(contexts[answer])
    values = set()
    for option in draft.options:
        if unit:
            assert option.endswith(unit), option
        else:
            assert option.startswith("×"), option
        values.add(float(re.sub(r"[^\d.]", "", option)))
    assert len(values) == 4


def test_spans_of_own_caption_excluded(writer, contexts):
    # The RAD51 caption also shows DAPI in blue, so blue must not be a distractor for green.
    draft = writer.write(contexts["green"])
    assert "blue" not in draft.options
    # The EM caption reports ×8,000 only; ×200 and ×100 come from other captions.
    assert "×8,000" in writer.write(contexts["×8,000"]).options


def test_corpus_spans_preferred_over_lexicon(writer, contexts):
    draft = writer.write(contexts["Actinomadura madurae"])
    assert draft.distractor_source.startswith("corpus")
    assert "Desulfovibrio vulgaris" in draft.options


def test_leaky_stage1_question_replaced(writer, contexts):
    context = contexts["DAPI"]
    leaky = replace(context, qa=replace(context.qa, question="Was DAPI used to stain the nuclei?"))
    draft = writer.write(leaky)
    assert draft.question.endswith("Which stain was used to produce the staining seen in this image?")


def test_question_about_caption_replaced(writer, contexts):
    context = contexts["L929"]
    about_text = replace(context, qa=replace(context.qa, question="According to the caption, which cells were used?"))
    assert writer.write(about_text).question.endswith("Which cell line is shown in this image?")


def test_rationale_from_support_sentence(writer, contexts):
    draft = writer.write(contexts["α-bungarotoxin (BTX)"])
    assert '"(A) Representative images of TA and TVA EPs stained with α-bungarotoxin (BTX)."' in draft.rationale
    assert "The stain is therefore α-bungarotoxin (BTX)." in draft.rationale
    for distractor in draft.distractors():
        assert distractor in draft.rationale


def test_lead_uses_support_sentence_modality(writer, contexts):
    # Panel A of this figure is light microscopy; panel D of the same caption is electron microscopy.
    draft = writer.write(contexts["periodic acid–Schiff"])
    assert draft.question.startswith("A light micrograph")


def test_too_few_distractors(writer, contexts):
    context = contexts["crypt abscesses"]
    unknown = replace(context, qa=replace(context.qa, answer="mucosal bridges", answer_span="mucosal bridges"))
    strict = writer.__class__(writer.pool, ValidationSettings(num_options=10), seed=0)
    with pytest.raises(ReplyError, match="^too_few_distractors: "):
        strict.write(unknown)


def with_answer(context: QAContext, answer: str, answer_kind: str = "other", support: str = "") -> QAContext:
    qa = replace(context.qa, answer=answer, answer_span=answer, support_sentence=support or context.qa.support_sentence, answer_kind=answer_kind)
    return replace(context, qa=qa)


def test_stage1_kind_names_lexicon_kind(writer, contexts, captions):
    # The caption's own misspelling is no lexicon form, so only stage 1's kind marks it as a technique.
    caption_id = "filelist_noncommercial_batch_73_4-PMC6877440-1-jptm-2019-08-05f1"
    context = replace(contexts["cellular crescents"], caption=captions[caption_id])
    typo = with_answer(context, "Imunofluorescence", "modality", support="Imunofluorescence shows linear deposition of IgG.")
    draft = writer.write(typo)
    assert draft.span_kind == "technique"
    assert not any(option.casefold() == "immunofluorescence" for option in draft.options)
    assert draft.question.startswith("A microscopy image")


def test_stage1_kind_groups_other_answers(captions, contexts):
    pool = SpanPool.from_captions(captions.items())
    for figure, answer, kind in [
        ("figure-1", "doxycycline", "treatment"),
        ("figure-2", "phleomycin", "treatment"),
        ("figure-3", "MMC", "treatment"),
        ("figure-4", "cancer cells", "cell_type"),
        ("figure-5", "partner intermixing", "effect"),
    ]:
        pool.add_answer(figure, answer, kind)
    treatment = with_answer(contexts["bleomycin"], "bleomycin", "treatment")
    draft = OfflineWriter(pool, ValidationSettings(), seed=0).write(treatment)
    assert sorted(draft.distractors()) == ["MMC", "doxycycline", "phleomycin"]
    assert draft.distractor_source == "other-answers"


def test_effects_take_opposite_directions(writer, contexts):
    context = with_answer(contexts["E. coli"], "increases", "outcome")
    draft = writer.write(context)
    assert draft.span_kind == "outcome"
    up = {"increases", "increased", "promotes", "induces", "enhances", "stimulates"}
    assert not set(draft.distractors()) & up
    assert "The answer is therefore increases." in draft.rationale


def test_reporters_of_other_colours(writer, contexts):
    context = with_answer(contexts["E. coli"], "GFP")
    draft = writer.write(context)
    assert draft.span_kind == "label"
    assert not set(draft.distractors()) & {"EGFP", "eGFP", "EmGFP", "mEmerald", "mNeonGreen"}


def test_spelled_number_written_in_digits(writer, contexts):
    context = with_answer(contexts["bleomycin"], "Twenty µg/ml", "concentration")
    draft = writer.write(context)
    assert draft.correct_answer == "20 μg/ml"
    assert draft.options[0] == "20 μg/ml"
    assert all(option.endswith(" μg/ml") for option in draft.options)
    assert len({normalize_option(option) for option in draft.options}) == 4


def test_lead_not_taken_from_another_panel(writer, contexts, captions):
    # Panel D of this caption is electron microscopy; a question on panel B must not say so.
    caption_id = "filelist_noncommercial_batch_73_4-PMC6877440-1-jptm-2019-08-05f1"
    context = replace(contexts["cellular crescents"], caption=captions[caption_id])
    panel_b = with_answer(context, "IgG", support="Imunofluorescence shows linear deposition of IgG along the glomerular basement membrane (GBM) (B).")
    assert writer.write(panel_b).question.startswith("A fluorescence micrograph")
    technique = with_answer(context, "Electron microscopy", support="(D) Electron microscopy shows a diffusely wrinkled GBM.")
    assert writer.write(technique).question.startswith("A microscopy image")


@pytest.mark.parametrize(
    ("answer", "key", "shown"),
    [
        ("Immunofluorescence", "technique", "immunofluorescence"),
        ("Confocal microscopy", "technique", "confocal microscopy"),
        ("Giemsa", "stain", "Giemsa"),
        ("HeLa cells", "cell_line", "HeLa cells"),
        ("Hela cells", "cell_line", "Hela cells"),
        ("Escherichia coli", "organism", "Escherichia coli"),
        ("DAPI", "stain", "DAPI"),
        ("Imunofluorescence", "technique", "Imunofluorescence"),
    ],
)
def test_sentence_start_capital_lowered(writer, answer, key, shown):
    assert writer.sentence_case(answer, key) == shown


def test_lead_names_no_rival_of_the_answer(writer, contexts):
    support = "A, Quantification of the treatment of neurons (teal) and astrocytes (orange) with inhibitors."
    context = replace(with_answer(contexts["astrocytes"], "neurons", "cell_type", support=support), caption=support)
    options = ["neurons", "epithelial cells", "eosinophils", "platelets"]

    assert writer.lead(context, options, "cell_type") == "A microscopy image is shown."
    assert writer.lead(context, options, "stain") == "A microscopy image of astrocytes is shown."
