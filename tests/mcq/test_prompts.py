"""The rendered prompts of the MCQ tasks, and parsing of the replies to them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from microvqa_pp.agents.base import ImagePart, ReplyError
from microvqa_pp.mcq.no_image import McqRewriteTask, RewriteItem
from microvqa_pp.mcq.validation import McqDraft
from microvqa_pp.mcq.writing import McqWriteTask, WriteItem


@pytest.fixture
def context(contexts):
    return replace(contexts["DAPI"], image_path=Path("/images/dapi.png"))


def test_write_prompt(context):
    system, user = McqWriteTask(4).messages(WriteItem(context))
    assert system.role == "system"
    assert "Write exactly 4 options: the correct answer and 3 distractors." in system.content[0]
    assert "Keep the task type of the question-answer pair: Expert Visual Understanding." in system.content[0]
    assert user.content[0] == ImagePart(Path("/images/dapi.png"))
    text = user.content[1]
    assert f"Caption of the figure:\n{context.caption}\n" in text
    assert "Question: Which dye stained the nuclei blue?\nAnswer: DAPI\n" in text
    assert "Supporting sentence: The nuclei were stained with DAPI (blue)." in text


def test_write_prompt_for_five_options(context):
    system, _ = McqWriteTask(5).messages(WriteItem(context))
    assert "Write exactly 5 options: the correct answer and 4 distractors." in system.content[0]


def test_write_retry_carries_problem(context):
    messages = McqWriteTask(4).messages(WriteItem(context, previous_reply='{"question": "Q?"}', problem="duplicate_options: two are the same"))
    assert [message.role for message in messages] == ["system", "user", "assistant", "user"]
    assert messages[2].content[0] == '{"question": "Q?"}'
    assert "duplicate_options: two are the same" in messages[3].content[0]


@pytest.mark.parametrize(
    "reply",
    [
        '{"question": "Which dye?", "options": ["DAPI", "Hoechst", "EdU", "WGA"], "correct_answer": "DAPI", "rationale": "Blue nuclei."}',
        'Here it is:\n```json\n{"question": "Which dye?", "options": ["1) DAPI", "2) Hoechst", "3) EdU", "4) WGA"], "correct_answer": "1) DAPI", "rationale": "Blue nuclei."}\n```',
        '{"question": "Which dye?", "options": ["A. DAPI", "B. Hoechst", "C. EdU", "D. WGA"], "correct_answer": "A", "rationale": "Blue nuclei."}',
    ],
)
def test_write_reply_parsed(context, reply):
    draft = McqWriteTask(4).parse(reply, WriteItem(context))
    assert draft.options == ["DAPI", "Hoechst", "EdU", "WGA"]
    assert draft.correct_answer == "DAPI"
    assert draft.rationale == "Blue nuclei."
    assert draft.distractor_source == "agent"


@pytest.mark.parametrize("reply", ['{"question": "Which dye?"}', "DAPI, obviously.", '{"question": "Q", "options": ["DAPI"], "correct_answer": "DAPI", "rationale": "x"}'])
def test_write_reply_rejected(context, reply):
    with pytest.raises(ReplyError):
        McqWriteTask(4).parse(reply, WriteItem(context))


def test_rewrite_prompt_and_reply(context):
    draft = McqDraft("Which blue dye?", ["DAPI", "Hoechst", "EdU", "WGA"], "DAPI", "Blue nuclei.")
    item = RewriteItem(context, draft, 1.0, "Blue means DAPI. The answer is (1)", 0)
    task = McqRewriteTask(4)
    system, user = task.messages(item)
    assert "Rewrite the stem and all 3 distractors" in system.content[0]
    assert user.content[0] == ImagePart(Path("/images/dapi.png"))
    text = user.content[1]
    assert "Current question: Which blue dye?\nCorrect answer (keep it unchanged): DAPI\n" in text
    assert "- Hoechst\n- EdU\n- WGA" in text
    assert "chose the correct answer in 100% of its attempts" in text
    assert "Blue means DAPI. The answer is (1)" in text

    rewritten = task.parse('{"question": "Which nuclear dye?", "distractors": ["SYTO 9", "DRAQ5", "TO-PRO-3"]}', item)
    assert rewritten.options == ["DAPI", "SYTO 9", "DRAQ5", "TO-PRO-3"]
    assert rewritten.correct_answer == "DAPI"
    assert rewritten.rationale == "Blue nuclei."
