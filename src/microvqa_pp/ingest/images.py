"""The run's image store: each image file stored once, named by the SHA-256 of its bytes."""

from __future__ import annotations

import os
from pathlib import Path

from microvqa_pp.run.rundir import RunDir


def image_relative_path(sha256: str, extension: str) -> str:
    """Return the store path of an image relative to the run folder: `images/ab/abcdef....jpg`."""
    return f"images/{sha256[:2]}/{sha256}.{extension}"


def store_image(run: RunDir, sha256: str, extension: str, data: bytes) -> str:
    """Write the image unless it is stored already; return its path relative to the run folder."""
    relative = image_relative_path(sha256, extension)
    target = run.root / relative
    if target.exists():
        return relative

    # Write a temporary file and rename it, so that the store never contains a partial image. The
    # folder is created only when the first write into it fails, which saves a call per image.
    # NOTE: no fsync, which costs more than decoding the image on some disks; after a power
    # failure an image file may be empty. Its name is the SHA-256 of its bytes, so re-hashing the
    # stored files finds such a file.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        handle = open(temporary, "wb")
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = open(temporary, "wb")
    try:
        with handle:
            handle.write(data)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return relative


def image_file(run: RunDir, relative: str) -> Path:
    """Return the absolute path of a stored image."""
    return run.root / relative
