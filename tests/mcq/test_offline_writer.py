"""The offline writer on the real bundled captions: same-kind distractors, stems, rationales."""

from __future__ import annotations

import re

import pytest

from microvqa_pp.agents.base import ReplyError
from microvqa_pp.mcq.offline import QAContext
from microvqa_pp.mcq.spans import classify_span
from microvqa_pp.mcq.text import contains_phrase, longest_shared_run
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
    leaky = QAContext(context.qa.__class__(**{**context.qa.__dict__, "question": "Was DAPI used to stain the nuclei?"}), context.caption, None, 0.9)
    draft = writer.write(leaky)
    assert draft.question.endswith("Which stain was used to produce the staining seen in this image?")


def test_question_about_caption_replaced(writer, contexts):
    context = contexts["L929"]
    about_text = QAContext(context.qa.__class__(**{**context.qa.__dict__, "question": "According to the caption, which cells were used?"}), context.caption, None, 0.9)
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


def test_too_few_distractors(writer, contexts, captions):
    context = contexts["crypt abscesses"]
    qa = context.qa.__class__(**{**context.qa.__dict__, "answer": "mucosal bridges", "answer_span": "mucosal bridges"})
    strict = writer.__class__(writer.pool, ValidationSettings(num_options=10), seed=0)
    with pytest.raises(ReplyError, match="^too_few_distractors: "):
        strict.write(QAContext(qa, context.caption, None, 0.9))
