"""The run's image store: each image file stored once, named by the SHA-256 of its bytes."""

from __future__ import annotations

from pathlib import Path

from microvqa_pp.run.rundir import RunDir, atomic_write_bytes


def image_relative_path(sha256: str, extension: str) -> str:
    """Return the store path of an image relative to the run folder: `images/ab/abcdef....jpg`."""
    return f"images/{sha256[:2]}/{sha256}.{extension}"


def store_image(run: RunDir, sha256: str, extension: str, data: bytes) -> str:
    """Write the image unless it is stored already; return its path relative to the run folder."""
    relative = image_relative_path(sha256, extension)
    target = run.root / relative
    if not target.exists():
        # NOTE: no fsync, which costs more than decoding the image on some disks; after a power
        # failure an image file may be empty. Checking sizes against the Figure records finds it.
        atomic_write_bytes(target, data, fsync=False)
    return relative


def image_file(run: RunDir, relative: str) -> Path:
    """Return the absolute path of a stored image."""
    return run.root / relative
