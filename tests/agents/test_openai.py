"""The OpenAI-compatible backend against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import io
import logging

import pytest
from PIL import Image
from stubs.openai_server import Reply

from microvqa_pp.agents.base import BackendError, ChatRequest, ImagePart, Message
from microvqa_pp.agents.openai import OpenAIBackend
from microvqa_pp.config import AgentConfig
from microvqa_pp.errors import ConfigError


def text_request(text: str, **options) -> ChatRequest:
    return ChatRequest(messages=(Message.text("user", text),), **options)


def image_request(text: str, image, **options) -> ChatRequest:
    return ChatRequest(messages=(Message("user", (ImagePart(image), text)),), **options)


def test_request_body_and_reply(openai_stub, make_backend, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    openai_stub.enqueue(Reply.json({"answer": "DAPI"}))
    backend = make_backend()
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}

    [reply] = backend.complete([text_request("Which stain?", temperature=0.3, max_tokens=77, seed=5, schema=schema, schema_name="qa")])

    assert reply.error == ""
    assert reply.text == '{"answer": "DAPI"}'
    assert reply.usage == {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    [seen] = openai_stub.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-test-123"
    assert seen.body["model"] == "stub-model"
    assert seen.body["messages"] == [{"role": "user", "content": "Which stain?"}]
    assert seen.body["temperature"] == 0.3
    assert seen.body["max_tokens"] == 77
    assert seen.body["seed"] == 5
    assert seen.response_format == {"type": "json_schema", "json_schema": {"name": "qa", "schema": schema, "strict": False}}
    assert backend.usage() == {"requests": 1, "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


def test_no_key_sends_no_authorization(openai_stub, make_backend, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_backend().complete([text_request("hello")])
    assert "authorization" not in openai_stub.requests[0].headers


def test_replies_keep_request_order(openai_stub, make_backend):
    openai_stub.latency = 0.01
    openai_stub.responder = lambda seen: Reply.text(seen.text.upper())
    replies = make_backend(concurrency=4).complete([text_request(f"item {number}") for number in range(12)])
    assert [reply.text for reply in replies] == [f"ITEM {number}" for number in range(12)]


def test_concurrency_bound_as_server_sees_it(openai_stub, make_backend):
    openai_stub.latency = 0.05
    replies = make_backend(concurrency=4).complete([text_request(f"item {number}") for number in range(24)])
    assert all(reply.error == "" for reply in replies)
    assert len(openai_stub.requests) == 24
    assert openai_stub.max_concurrency == 4


def test_retries_on_429_and_500(openai_stub, make_backend):
    openai_stub.enqueue(Reply.rate_limited(retry_after=None), Reply.server_error(503), Reply.json({"ok": True}))
    backend = make_backend()
    [reply] = backend.complete([text_request("hello")])
    assert reply.text == '{"ok": true}'
    assert openai_stub.statuses() == [429, 503, 200]
    assert backend.usage()["retries"] == 2
    assert backend.usage()["requests"] == 3


def test_retry_after_is_honoured(openai_stub, make_backend):
    openai_stub.enqueue(Reply.rate_limited(retry_after=1), Reply.json({"ok": True}))
    [reply] = make_backend(retry_base_s=0.001).complete([text_request("hello")])
    assert reply.error == ""
    first, second = openai_stub.requests
    assert second.started - first.finished >= 0.95


def test_retry_after_ms_is_honoured(openai_stub, make_backend):
    openai_stub.enqueue(Reply(status=429, content=None, body={"error": {"message": "slow down"}}, headers={"retry-after-ms": "600"}), Reply())
    make_backend(retry_base_s=0.001).complete([text_request("hello")])
    first, second = openai_stub.requests
    assert second.started - first.finished >= 0.55


def test_timeout_is_retried(openai_stub, make_backend):
    openai_stub.enqueue(Reply.slow(3.0), Reply.json({"ok": True}))
    backend = make_backend(timeout_s=0.3)
    [reply] = backend.complete([text_request("hello")])
    assert reply.text == '{"ok": true}'
    assert len(openai_stub.requests) == 2
    assert backend.usage()["retries"] == 1


def test_dropped_connection_is_retried(openai_stub, make_backend):
    openai_stub.enqueue(Reply.dropped(), Reply.json({"ok": True}))
    [reply] = make_backend().complete([text_request("hello")])
    assert reply.text == '{"ok": true}'
    assert openai_stub.statuses() == [None, 200]


def test_exhausted_retries_become_error_reply(openai_stub, make_backend):
    openai_stub.responder = lambda seen: Reply.server_error() if "bad" in seen.text else Reply.text("fine")
    backend = make_backend(max_retries=2)
    bad, good = backend.complete([text_request("bad"), text_request("good")])
    assert bad.error == "http_500"
    assert "after 2 retries" in bad.error_detail
    assert "The server had an error" in bad.error_detail
    assert good.text == "fine"
    assert sum(1 for seen in openai_stub.requests if seen.text == "bad") == 3
    assert backend.usage()["failed"] == 1


def test_client_error_is_not_retried(openai_stub, make_backend):
    openai_stub.enqueue(Reply.status_code(422, "messages must not be empty"))
    [reply] = make_backend().complete([text_request("hello")])
    assert reply.error == "http_422"
    assert reply.error_detail == "messages must not be empty"
    assert len(openai_stub.requests) == 1


def test_schema_rejection_falls_back_and_is_remembered(openai_stub, make_backend, caplog):
    openai_stub.reject_response_format = True
    openai_stub.responder = lambda seen: Reply.json({"answer": "GFP"})
    backend = make_backend()
    schema = {"type": "object"}

    with caplog.at_level(logging.INFO, logger="microvqa_pp.agents.openai"):
        [first] = backend.complete([text_request("one", schema=schema)])
    [second] = backend.complete([text_request("two", schema=schema)])

    assert first.text == second.text == '{"answer": "GFP"}'
    assert [seen.response_format is not None for seen in openai_stub.requests] == [True, False, False]
    assert openai_stub.statuses() == [400, 200, 200]
    assert backend.structured_output is False
    assert "rejects response_format" in caplog.text


def test_other_400_is_an_error_reply(openai_stub, make_backend):
    openai_stub.responder = lambda seen: Reply.status_code(400, "context length exceeded")
    [reply] = make_backend().complete([text_request("hello", schema={"type": "object"})])
    assert reply.error == "http_400"
    assert reply.error_detail == "context length exceeded"
    # One request with the schema, one without; the flag stays on because the fallback failed too.
    assert len(openai_stub.requests) == 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_fatal_status_raises(openai_stub, make_backend, monkeypatch, status):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    openai_stub.responder = lambda seen: Reply.status_code(status, "denied")
    with pytest.raises(BackendError) as raised:
        make_backend().complete([text_request("hello")])
    assert f"HTTP {status}" in str(raised.value)
    assert "sk-secret-value" not in str(raised.value)
    assert len(openai_stub.requests) == 1


def test_empty_content_is_error_reply(openai_stub, make_backend):
    openai_stub.enqueue(Reply(content=None))
    [reply] = make_backend().complete([text_request("hello")])
    assert reply.error == "empty_reply"


def test_image_sent_as_shrunk_data_uri(openai_stub, make_backend, large_image):
    make_backend(max_image_side=128).complete([image_request("Describe.", large_image)])
    [url] = openai_stub.requests[0].image_urls
    assert url.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        assert max(image.size) == 128
        assert image.size == (128, 64)
    content = openai_stub.requests[0].messages[0]["content"]
    assert [part["type"] for part in content] == ["image_url", "text"]


def test_small_image_sent_unchanged(openai_stub, make_backend, large_image):
    make_backend(max_image_side=1024).complete([image_request("Describe.", large_image)])
    [url] = openai_stub.requests[0].image_urls
    assert base64.b64decode(url.split(",", 1)[1]) == large_image.read_bytes()


def test_unreadable_image_is_error_reply(openai_stub, make_backend, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    missing = tmp_path / "missing.jpg"
    replies = make_backend().complete([image_request("a", corrupt), image_request("b", missing), text_request("c")])
    assert [reply.error for reply in replies] == ["image_unreadable", "image_unreadable", ""]
    assert [seen.text for seen in openai_stub.requests] == ["c"]


def test_settings_need_model_and_named_key(monkeypatch):
    with pytest.raises(ConfigError, match="--model"):
        OpenAIBackend.from_settings(AgentConfig(backend="openai", model=""))
    monkeypatch.delenv("MY_PROVIDER_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_PROVIDER_KEY"):
        OpenAIBackend.from_settings(AgentConfig(backend="openai", model="m", api_key_env="MY_PROVIDER_KEY"))
    with pytest.raises(ConfigError, match="base URL"):
        OpenAIBackend.from_settings(AgentConfig(backend="openai", model="m", base_url="localhost:8000"))


def test_named_key_variable_is_used(openai_stub, monkeypatch):
    monkeypatch.setenv("MY_PROVIDER_KEY", "provider-key")
    settings = AgentConfig(backend="openai", model="m", base_url=openai_stub.url, api_key_env="MY_PROVIDER_KEY")
    backend = OpenAIBackend.from_settings(settings)
    try:
        backend.complete([text_request("hello")])
    finally:
        backend.close()
    assert openai_stub.requests[0].headers["authorization"] == "Bearer provider-key"
    assert "provider-key" not in repr(backend)


def test_stub_reports_responder_errors(openai_stub, make_backend):
    def broken_responder(seen):
        raise KeyError("caption")

    openai_stub.responder = broken_responder
    [reply] = make_backend(max_retries=0).complete([text_request("hello")])
    assert reply.error == "http_500"
    assert "responder raised KeyError" in reply.error_detail
