"""The run folder: manifest, stage outputs, image store, caches and logs.

Layout of a run folder `RUN/`:

    manifest.json               configuration, package versions, stage states and counts
    config.toml                 the resolved configuration, for reading (the manifest is authoritative)
    stages/NAME.parquet         each stage's output, written once the stage is complete
    stages/NAME.rejected.parquet  items the stage did not pass on, with the reason
    stages/NAME.parts/          finished work units of a stage still in progress
    images/ab/abcdef....jpg     figure images, stored once, named by the SHA-256 of their bytes
    cache/                      LLM responses (SQLite) and embeddings
    logs/run.log                the log of every command run on this folder
    export/, report/            the release files and the data-set report
    .lock                       held by the command that is running stages on this folder

Only the main process writes the manifest; workers write their own part files.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Literal

from microvqa_pp import __version__
from microvqa_pp.errors import MicroVQAError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

StageState = Literal["pending", "running", "done", "failed"]

MANIFEST_VERSION = 1
RECORDED_PACKAGES = (
    "microvqa-pp",
    "numpy",
    "pyarrow",
    "pillow",
    "pydantic",
    "httpx",
    "torch",
    "transformers",
    "sentence-transformers",
    "open_clip_torch",
    "torch_geometric",
    "scikit-learn",
    "datasets",
)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    With `fsync=False` the data may still be in the page cache when this returns: a killed
    process leaves a complete file, but a power failure may leave an empty one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            if fsync:
                stream.flush()
                os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the mode a plain open() would.
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    """Write text atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


@functools.cache
def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages that change a run's results."""
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class StageInfo:
    """A stage's entry in the manifest, as `microvqa-pp status` prints it."""

    state: StageState
    count: int
    rejected: dict[str, int]
    output: str
    process_gone: bool = False
    """The stage is recorded as running, but no process has the run folder's lock (it was killed)."""
    changed_upstream: tuple[str, ...] = ()
    """Earlier stages whose output changed after this stage read it: its output is out of date."""

    @property
    def state_text(self) -> str:
        """The state for people: `running (process gone)` for a stage whose process was killed, and
        `done (out of date: generate changed)` for one whose input changed since it ran."""
        if self.process_gone:
            return f"{self.state} (process gone)"
        if self.changed_upstream and self.state == "done":
            return f"{self.state} (out of date: {', '.join(self.changed_upstream)} changed)"
        return self.state


_HELD_LOCKS: dict[str, int] = {}
"""Lock files this process holds, by absolute path, with their open file descriptors."""


