"""The agent judge task: the rendered prompt, reply parsing, and judging through an LLM agent."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

from microvqa_pp.agents.base import ChatBackend, ChatReply, ChatRequest, ImagePart, LLMAgent, ReplyError
from microvqa_pp.agents import make_agent
from microvqa_pp.config import AgentConfig, SignalsConfig
from microvqa_pp.signals import SignalScorer
from microvqa_pp.signals.judge import PROMPT, JudgeItem, JudgeTask, JudgeVerdict

ITEM = JudgeItem(
    qa_id="fig2-qa0",
    question="What do the green foci mark?",
    answer="double-strand breaks",
    statement="The green foci mark double-strand breaks.",
    caption="GamGFP foci at DSBs in living E. coli.",
    image_path=Path("/data/images/fig2.jpg"),
)


class ScriptedBackend(ChatBackend):
    """A chat backend that returns the next scripted reply (text, or a ChatReply for errors)."""

    model = "scripted-judge"

    def __init__(self, replies: list[str | ChatReply]):
        self.replies = list(replies)
        self.requests: list[ChatRequest] = []

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        self.requests.extend(requests)
        out = []
        for _ in requests:
            reply = self.replies.pop(0)
            out.append(reply if isinstance(reply, ChatReply) else ChatReply(text=reply))
        return out


def test_rendered_prompt() -> None:
    messages = JudgeTask().messages(ITEM)
    assert [message.role for message in messages] == ["system", "user"]
    system = messages[0].content[0]
    assert system.startswith("You are an expert microscopist who checks visual question-answering data")
    assert system.endswith('Reply with only a JSON object: {"score": <number from 0 to 1>, "reason": "<one short sentence>"}')
    image, user = messages[1].content
    assert image == ImagePart(Path("/data/images/fig2.jpg"))
    assert user == (
        "Caption:\n"
        "GamGFP foci at DSBs in living E. coli.\n\n"
        "Question: What do the green foci mark?\n"
        "Answer: double-strand breaks\n"
        "The pair as a statement: The green foci mark double-strand breaks.\n\n"
        "How consistent is this question-answer pair with the image and the caption?"
    )


def test_prompt_version_from_file() -> None:
    assert JudgeTask.prompt_version == PROMPT.version == "1"
    assert PROMPT.fields == {"caption", "question", "answer", "statement"}


@pytest.mark.parametrize(
    ("reply", "score", "reason"),
    [
        ('{"score": 0.9, "reason": "The caption states it."}', 0.9, "The caption states it."),
        ('Here is my rating:\n```json\n{"score": 1, "reason": "stated"}\n```', 1.0, "stated"),
        ('{"reason": "wrong panel", "score": "0.2"}', 0.2, "wrong panel"),
        ("Score: 0.35\nReason: the answer names another protein.", 0.35, "the answer names another protein."),
        ('{"score": 0.5}', 0.5, ""),
    ],
)
def test_parse_clean_and_noisy_replies(reply: str, score: float, reason: str) -> None:
    verdict = JudgeTask().parse(reply, ITEM)
    assert verdict.score == score
    assert verdict.reason == reason


@pytest.mark.parametrize(
    "reply",
    ['{"score": 85, "reason": "percent"}', '{"score": -0.1}', '{"reason": "no score"}', "I think it is fine.", "Score: 7/10", ""],
)
def test_parse_broken_replies(reply: str) -> None:
    with pytest.raises(ReplyError):
        JudgeTask().parse(reply, ITEM)


def test_long_reason_shortened() -> None:
    verdict = JudgeVerdict(score=0.4, reason="word " * 200)
    assert len(verdict.reason) == 300
    assert verdict.reason.endswith("…")


def test_judge_through_agent_with_repair(elife_figures, make_qa, tmp_path) -> None:
    figures = elife_figures[:2]
    qas = [make_qa(figures[0]), make_qa(figures[1]), make_qa(figures[1], 1)]
    backend = ScriptedBackend(
        [
            '{"score": 0.8, "reason": "Supported by the caption."}',
            '{"score": 120, "reason": "too high"}',
            ChatReply(error="timeout", error_detail="read timed out after 120 s"),
            '{"score": 0.6, "reason": "Partly supported."}',  # the repair of the second reply
        ]
    )
    scorer = SignalScorer(SignalsConfig(device="cpu", judge=True), tmp_path, agent=LLMAgent(backend))
    batch = scorer.score(figures, qas)

    assert [record.judge_score for record in batch.signals] == [0.8, 0.6, None]
    assert [record.judge_reason for record in batch.signals] == ["Supported by the caption.", "Partly supported.", ""]
    assert batch.counters["judge_requests"] == 3
    assert batch.counters["judge_failed_timeout"] == 1
    first_request = backend.requests[0]
    assert first_request.cache_namespace == "judge_consistency@1"
    assert first_request.messages[1].content[0] == ImagePart(Path(figures[0].image_path))
    assert f"Answer: {qas[0].answer}" in first_request.messages[1].content[1]


def test_judge_through_openai_stub(openai_stub, elife_figures, make_qa, tmp_path) -> None:
    """The judge over real HTTP: a clean reply, a reply repaired on request, and a broken one."""
    from stubs.openai_server import Reply

    figures = elife_figures[:3]
    qas = [make_qa(figure) for figure in figures]

    def responder(request):
        if figures[0].caption in request.text:
            return Reply.json({"score": 0.9, "reason": "The caption states it."})
        if figures[1].caption in request.text:
            if "could not be used" in request.text:
                return Reply.prose({"score": 0.4, "reason": "Partly supported."})
            return Reply.json({"score": 40, "reason": "percent"})
        return Reply.broken()

    openai_stub.responder = responder
    settings = AgentConfig(backend="openai", base_url=openai_stub.url, model="stub-model", cache=False, retry_base_s=0.01)
    agent = make_agent(settings)
    try:
        batch = SignalScorer(SignalsConfig(device="cpu", judge=True), tmp_path, agent=agent).score(figures, qas)
    finally:
        agent.close()

    assert [record.judge_score for record in batch.signals] == [0.9, 0.4, None]
    assert batch.signals[1].judge_reason == "Partly supported."
    assert batch.counters["judge_failed_unparseable_reply"] == 1
    first = next(seen for seen in openai_stub.requests if figures[0].caption in seen.text)
    assert first.body["model"] == "stub-model"
    assert len(first.image_urls) == 1
    assert first.image_urls[0].startswith("data:image/")
    assert f"Answer: {qas[0].answer}" in first.text
