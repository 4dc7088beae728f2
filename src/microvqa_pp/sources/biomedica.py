"""Reader for BIOMEDICA webdataset shards: tar files of `KEY.jpg`, `KEY.txt` and `KEY.json`.

The tar is read as a stream (local file or HTTP), so a shard is never loaded whole. Members of one
sample are adjacent in the tar, as webdataset writes them; the key is the member's base name up
to its first dot. A shard that ends early (truncated download, partial copy) yields every sample
before the damage and then one sample carrying the `truncated_shard` error.
"""

from __future__ import annotations

import json
import tarfile
from typing import Iterator

from microvqa_pp.sources.base import RawSample
from microvqa_pp.sources.remote import open_stream

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "tif", "tiff", "webp")
KIND = "biomedica"


def split_member_name(name: str) -> tuple[str, str]:
    """Split `dir/KEY.ext1.ext2` into (`dir/KEY`, `ext1.ext2`), the webdataset convention."""
    folder, _, base = name.rpartition("/")
    key, _, extension = base.partition(".")
    return (f"{folder}/{key}" if folder else key), extension.lower()


def _sample_from_members(key: str, members: dict[str, bytes], source: str) -> RawSample:
    sample = RawSample(key=key, source=source, source_kind=KIND)
    for extension in IMAGE_EXTENSIONS:
        if extension in members:
            sample.image = members[extension]
            sample.extra["image_extension"] = extension
            break
    sample.caption = members.get("txt")
    raw_metadata = members.get("json")
    if raw_metadata is None:
        sample.metadata = None
    else:
        try:
            metadata = json.loads(raw_metadata)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            sample.error = "invalid_metadata"
            sample.error_detail = f"{KIND} json of {key} is not valid JSON: {error}"
        else:
            if isinstance(metadata, dict):
                sample.metadata = metadata
            else:
                sample.error = "invalid_metadata"
                sample.error_detail = f"json of {key} is a {type(metadata).__name__}, expected an object"
    return sample


def read_shard(location: str) -> Iterator[RawSample]:
    """Yield the samples of one shard in tar order."""
    key: str | None = None
    members: dict[str, bytes] = {}
    with open_stream(location) as stream:
        try:
            archive = tarfile.open(fileobj=stream, mode="r|*")
        except tarfile.TarError as error:
            yield RawSample(
                key=location,
                source=location,
                source_kind=KIND,
                error="unreadable_shard",
                error_detail=f"{location} is not a readable tar file: {error}",
            )
            return
        try:
            for member in archive:
                if not member.isfile():
                    continue
                member_key, extension = split_member_name(member.name)
                if key is not None and member_key != key:
                    yield _sample_from_members(key, members, location)
                    members = {}
                key = member_key
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                members[extension] = handle.read()
                if len(members[extension]) != member.size:
                    raise EOFError(f"member {member.name} ends after {len(members[extension])} of {member.size} bytes")
        except (tarfile.TarError, EOFError, OSError) as error:
            damaged_key = key or location
            yield RawSample(
                key=damaged_key,
                source=location,
                source_kind=KIND,
                error="truncated_shard",
                error_detail=f"{location} is damaged at sample {damaged_key}: {error}; "
                "the samples before it were read",
            )
            return
        finally:
            archive.close()
    if key is not None:
        yield _sample_from_members(key, members, location)
