"""Reading `https://` and `hf://` sources: streams, downloads and Hugging Face Hub listings.

`hf://datasets/OWNER/NAME[@REVISION]/PATH` resolves to the Hub's download URL
`$HF_ENDPOINT/datasets/OWNER/NAME/resolve/REVISION/PATH` (`HF_ENDPOINT` defaults to
https://huggingface.co). `HF_TOKEN`, when set, is sent as a bearer token to that endpoint only,
and never logged or stored. A dropped connection or a server error (429, 5xx) is retried with an
HTTP Range request from the byte where the transfer stopped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import quote, unquote, urlparse

import httpx

from microvqa_pp.errors import DownloadError, SourceError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
"""Seconds to wait for a connection or for the next bytes of a response."""
MAX_ATTEMPTS = 5
"""Requests per URL before a transfer fails: the first one and four retries."""
RETRY_BACKOFF_S = 1.0
"""Wait before the first retry; it doubles with each further retry."""
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
HF_REPO_TYPES = ("datasets", "models", "spaces")


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "hf://"))


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@dataclass(frozen=True)
class HubPath:
    """A parsed `hf://REPO_TYPE/OWNER/NAME[@REVISION][/PATH]` location."""

    repo_type: str
    repo_id: str
    revision: str
    path: str

    def with_path(self, path: str) -> str:
        """Return the `hf://` URL of another file in the same repository and revision."""
        revision = "" if self.revision == "main" else "@" + quote(self.revision, safe="")
        return f"hf://{self.repo_type}/{self.repo_id}{revision}/{path}"


def parse_hf_url(location: str) -> HubPath:
    """Parse an `hf://` URL; the path may be empty (the whole repository) or a glob."""
    rest = location.removeprefix("hf://")
    repo_type, _, rest = rest.partition("/")
    owner, _, rest = rest.partition("/")
    name_and_revision, _, path = rest.partition("/")
    if repo_type not in HF_REPO_TYPES or not owner or not name_and_revision:
        raise SourceError(
            f"invalid hf:// URL {location!r}: expected hf://datasets/OWNER/NAME[@REVISION][/PATH]"
        )
    name, _, revision = name_and_revision.partition("@")
    return HubPath(repo_type, f"{owner}/{name}", unquote(revision) or "main", path.strip("/"))


def resolve_url(location: str) -> str:
    """Turn an `hf://` location into its HTTPS download URL; other URLs are returned unchanged."""
    if not location.startswith("hf://"):
        return location
    hub = parse_hf_url(location)
    if not hub.path:
        raise SourceError(f"invalid hf:// URL {location!r}: it names no file")
    prefix = "" if hub.repo_type == "models" else f"{hub.repo_type}/"
    return f"{hf_endpoint()}/{prefix}{hub.repo_id}/resolve/{quote(hub.revision, safe='')}/{hub.path}"


def auth_headers(url: str) -> dict[str, str]:
    """Return the bearer-token header for the Hub endpoint when HF_TOKEN is set."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        return {}
    if urlparse(url).netloc != urlparse(hf_endpoint()).netloc:
        return {}
    return {"Authorization": f"Bearer {token}"}


def list_hub_files(location: str, timeout_s: float = TIMEOUT_S) -> list[str]:
    """List the files of a Hub repository under the path of `location`, as `hf://` URLs.

    Uses the Hub API `GET /api/REPO_TYPE/OWNER/NAME/tree/REVISION/PATH?recursive=true` and
    follows its `Link: <...>; rel="next"` pages. Returns repository paths in sorted order.
    """
    hub = parse_hf_url(location)
    url: str | None = (
        f"{hf_endpoint()}/api/{hub.repo_type}/{hub.repo_id}/tree/{quote(hub.revision, safe='')}"
        + (f"/{hub.path}" if hub.path else "")
    )
    paths: list[str] = []
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        params: dict[str, str] | None = {"recursive": "true"}
        while url:
            response = _request_with_retries(client, location, url, {}, params)
            try:
                response.read()
                entries = response.json()
            except ValueError as error:
                raise SourceError(f"the Hub API returned invalid JSON for {location}: {error}") from error
            finally:
                response.close()
            if not isinstance(entries, list):
                raise SourceError(f"the Hub API returned no file list for {location}: {str(entries)[:200]}")
            paths.extend(entry["path"] for entry in entries if isinstance(entry, dict) and entry.get("type") == "file")
            url = response.links.get("next", {}).get("url")
            params = None  # the next-page URL carries its own query
    return [hub.with_path(path) for path in sorted(paths)]


