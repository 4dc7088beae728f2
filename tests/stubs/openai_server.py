"""A real OpenAI-compatible chat-completions server on 127.0.0.1, with scripted replies.

Tests talk to it over HTTP exactly as the product talks to vLLM or OpenAI, so retries, time-outs,
dropped connections and the concurrency bound are exercised for real. The `openai_stub` fixture in
tests/conftest.py starts one per test and stops it afterwards:

    from stubs.openai_server import Reply

    def test_retry_on_rate_limit(openai_stub):
        openai_stub.enqueue(Reply.rate_limited(retry_after=1), Reply.json({"answer": "DAPI"}))
        backend = OpenAIBackend("stub-model", openai_stub.url, retry_base_s=0.01)
        ...
        assert [seen.status for seen in openai_stub.requests] == [429, 200]

Each request gets the first reply of the queue (`enqueue`), else `responder(request)` when a
responder is set, else `default_reply` (the JSON object `{}`). A responder receives the
`SeenRequest`, so a test can answer from the request's text, e.g. per figure caption.

Replies (constructors of `Reply`): `json` (valid JSON), `text` (any text), `prose` (JSON inside
prose and a code fence), `broken` (truncated JSON), `status` / `rate_limited` (429 with
`Retry-After`) / `server_error` (500), `slow` (answers after a delay, e.g. longer than the client
time-out), `dropped` (closes the socket without a response) and `schema_rejected` (400 for
`response_format`). `reject_response_format=True` answers 400 to every request that has a
`response_format`, like servers without structured output.

What the server saw is in `requests` (one `SeenRequest` per request, in arrival order, with the
parsed body, headers, timestamps and the status sent) and `max_concurrency` (the most requests it
was handling at once). `latency` delays every reply, in seconds.

Run it as a program for benchmarks (prints its URL, serves until killed):

    python tests/stubs/openai_server.py --latency 0.2
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

DEFAULT_USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


@dataclass(frozen=True)
class Reply:
    """One scripted response. `content` is the assistant's text for a 200 reply."""

    status: int = 200
    content: str | None = "{}"
    body: dict[str, Any] | None = None
    """A whole JSON body that replaces the chat-completion body (used for errors)."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering, on top of the server's latency."""
    drop: bool = False
    """Close the connection without sending any response."""
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))

    @classmethod
    def json(cls, value: Any, **options: Any) -> "Reply":
        return cls(content=json.dumps(value), **options)

    @classmethod
    def text(cls, text: str, **options: Any) -> "Reply":
        return cls(content=text, **options)

    @classmethod
    def prose(cls, value: Any) -> "Reply":
        """JSON wrapped in prose and a ```json code fence, as chatty models write it."""
        text = (
            "Sure! Here are the question-answer pairs you asked for.\n\n```json\n"
            f"{json.dumps(value, indent=2)}\n```\n\nLet me know if you need more."
        )
        return cls(content=text)

    @classmethod
    def broken(cls, value: Any | None = None) -> "Reply":
        """The first half of a JSON value, as a reply cut off by the token limit."""
        text = json.dumps(value if value is not None else {"questions": [{"question": "Which stain labels"}]})
        return cls(content=text[: max(1, len(text) // 2)])

    @classmethod
    def status_code(cls, status: int, message: str = "", retry_after: float | str | None = None) -> "Reply":
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {"error": {"message": message or f"stub error {status}", "type": "stub_error", "code": status}}
        return cls(status=status, content=None, body=body, headers=headers)

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = 1) -> "Reply":
        return cls.status_code(429, "Rate limit reached, retry later", retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> "Reply":
        return cls.status_code(status, "The server had an error while processing your request")

    @classmethod
    def schema_rejected(cls) -> "Reply":
        return cls.status_code(400, "response_format of type json_schema is not supported by this model")

    @classmethod
    def slow(cls, seconds: float, then: "Reply | None" = None) -> "Reply":
        return replace(then or cls(), delay=seconds)

    @classmethod
    def dropped(cls) -> "Reply":
        return cls(drop=True, content=None)


@dataclass
class SeenRequest:
    """A request as the server received it, and what it did with it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    started: float
    """`time.monotonic()` when the request was read."""
    finished: float | None = None
    status: int | None = None
    """The status of the reply; None while it is pending, when the connection was dropped on
    purpose, or when writing the reply failed because the client had closed the connection."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages", []))

    @property
    def text(self) -> str:
        """All text parts of all messages, joined by newlines."""
        pieces = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                pieces.append(content)
            elif isinstance(content, list):
                pieces.extend(part.get("text", "") for part in content if part.get("type") == "text")
        return "\n".join(pieces)

    @property
    def image_urls(self) -> list[str]:
        urls = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, list):
                urls.extend(part["image_url"]["url"] for part in content if part.get("type") == "image_url")
        return urls

    @property
    def response_format(self) -> Any:
        return (self.body or {}).get("response_format")


