"""What every source reader yields, and facts parsed from BIOMEDICA sample keys and licences."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SOURCE_KINDS = ("biomedica", "parquet", "folder")


@dataclass(frozen=True)
class SourceLocation:
    """One shard, parquet file or figure folder, with the kind of reader that opens it."""

    kind: str
    location: str
    """A local path or an `https://` / `hf://` URL."""


@dataclass
class RawSample:
    """One figure as a reader found it, before validation.

    The caption stays undecoded bytes so that validation can reject invalid UTF-8 by name. A
    reader that cannot read a sample at all sets `error` to the reason and leaves the rest empty.
    """

    key: str
    source: str
    source_kind: str
    image: bytes | None = None
    caption: bytes | None = None
    metadata: dict[str, Any] | None = None
    has_metadata: bool = True
    """False for sources that never carry BIOMEDICA metadata (folders, plain parquet)."""
    error: str = ""
    error_detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Source-specific fields (licence, DOI, title) for sources without BIOMEDICA metadata."""


_PMCID = re.compile(r"(?:^|-)(PMC\d+)(?:-|$)")
_LICENSE_GROUP_IN_KEY = re.compile(r"filelist_(commercial|noncommercial|other)_")


def clean_text(text: str) -> str:
    """Return `text` as valid UTF-8 text: undecodable bytes and lone surrogates become U+FFFD.

    Keys and fields decoded with `surrogateescape` (tar member names, JSONL lines) may hold lone
    surrogates, which parquet cannot store.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def pmcid_from_key(key: str) -> str:
    """Return the PMC id in a BIOMEDICA key (`{batch}-{PMCID}-{position}-{stem}`), or ''."""
    match = _PMCID.search(key)
    return match.group(1) if match else ""


def license_group_from_key(key: str) -> str:
    """Return `commercial`, `noncommercial` or `other` from a BIOMEDICA key's file-list name, or ''."""
    match = _LICENSE_GROUP_IN_KEY.search(key)
    return match.group(1) if match else ""


def license_group(license_text: str) -> str:
    """Classify a licence string the way BIOMEDICA splits its archive.

    CC0 and CC BY (without NC) are reusable commercially; any NC licence is noncommercial;
    everything else, including an empty string, is `other`.
    """
    text = license_text.strip().upper().replace("_", " ").replace("-", " ")
    if not text:
        return "other"
    if "NC" in text.split() or "NONCOMMERCIAL" in text.replace(" ", ""):
        return "noncommercial"
    if text.startswith("CC0") or text.startswith("CC BY") or "PUBLIC DOMAIN" in text:
        return "commercial"
    return "other"
