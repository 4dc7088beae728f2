"""Opening `https://` and `hf://` sources as streams.

`hf://datasets/OWNER/NAME[@REVISION]/PATH` resolves to the Hub's download URL under
`$HF_ENDPOINT` (default https://huggingface.co). `HF_TOKEN`, when set, is sent as a bearer token
to that endpoint only, and never logged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import quote, urlparse

import httpx

from microvqa_pp.errors import SourceError

CHUNK_BYTES = 1 << 20


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "hf://"))


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def resolve_url(location: str) -> str:
    """Turn an `hf://` location into its HTTPS download URL; other URLs are returned unchanged."""
    if not location.startswith("hf://"):
        return location
    path = location.removeprefix("hf://")
    repo_type, _, rest = path.partition("/")
    if repo_type not in ("datasets", "models", "spaces"):
        raise SourceError(f"invalid hf:// URL {location!r}: expected hf://datasets/OWNER/NAME/PATH")
    owner, _, rest = rest.partition("/")
    name_and_revision, _, file_path = rest.partition("/")
    if not owner or not name_and_revision or not file_path:
        raise SourceError(f"invalid hf:// URL {location!r}: expected hf://datasets/OWNER/NAME[@REVISION]/PATH")
    name, _, revision = name_and_revision.partition("@")
    revision = revision or "main"
    prefix = "" if repo_type == "models" else f"{repo_type}/"
    return f"{hf_endpoint()}/{prefix}{owner}/{name}/resolve/{quote(revision, safe='')}/{file_path}"


def auth_headers(url: str) -> dict[str, str]:
    """Return the bearer-token header for the Hub endpoint when HF_TOKEN is set."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        return {}
    if urlparse(url).netloc != urlparse(hf_endpoint()).netloc:
        return {}
    return {"Authorization": f"Bearer {token}"}


class _ResponseStream:
    """A read-only file object over a streamed HTTP response body."""

    def __init__(self, response: httpx.Response):
        self._chunks = response.iter_bytes(CHUNK_BYTES)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._buffer + b"".join(self._chunks)
            self._buffer = b""
            return data
        while len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


@contextmanager
def open_stream(location: str, timeout_s: float = 60.0) -> Iterator[BinaryIO]:
    """Open a local file or a URL for sequential reading."""
    if not is_url(location):
        try:
            handle = open(location, "rb")
        except OSError as error:
            raise SourceError(f"cannot open {location}: {error.strerror}") from error
        with handle:
            yield handle
        return

    url = resolve_url(location)
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
            with client.stream("GET", url, headers=auth_headers(url)) as response:
                _raise_for_status(location, response)
                yield _ResponseStream(response)  # type: ignore[misc]
    except httpx.HTTPError as error:
        raise SourceError(f"failed to download {location}: {type(error).__name__}: {error}") from error


def download(location: str, folder: Path, timeout_s: float = 60.0) -> Path:
    """Download a URL into `folder` once (for readers that need random access) and return the path."""
    url = resolve_url(location)
    name = Path(urlparse(url).path).name or "download"
    import hashlib

    target = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open_stream(location, timeout_s) as stream:
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(handle, "wb") as output:
            shutil.copyfileobj(stream, output, CHUNK_BYTES)
    os.replace(temporary, target)
    return target


def _raise_for_status(location: str, response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    hint = ""
    if response.status_code in (401, 403):
        hint = " (set HF_TOKEN to a token with access to this data set)"
    raise SourceError(f"failed to download {location}: HTTP {response.status_code}{hint}")
