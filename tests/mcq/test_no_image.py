"""The no-image check offline: shortcut cues, flagging, rewriting and the outcome per question."""

from __future__ import annotations

import pytest

from microvqa_pp.agents import OfflineAgent
from microvqa_pp.agents.base import ReplyError
from microvqa_pp.mcq.no_image import AnswerItem, McqRewriteTask, NoImageCheck, NoImageSettings, ShortcutAnswerer, TextOnlyAnswerTask
from microvqa_pp.mcq.validation import McqDraft, ValidationSettings, validate_draft

# Every text cue points at the correct option: it repeats the stem's words and is the longest.
SHORTCUT = McqDraft(
    question="Which stain colours the nuclei with hematoxylin and the cytoplasm pink with eosin in this colon section?",
    options=["hematoxylin and eosin", "Gram", "Giemsa", "PAS"],
    correct_answer="hematoxylin and eosin",
    rationale="Nuclei are blue-purple and cytoplasm pink.",
)


@pytest.fixture
def answerer(embedder):
    return ShortcutAnswerer(embedder)


def make_check(writer, answerer, **settings) -> NoImageCheck:
    values = {"samples": 3, "max_accuracy": 0.5, "max_rounds": 2, "seed": 0}
    values.update(settings)

    def validate(draft, context):
        return validate_draft(draft, ValidationSettings(), context.caption)

    return NoImageCheck(
        OfflineAgent(),
        TextOnlyAnswerTask(answerer),
        McqRewriteTask(4, writer, answerer, seed=0),
        NoImageSettings(**values),
        validate,
    )


def test_word_overlap_cue(answerer):
    weights = answerer.weights("word_overlap", "Which cells surround the fungal hyphae?", ["fungal hyphae cells", "neurons", "astrocytes", "fibroblasts"])
    assert weights == [1.0, 0.0, 0.0, 0.0]
    assert answerer.weights("word_overlap", "Which stain was used?", ["DAPI", "FITC", "EdU", "WGA"]) == [0.25] * 4


def test_longest_option_cue_with_ties(answerer):
    assert answerer.weights("longest_option", "Q?", ["a much longer option", "short", "tiny", "mini"]) == [1.0, 0.0, 0.0, 0.0]
    weights = answerer.weights("longest_option", "Q?", ["20 μM", "50 μM", "100 μM", "10 μM"])
    assert weights == pytest.approx([0.0, 0.0, 1.0, 0.0])
    weights = answerer.weights("longest_option", "Q?", ["periodic acid-Schiff", "Masson's trichrome", "Coomassie blue", "Congo red"])
    assert weights == pytest.approx([0.5, 0.5, 0.0, 0.0])


def test_stem_similarity_cue(answerer):
    weights = answerer.weights("stem_similarity", "Which organism forms these bacterial colonies?", ["Escherichia coli bacteria", "concrete", "a violin", "taxes"])
    assert weights[0] == 1.0


def test_cues_without_embedder():
    answerer = ShortcutAnswerer(None)
    assert answerer.heuristics == ("word_overlap", "longest_option")
    with pytest.raises(ValueError, match="needs a sentence embedder"):
        answerer.weights("stem_similarity", "Q?", ["a", "b"])


def test_shortcut_mcq_flagged_and_rewritten(writer, answerer, contexts):
    context = contexts["hematoxylin and eosin"]
    [result] = make_check(writer, answerer).run([(context, SHORTCUT)])

    assert result.first_accuracy == pytest.approx(1.0)
    assert result.outcome == "rewritten-passed"
    assert result.rewrite_rounds == 1
    assert result.accuracy <= 0.5
    assert result.draft.correct_answer == "hematoxylin and eosin"
    assert result.draft.question != SHORTCUT.question
    assert set(result.draft.distractors()) != {"Gram", "Giemsa", "PAS"}
    assert validate_draft(result.draft, ValidationSettings(), context.caption) is None


def test_shortcut_mcq_fails_without_rewrites(writer, answerer, contexts):
    [result] = make_check(writer, answerer, max_rounds=0).run([(contexts["hematoxylin and eosin"], SHORTCUT)])
    assert result.outcome == "failed"
    assert result.rewrite_rounds == 0
    assert result.draft is SHORTCUT


def test_clean_mcq_passes(writer, answerer, contexts):
    context = contexts["DAPI"]
    draft = writer.write(context)
    [result] = make_check(writer, answerer).run([(context, draft)])
    assert result.outcome == "passed"
    assert result.rewrite_rounds == 0
    assert result.accuracy == result.first_accuracy <= 0.5


def test_unrewritable_mcq_fails(writer, answerer, contexts):
    # No same-kind spans are left for this answer at 10 options, so every rewrite is rejected.
    context = contexts["crypt abscesses"]
    check = make_check(writer, answerer)
    check.rewrite_task = McqRewriteTask(10, writer, answerer)
    leaky = McqDraft(
        question="What do the dilated crypts contain, as crypt abscesses do?",
        options=["crypt abscesses", "PVO nanoparticles", "bleomycin", "cellular crescents"],
        correct_answer="crypt abscesses",
        rationale="Crypts with neutrophils.",
    )
    [result] = check.run([(context, leaky)])
    assert result.outcome == "failed"
    assert result.rewrite_rounds == 2
    assert result.rejected_rewrites == ["offline_failed", "offline_failed"]


def test_answer_task_prompt_has_no_image():
    task = TextOnlyAnswerTask()
    [message] = task.messages(AnswerItem("q/0", "Which stain labels the nuclei?", ("Hoechst", "DAPI", "EdU", "WGA"), 0))
    assert message.role == "user"
    assert len(message.content) == 1
    text = message.content[0]
    assert "(1) Hoechst\n(2) DAPI\n(3) EdU\n(4) WGA" in text
    assert "The answer is (X)" in text


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Nuclei are blue. The answer is (2)", [0.0, 1.0, 0.0, 0.0]),
        ("**The answer is 3**", [0.0, 0.0, 1.0, 0.0]),
        ("the answer is (4). Or maybe the answer is (1)", [0.0, 0.0, 0.0, 1.0]),
    ],
)
def test_answer_task_parses_microvqa_format(reply, expected):
    item = AnswerItem("q/0", "Q?", ("a", "b", "c", "d"), 0)
    assert TextOnlyAnswerTask().parse(reply, item) == expected


@pytest.mark.parametrize("reply", ["I think it is DAPI.", "The answer is (7)"])
def test_answer_task_rejects_bad_replies(reply):
    with pytest.raises(ReplyError):
        TextOnlyAnswerTask().parse(reply, AnswerItem("q/0", "Q?", ("a", "b", "c", "d"), 0))
