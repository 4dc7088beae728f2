"""LLMAgent over the OpenAI backend: parsing clean, noisy and broken replies, and the repair request."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from stubs.openai_server import Reply

from microvqa_pp.agents import LLMAgent, OfflineAgent, make_agent
from microvqa_pp.agents.base import AgentTask, Message, ReplyError, extract_json
from microvqa_pp.agents.openai import OpenAIBackend
from microvqa_pp.config import AgentConfig


class Answer(BaseModel):
    answer: str


class AnswerTask(AgentTask[str, Answer]):
    name = "answer"
    prompt_version = "7"
    output_model = Answer

    def item_id(self, item: str) -> str:
        return item

    def messages(self, item: str) -> list[Message]:
        return [Message.text("system", "Reply in JSON."), Message.text("user", item)]

    def offline(self, item: str) -> Answer:
        if item == "bad":
            raise ReplyError("no answer offline")
        return Answer(answer=item.upper())


@pytest.fixture
def agent(make_backend):
    return LLMAgent(make_backend(), seed=3)


def test_clean_reply(openai_stub, agent):
    openai_stub.enqueue(Reply.json({"answer": "DAPI"}))
    [result] = agent.run(AnswerTask(), ["q1"])
    assert result.ok
    assert result.output == Answer(answer="DAPI")
    assert result.repaired is False
    body = openai_stub.requests[0].body
    assert body["seed"] == 3
    assert body["response_format"]["json_schema"]["name"] == "answer"
    assert body["response_format"]["json_schema"]["schema"] == Answer.model_json_schema()


def test_prose_reply_is_parsed(openai_stub, agent):
    openai_stub.enqueue(Reply.prose({"answer": "phalloidin"}))
    [result] = agent.run(AnswerTask(), ["q1"])
    assert result.output == Answer(answer="phalloidin")
    assert len(openai_stub.requests) == 1


def test_broken_reply_gets_one_repair(openai_stub, agent):
    broken = Reply.broken({"answer": "GFP"})
    openai_stub.enqueue(broken, Reply.json({"answer": "GFP"}))
    [result] = agent.run(AnswerTask(), ["q1"])

    assert result.ok
    assert result.repaired is True
    assert result.output == Answer(answer="GFP")
    repair = openai_stub.requests[1].messages
    assert [message["role"] for message in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == broken.content
    assert "could not be used" in repair[3]["content"]


def test_twice_broken_reply_is_recorded(openai_stub, agent):
    openai_stub.enqueue(Reply.broken(), Reply.text("still not JSON"))
    [result] = agent.run(AnswerTask(), ["q1"])
    assert result.output is None
    assert result.error == "unparseable_reply"
    assert "the repair reply also failed" in result.error_detail
    assert "still not JSON" in result.raw_reply
    assert len(openai_stub.requests) == 2


def test_invalid_fields_get_repaired(openai_stub, agent):
    openai_stub.enqueue(Reply.json({"reply": "GFP"}), Reply.json({"answer": "GFP"}))
    [result] = agent.run(AnswerTask(), ["q1"])
    assert result.repaired is True
    assert "answer: Field required" in openai_stub.requests[1].messages[-1]["content"]


def test_failed_request_is_a_result(openai_stub, make_backend):
    def respond(seen):
        question = seen.messages[-1]["content"]
        return Reply.server_error() if question == "q2" else Reply.json({"answer": question})

    openai_stub.responder = respond
    agent = LLMAgent(make_backend(max_retries=1))
    results = agent.run(AnswerTask(), ["q1", "q2", "q3"])
    assert [result.error for result in results] == ["", "http_500", ""]
    assert [result.item_id for result in results] == ["q1", "q2", "q3"]
    assert results[2].output == Answer(answer="q3")


def test_offline_agent_uses_offline_method():
    results = OfflineAgent().run(AnswerTask(), ["dapi", "bad"])
    assert results[0].output == Answer(answer="DAPI")
    assert results[1].error == "offline_failed"
    assert results[1].error_detail == "no answer offline"


def test_make_agent_builds_backends(tmp_path, openai_stub):
    from microvqa_pp.run.rundir import RunDir

    assert isinstance(make_agent(AgentConfig()), OfflineAgent)

    run = RunDir(tmp_path / "run")
    run.create()
    settings = AgentConfig(backend="openai", model="stub-model", base_url=openai_stub.url, temperature=0.5, max_tokens=99)
    agent = make_agent(settings, run, seed=11)
    assert isinstance(agent, LLMAgent)
    assert isinstance(agent.backend, OpenAIBackend)
    assert agent.name == "stub-model"
    assert (agent.temperature, agent.max_tokens, agent.seed) == (0.5, 99, 11)
    assert agent.backend.cache.path == run.cache_dir / "llm.sqlite"
    agent.close()

    uncached = make_agent(settings.model_copy(update={"cache": False}), run)
    assert uncached.backend.cache is None


@pytest.mark.parametrize(
    "text",
    [
        '{"answer": "x"}',
        '  {"answer": "x"}\n',
        'Here you go:\n```json\n{"answer": "x"}\n```',
        '```\n{"answer": "x"}\n```',
        'The answer is {"answer": "x"} as requested {not json}',
        'prefix {"answer": "x with } brace"} suffix',
    ],
)
def test_extract_json_clean_and_noisy(text):
    value = extract_json(text)
    assert value["answer"].startswith("x")


@pytest.mark.parametrize("text", ["", "no json here", '{"answer": "x"', "```json\n{broken}\n```"])
def test_extract_json_broken(text):
    with pytest.raises(ReplyError, match="no valid JSON"):
        extract_json(text)
