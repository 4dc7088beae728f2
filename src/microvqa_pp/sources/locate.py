"""Expanding SOURCE arguments into shards, parquet files and figure folders, and detecting their kind.

A SOURCE is a local path, a glob (`shards/*.tar`), a brace range (`shards/{000000..000009}.tar`,
also inside URLs), an `https://` URL or an `hf://datasets/OWNER/NAME[@REVISION][/PATH]` URL. A local
folder is a figure folder when it contains a JSONL file, otherwise the tar and parquet files in it.
An `hf://` URL whose path is empty, a folder or a glob (`hf://datasets/OWNER/NAME/data/*.parquet`)
is listed through the Hub API; a whole repository or folder gives its parquet files, or its tar
shards when it has no parquet files.
"""

from __future__ import annotations

import fnmatch
import glob
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from microvqa_pp.errors import SourceError
from microvqa_pp.sources.base import SOURCE_KINDS, SourceLocation
from microvqa_pp.sources.remote import is_url, list_hub_files, parse_hf_url

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)

_BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_BRACE_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000..003}` ranges (zero padding kept) and `{a,b}` lists, left to right as a shell does."""
    matches = [match for match in (_BRACE_RANGE.search(pattern), _BRACE_LIST.search(pattern)) if match]
    if not matches:
        return [pattern]
    match = min(matches, key=lambda found: found.start())
    if match.re is _BRACE_RANGE:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        start, stop = int(first), int(last)
        if stop < start:
            raise SourceError(f"invalid brace range {match.group(0)} in {pattern!r}: the end is before the start")
        options = [str(number).zfill(width) for number in range(start, stop + 1)]
    else:
        options = match.group(1).split(",")
    expanded = []
    for option in options:
        expanded.extend(expand_braces(pattern[: match.start()] + option + pattern[match.end() :]))
    return expanded


def detect_kind(location: str) -> str:
    """Return the reader kind of one expanded location, or raise SourceError."""
    path_part = urlparse(location).path if is_url(location) else location
    suffix = Path(path_part).name.lower()
    if suffix.endswith(SHARD_SUFFIXES):
        return "biomedica"
    if suffix.endswith(PARQUET_SUFFIXES):
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
        if candidate.startswith("hf://"):
            results.extend(_expand_hub(candidate))
            continue
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
                raise SourceError(f"{candidate} contains no .tar shards, .parquet files or JSONL file of captions")
            results.extend(str(member.resolve()) for member in members)
            continue
        results.append(str(path.resolve()))
    return results


def _expand_hub(location: str) -> list[str]:
    """Expand an `hf://` URL naming a repository, a folder or a glob into its data files."""
    hub = parse_hf_url(location)
    name = PurePosixPath(hub.path).name.lower()
    if hub.path and not glob.has_magic(hub.path) and name.endswith(SHARD_SUFFIXES + PARQUET_SUFFIXES):
        return [location]

    if glob.has_magic(hub.path):
        parts = PurePosixPath(hub.path).parts
        fixed = []
        for part in parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        files = list_hub_files(hub.with_path("/".join(fixed)))
        matches = [url for url in files if fnmatch.fnmatchcase(parse_hf_url(url).path, hub.path)]
        if not matches:
            raise SourceError(f"no files in {hub.repo_type}/{hub.repo_id}@{hub.revision} match {hub.path!r}")
        return matches

    files = list_hub_files(location)
    for suffixes in (PARQUET_SUFFIXES, SHARD_SUFFIXES):
        selected = [url for url in files if parse_hf_url(url).path.lower().endswith(suffixes)]
        if selected:
            return selected
    raise SourceError(
        f"{location} contains no .parquet files or .tar shards ({len(files)} files listed); "
        "name the files with a path or a glob, e.g. hf://datasets/OWNER/NAME/data/*.parquet"
    )
