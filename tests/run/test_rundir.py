"""The run folder: manifest, notes and usage, and the lock that marks a running command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from microvqa_pp.errors import MicroVQAError
from microvqa_pp.run.rundir import RunDir

SRC = Path(__file__).resolve().parents[2] / "src"

HOLD_LOCK = """
import sys, time
from microvqa_pp.run.rundir import RunDir
RunDir(sys.argv[1]).acquire_lock()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.create()
    return run


@pytest.fixture
def lock_holder(run):
    """Another process holding the run folder's lock; killed at the end."""
    environment = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run.root)], stdout=subprocess.PIPE, env=environment)
    assert process.stdout.readline().strip() == b"locked"
    yield process
    process.kill()
    process.wait()


def test_create_writes_manifest(run):
    manifest = run.read_manifest()

    assert manifest["manifest_version"] == 1
    assert manifest["tool"] == "microvqa-pp"
    assert manifest["stages"] == {}
    assert manifest["packages"]["pyarrow"]
    assert manifest["packages"]["python"].count(".") == 2
    for folder in (run.stages_dir, run.images_dir, run.cache_dir, run.logs_dir):
        assert folder.is_dir()


def test_create_keeps_existing_manifest(run):
    run.add_note("clip", "CLIP was not available")
    run.create()

    assert run.read_manifest()["notes"] == {"clip": "CLIP was not available"}


def test_not_a_run_folder(tmp_path):
    with pytest.raises(MicroVQAError, match="is not a run folder .no manifest.json.; create one with"):
        RunDir(tmp_path).read_manifest()
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(MicroVQAError, match="corrupt manifest"):
        RunDir(tmp_path).read_manifest()


def test_usage_accumulates(run):
    run.add_usage("agent", {"requests": 2, "tokens": 100})
    run.add_usage("agent", {"requests": 1, "tokens": 50})

    assert run.read_manifest()["usage"] == {"agent": {"requests": 3, "tokens": 150}}


def test_stage_info_defaults(run):
    info = run.stage_info("generate")

    assert (info.state, info.count, info.rejected, info.output) == ("pending", 0, {}, "stages/generate.parquet")
    assert info.state_text == "pending"


def test_lock_held_by_other_process(run, lock_holder):
    assert run.in_use()
    with pytest.raises(MicroVQAError, match=rf"in use by another microvqa-pp process \(pid {lock_holder.pid} on "):
        run.acquire_lock()


def test_lock_released_when_holder_is_killed(run, lock_holder):
    run.set_stage("ingest", state="running")
    assert run.stage_info("ingest").state_text == "running"

    lock_holder.send_signal(signal.SIGKILL)
    lock_holder.wait()

    assert not run.in_use()
    info = run.stage_info("ingest")
    assert info.state == "running"
    assert info.process_gone
    assert info.state_text == "running (process gone)"
    run.acquire_lock()
    try:
        assert run.in_use()
        assert run.stage_info("ingest").state_text == "running"
        run.acquire_lock()  # taking it again in the same process is allowed
    finally:
        run.release_lock()
    assert not run.in_use()

