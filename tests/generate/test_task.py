"""The generate_qa task: the rendered prompt, the reply schema and parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from microvqa_pp.agents.base import ImagePart, ReplyError
from microvqa_pp.generate.schema import ProposedQAs
from microvqa_pp.generate.task import PROMPT, FigureInput, GenerateQATask

FIGURE = FigureInput("fig-1", "  Cells {with braces} were stained with DAPI (blue).\n", Path("/run/images/ab/abc.jpg"))


def test_prompt_template_is_versioned():
    assert PROMPT.name == "generate_qa"
    assert PROMPT.version == "1"
    assert GenerateQATask.prompt_version == "1"
    assert PROMPT.fields == {"caption", "count", "kinds"}


def test_rendered_messages():
    system, user = GenerateQATask(3).messages(FIGURE)
    assert system.role == "system"
    assert "exam questions" in system.content[0]
    assert user.role == "user"
    image, text = user.content
    assert image == ImagePart(Path("/run/images/ab/abc.jpg"))
    assert "<caption>\nCells {with braces} were stained with DAPI (blue).\n</caption>" in text
    assert "Write 3 question-answer pairs" in text
    assert "   - stain: a dye or histological stain" in text
    assert "   - conclusion: what the authors infer" in text
    assert '{"questions": [{"question": "...", "answer": "...", "answer_span": "..."' in text
    assert "{{" not in text


def test_schema_limits_task_types():
    schema = GenerateQATask(3).json_schema()
    item = schema["$defs"]["ProposedQA"]
    assert item["properties"]["task"]["enum"] == [1, 2, 3]
    assert set(item["required"]) == {"question", "answer", "answer_span", "task"}


def test_parse_clean_noisy_and_invalid_replies():
    task = GenerateQATask(2)
    clean = '{"questions": [{"question": "Which stain?", "answer": "DAPI", "answer_span": "DAPI", "task": 1}]}'
    assert task.parse(clean, FIGURE) == ProposedQAs.model_validate_json(clean)
    assert task.parse(f"Here:\n```json\n{clean}\n```", FIGURE).questions[0].answer == "DAPI"
    with pytest.raises(ReplyError, match="task"):
        task.parse('{"questions": [{"question": "q", "answer": "a", "answer_span": "a", "task": 4}]}', FIGURE)
    with pytest.raises(ReplyError, match="no valid JSON"):
        task.parse('{"questions": [{"question": "Which', FIGURE)


def test_offline_uses_the_template_writer():
    output = GenerateQATask(2).offline(FIGURE)
    assert [(qa.task, qa.question, qa.answer) for qa in output.questions] == [
        (1, "Which stain is shown in blue in this image?", "DAPI"),
    ]
    assert output.questions[0].answer_kind == "stain"


def test_count_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        GenerateQATask(0)