class RunDir:
    """A run folder and its manifest."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.stages_dir = self.root / "stages"
        self.images_dir = self.root / "images"
        self.cache_dir = self.root / "cache"
        self.logs_dir = self.root / "logs"
        self.export_dir = self.root / "export"
        self.report_dir = self.root / "report"

    # Paths ---------------------------------------------------------------------------------

    def stage_output(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.parquet"

    def stage_rejected(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.rejected.parquet"

    def stage_parts(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.parts"

    def relative(self, path: Path) -> str:
        """Return `path` relative to the run folder, with forward slashes."""
        return path.relative_to(self.root).as_posix()

    # Manifest ------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def create(self) -> None:
        """Create the folder and an empty manifest, unless a manifest exists already."""
        for folder in (self.root, self.stages_dir, self.images_dir, self.cache_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.exists():
            self.write_manifest(
                {
                    "manifest_version": MANIFEST_VERSION,
                    "tool": "microvqa-pp",
                    "tool_version": __version__,
                    "created_at": _now(),
                    "config": None,
                    "sources": [],
                    "packages": dict(package_versions()),
                    "stages": {},
                    "notes": {},
                    "usage": {},
                }
            )

    def read_manifest(self) -> dict[str, Any]:
        """Read the manifest, raising MicroVQAError when the folder is not a run folder."""
        if not self.exists():
            raise MicroVQAError(
                f"{self.root} is not a run folder (no manifest.json); "
                "create one with `microvqa-pp build SOURCE... --out RUN` or `microvqa-pp ingest`"
            )
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise MicroVQAError(f"corrupt manifest {self.manifest_path}: {error}") from error

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")

    @contextmanager
    def update_manifest(self) -> Iterator[dict[str, Any]]:
        """Read the manifest, let the caller change it, and write it back atomically."""
        manifest = self.read_manifest()
        yield manifest
        self.write_manifest(manifest)

    # Stage states --------------------------------------------------------------------------

    def stage_entry(self, stage: str) -> dict[str, Any]:
        return self.read_manifest().get("stages", {}).get(stage, {})

    def set_stage(self, stage: str, **fields: Any) -> None:
        """Update a stage's manifest entry with `fields`."""
        with self.update_manifest() as manifest:
            entry = manifest.setdefault("stages", {}).setdefault(stage, {"state": "pending"})
            entry.update(fields)
            if fields.get("state") == "running":
                entry["pid"] = os.getpid()
                entry["host"] = socket.gethostname()

    def stage_info(self, stage: str) -> StageInfo:
        entry = self.stage_entry(stage)
        state = entry.get("state", "pending")
        return StageInfo(
            state=state,
            count=int(entry.get("count", 0)),
            rejected=dict(entry.get("rejected", {})),
            output=entry.get("output", self.relative(self.stage_output(stage))),
            process_gone=state == "running" and not self.in_use(),
            changed_upstream=tuple(self.changed_upstream(stage)),
        )

    def changed_upstream(self, stage: str) -> list[str]:
        """Return the earlier stages whose output changed after `stage` read it, directly or through
        a stage between them. A stage that ran before upstream fingerprints were recorded has none."""
        entries = self.read_manifest().get("stages", {})
        changed: list[str] = []
        pending, visited = [stage], {stage}
        while pending:
            reader = pending.pop()
            for name, fingerprint in (entries.get(reader, {}).get("upstream") or {}).items():
                if entries.get(name, {}).get("fingerprint", "") != fingerprint and name not in changed:
                    changed.append(name)
                if name not in visited:
                    visited.add(name)
                    pending.append(name)
        return changed

    def add_note(self, key: str, text: str) -> None:
        """Record a fact about the run that a reader of the data must know (e.g. a missing signal)."""
        with self.update_manifest() as manifest:
            manifest.setdefault("notes", {})[key] = text

    def add_usage(self, key: str, counts: dict[str, int]) -> None:
        """Add request and token counts (e.g. of an LLM backend) to the manifest's totals."""
        with self.update_manifest() as manifest:
            totals = manifest.setdefault("usage", {}).setdefault(key, {})
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value


    # Lock --------------------------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def acquire_lock(self) -> None:
        """Hold the run folder's lock until this process exits, so two commands never run at once.

        Raises MicroVQAError when another process has it. Taking it again in the same process
        is a no-op. The operating system releases the lock when the process ends, also when it is
        killed, so a killed run never leaves a stale lock. Worker processes forked from this one
        inherit it.

        NOTE: the lock is an advisory `flock`; on Windows (no fcntl) it is not taken, and on some
        network file systems it only excludes processes on the same machine.
        """
        key = str(self.lock_path.resolve())
        if fcntl is None or key in _HELD_LOCKS:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode("utf-8", "replace").strip() or "unknown"
            os.close(descriptor)
            raise MicroVQAError(
                f"run folder {self.root} is in use by another microvqa-pp process ({holder}); "
                "wait for it to finish or stop it, then run the command again"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        _HELD_LOCKS[key] = descriptor

    def release_lock(self) -> None:
        """Release the lock taken by `acquire_lock` in this process, if any."""
        descriptor = _HELD_LOCKS.pop(str(self.lock_path.resolve()), None)
        if descriptor is not None:
            os.close(descriptor)

    def in_use(self) -> bool:
        """Return True when a process (this one included) has the run folder's lock."""
        if fcntl is None:
            return True
        if str(self.lock_path.resolve()) in _HELD_LOCKS:
            return True
        if not self.lock_path.exists():
            return False
        descriptor = os.open(self.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)
        return False


def forget_inherited_locks() -> None:
    """Close the lock descriptors a forked worker inherited, so the lock lives only as long as
    the process that took it (a worker left over from a killed command does not keep it)."""
    for descriptor in _HELD_LOCKS.values():
        os.close(descriptor)
    _HELD_LOCKS.clear()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def describe_command() -> str:
    """Return the command line of this process, for the log."""
    return " ".join(sys.argv)
