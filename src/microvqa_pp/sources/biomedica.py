"""Reader for BIOMEDICA webdataset shards: tar files of `KEY.jpg`, `KEY.txt` and `KEY.json`.

The tar is read as a stream (local file or HTTP), so a shard is never loaded whole. Members of one
sample are adjacent in the tar, as webdataset writes them; the key is the member's base name up
to its first dot.

Damage is reported as samples that carry an error, and reading goes on where it can:

- `truncated_shard`: the shard ends early (a cut download or copy). Every sample before the
  damage is yielded, then one error sample with the key of the sample being read.
- `unreadable_member`: a member header is corrupt. The reader skips to the next readable header
  and goes on. When the damage lies inside one sample, that sample gets the error; when it lies
  between two samples, the error sample's key is `SHARD_NAME@BYTE_OFFSET`.
- `member_too_large`: a member larger than MAX_MEMBER_BYTES (it is skipped without reading it).
- `unreadable_shard`: the file is not a tar archive at all.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterator

from microvqa_pp.sources.base import RawSample
from microvqa_pp.sources.remote import open_stream

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "tif", "tiff", "webp")
KIND = "biomedica"
MAX_MEMBER_BYTES = 512 << 20
"""Members larger than this (512 MiB) are skipped unread: no figure image or caption is that big."""


def split_member_name(name: str) -> tuple[str, str]:
    """Split `dir/KEY.ext1.ext2` into (`dir/KEY`, `ext1.ext2`), the webdataset convention."""
    folder, _, base = name.rpartition("/")
    key, _, extension = base.partition(".")
    return (f"{folder}/{key}" if folder else key), extension.lower()


class _ObservedTarInfo(tarfile.TarInfo):
    """A TarInfo that records every header the tar reader could not parse, with its offset.

    The reader runs with `ignore_zeros=True`, so it skips zero and corrupt blocks instead of
    stopping. The recorded events tell a clean end of archive from damage.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as error:
            if tarfile_.offset == 0 and isinstance(error, tarfile.InvalidHeaderError):
                # Not a tar file: stop at once instead of scanning the whole file block by block.
                raise tarfile.ReadError(f"no tar header at the start of the file ({error})") from None
            events: list[tuple[int, str]] = tarfile_.__dict__.setdefault("header_events", [])
            events.append((tarfile_.offset, type(error).__name__))
            raise


