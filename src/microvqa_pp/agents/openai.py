"""A chat backend for OpenAI-compatible servers: vLLM, SGLang, Ollama, OpenAI, OpenRouter.

`OpenAIBackend.complete` is synchronous for its callers. Inside, the requests run concurrently
on an asyncio event loop in a background thread, with `concurrency` requests in flight at most,
so the same backend works from plain code, worker processes and notebooks that already run a
loop. Per request:

- images are sent as base64 data URIs, shrunk so the longer side is at most `max_image_side`;
- a reply found in the response cache is returned without a request;
- 429, 5xx, timeouts and dropped connections are retried up to `max_retries` times with
  exponential back-off and full jitter, waiting at least as long as the server's `Retry-After`;
- a JSON schema is requested through `response_format`. A server that rejects it with HTTP 400
  gets the request again without it. Once such a request succeeds, the backend stops sending the
  schema, and the agent parses JSON out of the reply text instead;
- 401, 403 and 404 raise `BackendError`, because every other request would fail the same way.

The API key is read from the environment variable named by `api_key_env` and only ever placed in
the `Authorization` header. It is not logged, stored in the cache or written to the manifest.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Coroutine, Sequence, TypeVar

from microvqa_pp.agents.base import BackendError, ChatBackend, ChatReply, ChatRequest, ImagePart, Message
from microvqa_pp.agents.cache import ResponseCache, file_sha256, request_key
from microvqa_pp.agents.images import ImageEncodeError, encode_image
from microvqa_pp.config import AgentConfig
from microvqa_pp.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
"""HTTP statuses worth retrying: timeouts, conflicts, rate limits and server errors."""
FATAL_STATUSES = {
    401: "the server rejected the API key",
    403: "the server refused access with this API key",
    404: "the server has no such model or endpoint",
}
LOGGED_REPEATS = 10
"""Retry and failure warnings logged one by one before only every 100th is logged."""


@dataclass
class _Attempt:
    """The outcome of one HTTP request."""

    status: int | None = None
    body: Any = None
    error: str = ""
    detail: str = ""
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        if self.status is None:
            return self.error in ("timeout", "connection_error")
        return self.status in RETRY_STATUSES


class OpenAIBackend(ChatBackend):
    """Chat completions from an OpenAI-compatible server, with retries, a concurrency bound and a cache."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        require_key: bool = False,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        concurrency: int = 8,
        max_image_side: int = 1024,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        structured_output: bool = True,
        cache: ResponseCache | None = None,
    ):
        if not model:
            raise ConfigError(
                "no model name for the OpenAI-compatible backend; pass --model NAME "
                f"(the name the server lists at {base_url.rstrip('/')}/models) or set agent.model"
            )
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"invalid agent base URL {base_url!r}: expected http(s)://HOST[:PORT]/v1")
        if concurrency < 1:
            raise ConfigError(f"agent concurrency must be at least 1, got {concurrency}")

        self.model = model
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.max_image_side = max_image_side
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.structured_output = structured_output
        self.cache = cache

        key = os.environ.get(api_key_env, "")
        if not key and require_key:
            raise ConfigError(
                f"the environment variable {api_key_env} that agent.api_key_env names is not set; "
                "export the API key in it, or set agent.api_key_env to the variable that holds it"
            )
        self.api_key_env = api_key_env
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._digests: dict[tuple[str, int, int], str] = {}
        self._encoded: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._random = random.Random()
        self._repeats: Counter[str] = Counter()
        self._loop_thread = _LoopThread()
        self._client: Any = None
        self._client_pid: int | None = None
        self._semaphore: asyncio.Semaphore | None = None

    @classmethod
    def from_settings(cls, settings: AgentConfig, cache: ResponseCache | None = None) -> "OpenAIBackend":
        """Build the backend that the `agent` settings describe."""
        return cls(
            settings.model,
            settings.base_url,
            api_key_env=settings.api_key_env,
            require_key=settings.api_key_env != AgentConfig.model_fields["api_key_env"].default,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            concurrency=settings.concurrency,
            max_image_side=settings.max_image_side,
            retry_base_s=settings.retry_base_s,
            retry_max_s=settings.retry_max_s,
            structured_output=settings.structured_output,
            cache=cache,
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    # The synchronous interface --------------------------------------------------------------

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        replies: list[ChatReply | None] = [None] * len(requests)
        keys: list[str | None] = [None] * len(requests)
        pending: list[int] = []
        for index, request in enumerate(requests):
            try:
                key = self.request_key(request)
            except OSError as error:
                replies[index] = ChatReply(error="image_unreadable", error_detail=str(error))
                continue
            keys[index] = key
            if self.cache is not None:
                hit = self.cache.get(key)
                if hit is not None:
                    self._count("cache_hits")
                    replies[index] = hit
                    continue
            pending.append(index)

        if pending:
            sent = self._loop_thread.run(self._send_all([(requests[index], keys[index]) for index in pending]))
            for index, reply in zip(pending, sent):
                replies[index] = reply
        return [reply for reply in replies if reply is not None]

    def request_key(self, request: ChatRequest) -> str:
        """Return the cache key of a request (raises OSError when an image cannot be read)."""
        return request_key(self.model, request, self._image_digest, {"max_image_side": self.max_image_side})

    def usage(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    def close(self) -> None:
        if self._loop_thread.alive:
            self._loop_thread.run(self._close_client())
        self._loop_thread.stop()
        if self.cache is not None:
            self.cache.close()

    # Requests on the event loop ---------------------------------------------------------------

    async def _send_all(self, batch: list[tuple[ChatRequest, str | None]]) -> list[ChatReply]:
        self._ensure_client()
        tasks = [asyncio.ensure_future(self._send(request, key)) for request, key in batch]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _ensure_client(self) -> None:
        # A session made before a fork belongs to the parent's event loop and cannot be used here.
        if self._client is not None and self._client_pid == os.getpid():
            return
        # aiohttp rather than httpx: at 32 requests in flight, httpx 0.29 (httpcore 1.0.9) used
        # about 1.8 ms of CPU per request, mostly in its connection pool, and aiohttp about 0.3 ms.
        # On 2 cores that decides whether the client keeps up (see benchmarks/README.md).
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.concurrency)
        self._client = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s), connector=connector
        )
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._client_pid = os.getpid()

    async def _close_client(self) -> None:
        if self._client is not None and self._client_pid == os.getpid():
            await self._client.close()
            self._client = None
            self._semaphore = None

    async def _send(self, request: ChatRequest, key: str | None) -> ChatReply:
        try:
            messages = [await self._render_message(message) for message in request.messages]
        except ImageEncodeError as error:
            return ChatReply(error="image_unreadable", error_detail=str(error))

        use_schema = request.schema is not None and self.structured_output
        schema_rejected = False
        retries = 0
        while True:
            payload = self._payload(request, messages, use_schema)
            assert self._semaphore is not None
            async with self._semaphore:
                attempt = await self._post(payload)

            if attempt.status == 200 and not attempt.error:
                reply = self._reply(attempt.body)
                if schema_rejected and not reply.error and self.structured_output:
                    self.structured_output = False
                    logger.info("%s rejects response_format json_schema; replies are parsed as text from now on", self.base_url)
                if not reply.error and self.cache is not None and key is not None:
                    self.cache.put(key, self.model, request.cache_namespace, reply)
                if reply.error:
                    self._count("failed")
                return reply

            if attempt.status == 400 and use_schema:
                # Structured output is optional: ask again without it and parse the reply text.
                use_schema = False
                schema_rejected = True
                continue

            if attempt.status in FATAL_STATUSES:
                raise BackendError(self._fatal_message(attempt))

            if attempt.retryable and retries < self.max_retries:
                delay = self._backoff(retries, attempt.retry_after)
                retries += 1
                self._count("retries")
                self._warn("retry", "%s (%s); retry %d of %d in %.1f s", attempt.error, attempt.detail, retries, self.max_retries, delay)
                await asyncio.sleep(delay)
                continue

            self._count("failed")
            if attempt.retryable:
                attempt.detail = f"{attempt.detail} (after {retries} retries)"
            self._warn("failure", "request failed: %s (%s)", attempt.error, attempt.detail)
            return ChatReply(error=attempt.error, error_detail=attempt.detail)

    async def _post(self, payload: dict[str, Any]) -> _Attempt:
        import aiohttp

        assert self._client is not None
        self._count("requests")
        try:
            async with self._client.post(f"{self.base_url}/chat/completions", json=payload) as response:
                status = response.status
                headers = response.headers
                data = await response.read()
        except asyncio.TimeoutError:
            return _Attempt(error="timeout", detail=f"no reply within {self.timeout_s:g} s")
        except aiohttp.ClientError as error:
            return _Attempt(error="connection_error", detail=f"{type(error).__name__}: {error}")

        text = data.decode("utf-8", errors="replace")
        if status != 200:
            return _Attempt(status=status, error=f"http_{status}", detail=_error_text(text), retry_after=_retry_after(headers))
        try:
            return _Attempt(status=200, body=json.loads(text))
        except ValueError:
            return _Attempt(status=200, error="invalid_response", detail=f"the reply is not JSON: {text[:200]!r}")

    def _payload(self, request: ChatRequest, messages: list[dict[str, Any]], use_schema: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            payload["seed"] = request.seed
        if use_schema:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": False},
            }
        return payload

    async def _render_message(self, message: Message) -> dict[str, Any]:
        if all(isinstance(part, str) for part in message.content):
            return {"role": message.role, "content": "".join(message.content)}  # type: ignore[arg-type]
        content = []
        for part in message.content:
            if isinstance(part, ImagePart):
                url = await self._image_uri(part.path)
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": part})
        return {"role": message.role, "content": content}

    async def _image_uri(self, path: Path) -> str:
        # Repair requests resend the image of the first request, so recent encodings are kept.
        cache_key = (str(path), self.max_image_side)
        if cache_key in self._encoded:
            self._encoded.move_to_end(cache_key)
            return self._encoded[cache_key]
        loop = asyncio.get_running_loop()
        uri = await loop.run_in_executor(None, encode_image, path, self.max_image_side)
        self._encoded[cache_key] = uri
        while len(self._encoded) > 2 * self.concurrency:
            self._encoded.popitem(last=False)
        return uri

    def _reply(self, body: Any) -> ChatReply:
        try:
            choice = body["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            return ChatReply(error="invalid_response", error_detail=f"no choices[0].message in the reply: {str(body)[:200]}")
        usage = {name: int(value) for name, value in (body.get("usage") or {}).items() if isinstance(value, int)}
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self._count(name, usage.get(name, 0))
        text = message.get("content")
        if not text:
            refusal = message.get("refusal") or ""
            reason = choice.get("finish_reason") or "unknown"
            return ChatReply(error="empty_reply", error_detail=f"the reply has no text (finish_reason {reason}) {refusal}".strip(), usage=usage)
        return ChatReply(text=text, usage=usage)

    # Helpers -----------------------------------------------------------------------------------

    def _backoff(self, retries: int, retry_after: float | None) -> float:
        """Return the wait before retry number `retries` + 1: full jitter, at least `Retry-After`."""
        ceiling = min(self.retry_max_s, self.retry_base_s * 2**retries)
        delay = self._random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_max_s))
        return delay

    def _image_digest(self, path: Path) -> str:
        stat = Path(path).stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_sha256(Path(path))
        return self._digests[key]

    def _fatal_message(self, attempt: _Attempt) -> str:
        assert attempt.status is not None
        reason = FATAL_STATUSES[attempt.status]
        if attempt.status == 404:
            hint = f"check --base-url (usually ending in /v1) and --model {self.model!r}"
        else:
            hint = f"put a valid API key in the environment variable {self.api_key_env}"
        return f"{reason} (HTTP {attempt.status} from {self.base_url}/chat/completions: {attempt.detail}); {hint}"

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += amount

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """Log a warning, but only every 100th one of a kind after the first LOGGED_REPEATS."""
        self._repeats[kind] += 1
        seen = self._repeats[kind]
        if seen <= LOGGED_REPEATS or seen % 100 == 0:
            logger.warning(f"%s: {message}%s", self.model, *args, f" ({seen} so far)" if seen > LOGGED_REPEATS else "")


def _error_text(text: str) -> str:
    """Return the error message of an error response body, or the start of the body."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300].strip() or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300]
        return str(error)[:300]
    return str(body)[:300]


def _retry_after(headers: Any) -> float | None:
    """Return the wait in seconds that `Retry-After` or `retry-after-ms` requests, if any."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class _LoopThread:
    """An asyncio event loop in a daemon thread; `run` waits for a coroutine from any thread.

    A forked worker process gets a fresh loop thread, because threads do not survive a fork.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @property
    def alive(self) -> bool:
        return self._loop is not None and self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if not self.alive:
            self._start()
        assert self._loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="openai-backend-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        self._pid = os.getpid()

    def stop(self) -> None:
        if not self.alive:
            self._loop = None
            return
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None
        self._thread = None
