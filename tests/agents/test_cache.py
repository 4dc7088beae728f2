"""The SQLite reply cache: keys, reruns without requests, failures, concurrent writers, secrets."""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import replace

from stubs.openai_server import Reply

from microvqa_pp.agents import LLM_CACHE_FILE, make_agent
from microvqa_pp.agents.base import ChatReply, ChatRequest, ImagePart, Message
from microvqa_pp.agents.cache import ResponseCache, file_sha256, request_key
from microvqa_pp.config import AgentConfig
from microvqa_pp.run.rundir import RunDir


def text_request(text: str, **options) -> ChatRequest:
    return ChatRequest(messages=(Message.text("user", text),), cache_namespace="task@1", **options)


def test_rerun_sends_no_requests(openai_stub, make_backend, tmp_path):
    openai_stub.responder = lambda seen: Reply.text(f"reply to {seen.text}")
    requests = [text_request(f"item {number}") for number in range(5)]

    first = make_backend(cache=ResponseCache(tmp_path / "llm.sqlite")).complete(requests)
    assert len(openai_stub.requests) == 5
    assert not any(reply.cached for reply in first)

    backend = make_backend(cache=ResponseCache(tmp_path / "llm.sqlite"))
    second = backend.complete(requests)
    assert len(openai_stub.requests) == 5
    assert [reply.text for reply in second] == [reply.text for reply in first]
    assert all(reply.cached for reply in second)
    assert second[0].usage == first[0].usage
    assert backend.usage() == {"cache_hits": 5}


def test_failures_are_not_cached(openai_stub, make_backend, tmp_path):
    cache = ResponseCache(tmp_path / "llm.sqlite")
    openai_stub.enqueue(Reply.server_error())
    [failed] = make_backend(cache=cache, max_retries=0).complete([text_request("hello")])
    assert failed.error == "http_500"
    assert len(cache) == 0

    [reply] = make_backend(cache=cache).complete([text_request("hello")])
    assert reply.error == ""
    assert len(openai_stub.requests) == 2
    assert len(cache) == 1


def test_key_covers_what_changes_the_reply(tmp_path):
    image = tmp_path / "figure.png"
    image.write_bytes(b"first image bytes")
    base = ChatRequest(messages=(Message("user", (ImagePart(image), "Which stain?")),), cache_namespace="generate_qa@1")

    def key(request: ChatRequest, model: str = "m", max_side: int = 1024) -> str:
        return request_key(model, request, file_sha256, {"max_image_side": max_side})

    original = key(base)
    assert key(replace(base)) == original
    variants = {
        "model": key(base, model="other"),
        "namespace": key(replace(base, cache_namespace="generate_qa@2")),
        "temperature": key(replace(base, temperature=0.7)),
        "max_tokens": key(replace(base, max_tokens=10)),
        "seed": key(replace(base, seed=1)),
        "schema": key(replace(base, schema={"type": "object"})),
        "text": key(replace(base, messages=(Message("user", (ImagePart(image), "Which marker?")),))),
        "max_side": key(base, max_side=512),
    }
    for name, value in variants.items():
        assert value != original, name

    # The image counts by content: a copy elsewhere has the same key, new bytes a new key.
    copy = tmp_path / "copy.png"
    copy.write_bytes(image.read_bytes())
    assert key(replace(base, messages=(Message("user", (ImagePart(copy), "Which stain?")),))) == original
    image.write_bytes(b"other image bytes")
    assert key(base) != original


def _write_entries(path, worker: int, count: int) -> None:
    cache = ResponseCache(path)
    for number in range(count):
        cache.put(f"{worker}-{number}", "m", "ns", ChatReply(text=f"reply {worker} {number}"))
    cache.close()


def test_concurrent_writers(tmp_path):
    path = tmp_path / "llm.sqlite"
    ResponseCache(path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_entries, args=(path, worker, 200)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]

    cache = ResponseCache(path)
    assert len(cache) == 800
    assert cache.get("3-199").text == "reply 3 199"
    assert cache.get("missing") is None


def test_error_reply_is_ignored_by_put(tmp_path):
    cache = ResponseCache(tmp_path / "llm.sqlite")
    cache.put("key", "m", "ns", ChatReply(error="timeout"))
    assert cache.get("key") is None


def test_api_key_absent_from_logs_manifest_and_cache(openai_stub, tmp_path, monkeypatch, caplog):
    secret = "sk-do-not-store-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    run = RunDir(tmp_path / "run")
    run.create()
    openai_stub.enqueue(Reply.rate_limited(retry_after=0), Reply.server_error(), Reply.json({"ok": 1}))
    settings = AgentConfig(backend="openai", model="stub-model", base_url=openai_stub.url, retry_base_s=0.01)

    agent = make_agent(settings, run, seed=0)
    with caplog.at_level(logging.DEBUG):
        results = agent.run(_EchoTask(), ["hello"])
        run.add_usage("test:stub-model", agent.usage())
    agent.close()

    assert results[0].output == '{"ok": 1}'
    assert openai_stub.requests[-1].headers["authorization"] == f"Bearer {secret}"
    assert "retry 1 of 5" in caplog.text
    assert secret not in caplog.text
    assert secret not in run.manifest_path.read_text()
    assert run.read_manifest()["usage"]["test:stub-model"]["requests"] == 3
    cache_files = list(run.cache_dir.iterdir())
    assert run.cache_dir / LLM_CACHE_FILE in cache_files
    for path in cache_files:
        assert secret.encode() not in path.read_bytes()


class _EchoTask:
    """A free-text task: the reply is the output."""

    name = "echo"
    prompt_version = "1"
    output_model = None

    def item_id(self, item):
        return item

    def messages(self, item):
        return [Message.text("user", item)]

    def parse(self, text, item):
        return text

    def json_schema(self):
        return None