class OpenAIStub:
    """The server; use as a context manager or call `start` and `stop`."""

    def __init__(
        self,
        responder: Callable[[SeenRequest], Reply] | None = None,
        *,
        latency: float = 0.0,
        reject_response_format: bool = False,
        model: str = "stub-model",
        port: int = 0,
    ):
        self.responder = responder
        self.latency = latency
        self.reject_response_format = reject_response_format
        self.model = model
        self.default_reply = Reply()
        self.requests: list[SeenRequest] = []
        self.max_concurrency = 0
        self._queue: deque[Reply] = deque()
        self._in_flight = 0
        self._lock = threading.Condition()
        self._ids = itertools.count()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.stub = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to give a client, ending in /v1."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        """Reply to the next requests with these replies, in order."""
        with self._lock:
            self._queue.extend(replies)

    def statuses(self) -> list[int | None]:
        with self._lock:
            return [seen.status for seen in self.requests]

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> bool:
        """Block until the server has seen at least `count` requests; False on time-out."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def reset(self) -> None:
        """Forget the requests seen so far and the concurrency maximum."""
        with self._lock:
            self.requests = []
            self.max_concurrency = 0

    def start(self) -> "OpenAIStub":
        # A short poll interval makes `stop` return within 20 ms instead of the default 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        # Wake replies that are still waiting out a delay, so no handler outlives the test.
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # Called by the handler threads --------------------------------------------------------------

    def _begin(self, seen: SeenRequest, fixed: Reply | None = None) -> Reply:
        with self._lock:
            self.requests.append(seen)
            self._in_flight += 1
            self.max_concurrency = max(self.max_concurrency, self._in_flight)
            self._lock.notify_all()
            if fixed is not None:
                return fixed
            if self._queue:
                return self._queue.popleft()
        if self.reject_response_format and seen.response_format is not None:
            return Reply.schema_rejected()
        if self.responder is not None:
            try:
                return self.responder(seen)
            except Exception as error:  # a bug in a test's responder must show, not hang the client
                return Reply.status_code(500, f"the stub's responder raised {type(error).__name__}: {error}")
        return self.default_reply

    def _end(self, seen: SeenRequest, status: int | None) -> None:
        with self._lock:
            self._in_flight -= 1
            seen.finished = time.monotonic()
            seen.status = status

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _completion(self, seen: SeenRequest, reply: Reply) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-stub-{seen.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (seen.body or {}).get("model", self.model),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply.content}, "finish_reason": "stop"}
            ],
            "usage": reply.usage,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # A burst of concurrent clients must not overflow the listen backlog (the default is 5).
    request_queue_size = 256
    stub: OpenAIStub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes. With Nagle's algorithm on, the body would wait
    # for the client's delayed ACK (40 ms on Linux), which adds to every scripted latency.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            stub = self.server.stub
            self._send_json(200, {"object": "list", "data": [{"id": stub.model, "object": "model", "owned_by": "stub"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        seen = SeenRequest(
            index=next(stub._ids),
            method="POST",
            path=self.path,
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
            started=time.monotonic(),
        )
        if self.path.rstrip("/").endswith("/chat/completions"):
            reply = stub._begin(seen)
        else:
            reply = stub._begin(seen, Reply.status_code(404, f"no route {self.path}"))

        # The request stops counting as in flight just before its reply is written: a client
        # can only send its next request after that, so `max_concurrency` never over-counts.
        stub._wait(stub.latency + reply.delay)
        if reply.drop:
            stub._end(seen, None)
            self.close_connection = True
            return
        payload = reply.body if reply.body is not None else stub._completion(seen, reply)
        stub._end(seen, reply.status)
        try:
            self._send_json(reply.status, payload, reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (its time-out); nothing reached it.
            with stub._lock:
                seen.status = None
            self.close_connection = True

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve OpenAI-compatible chat completions that reply '{}' after a fixed latency.")
    parser.add_argument("--latency", type=float, default=0.2, help="Seconds before each reply.")
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0 picks a free one).")
    arguments = parser.parse_args()
    stub = OpenAIStub(latency=arguments.latency, port=arguments.port)
    print(stub.url, flush=True)
    try:
        stub._server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
