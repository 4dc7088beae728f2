"""Expanding SOURCE arguments into shards, parquet files and figure folders, and detecting their kind.

A SOURCE is a local path, a glob (`shards/*.tar`), a brace range (`shards/{000000..000009}.tar`,
also inside URLs), an `https://` URL or an `hf://datasets/OWNER/NAME[@REVISION]/PATH` URL. A local
folder is a figure folder when it holds a JSONL file, otherwise the tar and parquet files in it.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from urllib.parse import urlparse

from microvqa_pp.errors import SourceError
from microvqa_pp.sources.base import SOURCE_KINDS, SourceLocation
from microvqa_pp.sources.remote import is_url

_BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_BRACE_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000..003}` ranges (zero padding kept) and `{a,b}` lists, left to right."""
    match = _BRACE_RANGE.search(pattern)
    if match:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        start, stop = int(first), int(last)
        if stop < start:
            raise SourceError(f"invalid brace range {match.group(0)} in {pattern!r}: the end is before the start")
        expanded = []
        for number in range(start, stop + 1):
            text = str(number).zfill(width)
            expanded.extend(expand_braces(pattern[: match.start()] + text + pattern[match.end() :]))
        return expanded
    match = _BRACE_LIST.search(pattern)
    if match:
        expanded = []
        for option in match.group(1).split(","):
            expanded.extend(expand_braces(pattern[: match.start()] + option + pattern[match.end() :]))
        return expanded
    return [pattern]


def detect_kind(location: str) -> str:
    """Return the reader kind of one expanded location, or raise SourceError."""
    path_part = urlparse(location).path if is_url(location) else location
    suffix = Path(path_part).name.lower()
    if suffix.endswith((".tar", ".tar.gz", ".tgz")):
        return "biomedica"
    if suffix.endswith(".parquet"):
        return "parquet"
    if not is_url(location) and Path(location).is_dir():
        if any(Path(location).glob("*.jsonl")):
            return "folder"
    raise SourceError(
        f"cannot tell what kind of source {location!r} is: expected a .tar shard, a .parquet "
        "file, or a folder with a JSONL file of captions; force the kind with --source-kind"
    )


def locate_sources(specs: list[str], kind: str = "auto") -> list[SourceLocation]:
    """Expand SOURCE arguments into an ordered list of locations without duplicates."""
    if kind != "auto" and kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source kind {kind!r}; choose one of auto, {', '.join(SOURCE_KINDS)}")
    if not specs:
        raise SourceError("no SOURCE given: name at least one shard, parquet file or figure folder")

    locations: list[SourceLocation] = []
    seen: set[str] = set()
    for spec in specs:
        for expanded in _expand_one(spec):
            if expanded in seen:
                continue
            seen.add(expanded)
            locations.append(SourceLocation(kind=detect_kind(expanded) if kind == "auto" else kind, location=expanded))
    return locations


def _expand_one(spec: str) -> list[str]:
    results: list[str] = []
    for candidate in expand_braces(spec):
        if is_url(candidate):
            results.append(candidate)
            continue
        if glob.has_magic(candidate):
            matches = sorted(glob.glob(candidate))
            if not matches:
                raise SourceError(f"no files match {candidate!r}")
            results.extend(str(Path(match).resolve()) for match in matches)
            continue
        path = Path(candidate)
        if not path.exists():
            raise SourceError(f"source not found: {candidate}")
        if path.is_dir() and not any(path.glob("*.jsonl")):
            members = sorted(p for p in path.iterdir() if p.suffix in (".tar", ".parquet"))
            if not members:
                raise SourceError(f"{candidate} holds no .tar shards, .parquet files or JSONL file of captions")
            results.extend(str(member.resolve()) for member in members)
            continue
        results.append(str(path.resolve()))
    return results