@dataclass
class _PendingSample:
    """The members of the sample being read."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    error: str = ""
    error_detail: str = ""


def read_shard(location: str) -> Iterator[RawSample]:
    """Yield the samples of one shard in tar order (see the module docstring for damage)."""
    shard_name = PurePosixPath(location).name
    with open_stream(location) as stream:
        try:
            archive = tarfile.open(fileobj=stream, mode="r|*", ignore_zeros=True, tarinfo=_ObservedTarInfo)
        except tarfile.TarError as error:
            yield _error_sample(location, location, "unreadable_shard", f"{location} is not a readable tar file: {error}")
            return

        pending: _PendingSample | None = None
        seen_events = 0
        try:
            for member in archive:
                events = _events(archive)[seen_events:]
                seen_events += len(events)
                archive.members = []  # the stream reader keeps every header otherwise
                if not member.isfile():
                    continue
                member_key, extension = split_member_name(member.name)

                damage = _damaged_offset(events)
                if damage is not None and pending is not None and pending.key == member_key:
                    pending.error = "unreadable_member"
                    pending.error_detail = (
                        f"a tar header inside sample {member_key} at byte {damage} of {location} is "
                        "corrupt; the member it described is lost"
                    )
                elif damage is not None:
                    if pending is not None:
                        yield _to_sample(pending, location)
                        pending = None
                    yield _error_sample(
                        f"{shard_name}@{damage}",
                        location,
                        "unreadable_member",
                        f"the tar header at byte {damage} of {location} is corrupt; the member it "
                        "described is lost and reading went on at the next readable header",
                    )

                if pending is not None and pending.key != member_key:
                    yield _to_sample(pending, location)
                    pending = None
                if pending is None:
                    pending = _PendingSample(member_key)

                if member.size > MAX_MEMBER_BYTES:
                    pending.error = "member_too_large"
                    pending.error_detail = (
                        f"member {member.name} of {location} is {member.size} bytes, more than "
                        f"{MAX_MEMBER_BYTES}; it was skipped"
                    )
                    continue
                handle = archive.extractfile(member)
                if handle is not None:
                    pending.members[extension] = handle.read()

            end = _end_of_archive(_events(archive)[seen_events:])
        except (tarfile.TarError, EOFError, OSError, ValueError) as error:
            # A cut stream raises here: inside a member's data, or compressed data that stops.
            damaged_key = pending.key if pending is not None else location
            yield _error_sample(
                damaged_key,
                location,
                "truncated_shard",
                f"{location} is damaged at sample {damaged_key} ({type(error).__name__}: {error}); "
                "the samples before it were read",
            )
            return
        finally:
            archive.close()

    if end == "clean":
        if pending is not None:
            yield _to_sample(pending, location)
        return
    if end.startswith("damaged@"):
        # A corrupt header after the last readable member, then the end-of-archive marker: the
        # lost member may belong to the last sample or start a new one, so both are reported.
        damage = end.removeprefix("damaged@")
        if pending is not None:
            yield _to_sample(pending, location)
        yield _error_sample(
            f"{shard_name}@{damage}",
            location,
            "unreadable_member",
            f"the tar header at byte {damage} of {location} is corrupt; the member it described is lost",
        )
        return
    damaged_key = pending.key if pending is not None else location
    yield _error_sample(
        damaged_key,
        location,
        "truncated_shard",
        f"{location} ends without the end-of-archive marker ({end}), so the last sample "
        f"{damaged_key} may be incomplete; the samples before it were read",
    )


def _events(archive: tarfile.TarFile) -> list[tuple[int, str]]:
    return archive.__dict__.get("header_events", [])


def _damaged_offset(events: list[tuple[int, str]]) -> int | None:
    """Return the offset of the first corrupt header among the events before a member, if any."""
    for offset, kind in events:
        if kind == "InvalidHeaderError":
            return offset
    return None


def _end_of_archive(events: list[tuple[int, str]]) -> str:
    """Classify what followed the last member: `clean`, `damaged@OFFSET`, or why it is truncated."""
    if events and events[0][1] == "EOFHeaderError":
        return "clean"  # a zero block, the end-of-archive marker; what follows it does not count
    kinds = [kind for _, kind in events]
    if kinds and kinds[0] == "InvalidHeaderError" and "EOFHeaderError" in kinds:
        first_zero = kinds.index("EOFHeaderError")
        if all(kind == "InvalidHeaderError" for kind in kinds[:first_zero]):
            return f"damaged@{events[0][0]}"
    if not events or events[0][1] == "EmptyHeaderError":
        return "the data stops after the last member"
    if events[0][1] == "TruncatedHeaderError":
        return f"the data stops inside a header at byte {events[0][0]}"
    return f"a corrupt header at byte {events[0][0]}"


def _to_sample(pending: _PendingSample, source: str) -> RawSample:
    sample = RawSample(key=pending.key, source=source, source_kind=KIND)
    if pending.error:
        sample.error = pending.error
        sample.error_detail = pending.error_detail
        return sample

    members = pending.members
    for extension in IMAGE_EXTENSIONS:
        if extension in members:
            sample.image = members[extension]
            sample.extra["image_extension"] = extension
            break
    sample.caption = members.get("txt")
    raw_metadata = members.get("json")
    if raw_metadata is None:
        return sample
    try:
        metadata: Any = json.loads(raw_metadata)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        sample.error = "invalid_metadata"
        sample.error_detail = f"json of {pending.key} is not valid JSON: {error}"
        return sample
    if not isinstance(metadata, dict):
        sample.error = "invalid_metadata"
        sample.error_detail = f"json of {pending.key} is a {type(metadata).__name__}, expected an object"
        return sample
    sample.metadata = metadata
    return sample


def _error_sample(key: str, source: str, reason: str, detail: str) -> RawSample:
    return RawSample(key=key, source=source, source_kind=KIND, error=reason, error_detail=detail)