class HttpStream:
    """A read-only, sequential file object over an HTTP download that resumes after errors."""

    def __init__(self, client: httpx.Client, location: str, url: str):
        self.client = client
        self.location = location
        self.url = url
        self.position = 0
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] = iter(())
        self._buffer = bytearray()
        self._connect()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while size is None or size < 0 or len(self._buffer) < size:
            chunk = self._next_chunk()
            if not chunk:
                break
            self._buffer += chunk
        if size is None or size < 0:
            data, self._buffer = bytes(self._buffer), bytearray()
        else:
            data, self._buffer = bytes(self._buffer[:size]), self._buffer[size:]
        return data

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def _next_chunk(self) -> bytes:
        """Return the next bytes of the body, b'' at its end; reconnect when the transfer breaks."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                chunk = next(self._chunks, b"")
            except httpx.TransportError as error:
                if attempt == MAX_ATTEMPTS:
                    raise DownloadError(
                        f"failed to download {self.location}: the transfer broke at byte "
                        f"{self.position} {MAX_ATTEMPTS} times ({type(error).__name__}: {error})"
                    ) from error
                logger.warning(
                    "transfer of %s broke at byte %d (%s: %s); resuming",
                    self.location,
                    self.position,
                    type(error).__name__,
                    error,
                )
                time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
                self._connect()
                continue
            self.position += len(chunk)
            return chunk
        return b""

    def _connect(self) -> None:
        self.close()
        # Identity encoding: a Range request counts bytes of the encoded body, and `position`
        # counts bytes received, so the two must be the same bytes.
        headers = {"Accept-Encoding": "identity"}
        if self.position:
            headers["Range"] = f"bytes={self.position}-"
        response = _request_with_retries(self.client, self.location, self.url, headers)
        skip = 0
        if self.position and response.status_code == 200:
            skip = self.position  # the server ignored the Range header and sent the whole body
        elif self.position and not response.headers.get("content-range", "").startswith(f"bytes {self.position}-"):
            response.close()
            raise DownloadError(
                f"failed to resume the download of {self.location} at byte {self.position}: "
                f"the server answered Content-Range {response.headers.get('content-range')!r}"
            )
        self._response = response
        self._chunks = response.iter_bytes()  # as received, so a break loses little
        while skip:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            if len(chunk) > skip:
                self._buffer += chunk[skip:]
                self.position += len(chunk) - skip
                skip = 0
            else:
                skip -= len(chunk)


def _request_with_retries(
    client: httpx.Client,
    location: str,
    url: str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """Send a streaming GET and retry connection errors and 429/5xx responses; raise on the others."""
    headers = {**auth_headers(url), **headers}
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            request = client.build_request("GET", url, headers=headers, params=params)
            response = client.send(request, stream=True)
        except httpx.TransportError as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            if response.status_code not in RETRY_STATUS:
                _raise_for_status(location, response)
                return response
            problem = f"HTTP {response.status_code}"
            response.close()
        if attempt == MAX_ATTEMPTS:
            raise DownloadError(f"failed to download {location}: {problem} after {MAX_ATTEMPTS} attempts")
        logger.warning("request for %s failed (%s); retrying", location, problem)
        time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


@contextmanager
def open_stream(location: str, timeout_s: float = TIMEOUT_S) -> Iterator[BinaryIO]:
    """Open a local file or a URL for sequential reading."""
    if not is_url(location):
        try:
            handle = open(location, "rb")
        except OSError as error:
            raise SourceError(f"cannot open {location}: {error.strerror}") from error
        with handle:
            yield handle
        return

    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        stream = HttpStream(client, location, resolve_url(location))
        try:
            yield stream  # type: ignore[misc]
        finally:
            stream.close()


def download(location: str, folder: Path, timeout_s: float = TIMEOUT_S) -> Path:
    """Download a URL into `folder` once (for readers that need random access) and return the path."""
    url = resolve_url(location)
    name = Path(urlparse(url).path).name or "download"
    target = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as output, open_stream(location, timeout_s) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                output.write(chunk)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target


def _raise_for_status(location: str, response: httpx.Response) -> None:
    if response.status_code in (200, 206):
        return
    response.close()
    status = response.status_code
    if status in (401, 403):
        if urlparse(str(response.request.url)).netloc != urlparse(hf_endpoint()).netloc:
            raise SourceError(
                f"access denied to {location}: HTTP {status}. HF_TOKEN is sent only to the Hub "
                f"({hf_endpoint()}, set by HF_ENDPOINT); download the file first or use a URL that "
                "needs no authorization"
            )
        token_state = "HF_TOKEN is set but was not accepted" if os.environ.get("HF_TOKEN") else "HF_TOKEN is not set"
        raise SourceError(
            f"access denied to {location}: HTTP {status} ({token_state}). Set HF_TOKEN to a token "
            "with read access, and for a gated data set accept its terms on its Hub page first"
        )
    if status == 404:
        raise DownloadError(f"not found: {location} (HTTP 404); check the URL, the path and the revision")
    raise DownloadError(f"failed to download {location}: HTTP {status}")
