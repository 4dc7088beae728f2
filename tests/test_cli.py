"""The `build`, `ingest` and `status` commands, including a run killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from microvqa_pp.cli import main
from microvqa_pp.run.rundir import RunDir

SRC = Path(__file__).resolve().parent.parent / "src"
STATES = {"done", "running", "failed", "pending"}
TOKEN = "hf_cli_secret_token_9876"


@pytest.fixture(autouse=True)
def restore_log_handlers():
    """Commands add a log file handler to the package logger; remove it after each test."""
    logger = logging.getLogger("microvqa_pp")
    before = list(logger.handlers)
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()


def invoke(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def run_command(*args: str, env: dict | None = None, **options) -> subprocess.CompletedProcess:
    """Run `python -m microvqa_pp ARGS` in a new process, as a user would."""
    environment = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "microvqa_pp", *map(str, args)],
        capture_output=True,
        env=environment,
        timeout=300,
        **options,
    )


def test_ingest_then_status_json(tmp_path, biomedica_shard):
    out = tmp_path / "run"

    result = invoke("ingest", biomedica_shard, "--out", out)
    status = invoke("status", out, "--json")

    assert result.exit_code == 0, result.output
    assert "ingest  done   15" in result.output
    report = json.loads(status.output)
    assert set(report) <= {"stages", "out_of_date", "notes"}
    assert report["stages"]["ingest"] == {"state": "done", "count": 15, "rejected": {}, "output": "stages/ingest.parquet"}
    for name, entry in report["stages"].items():
        assert set(entry) == {"state", "count", "rejected", "output"}, name
        assert entry["state"] in STATES
        assert entry["output"] == f"stages/{name}.parquet"


def test_status_table(tmp_path, damaged_source):
    out = tmp_path / "run"
    invoke("ingest", damaged_source, "--out", out)

    table = invoke("status", out).output.splitlines()

    assert table[0].split() == ["stage", "state", "records", "rejected", "output"]
    assert table[1].split() == ["ingest", "done", "14", "1", "(corrupt_image", "1)", "stages/ingest.parquet"]


@pytest.fixture
def damaged_source(tmp_path, sample_members, write_shard):
    """The sample shard with one image cut in half."""
    samples = [(key, dict(members)) for key, members in sample_members]
    samples[3][1]["jpg"] = samples[3][1]["jpg"][:1000]
    return write_shard(tmp_path / "in" / "000000.tar", samples)


def test_status_shows_killed_stage(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    run.set_stage("ingest", state="running", output="stages/ingest.parquet")

    table = invoke("status", run.root).output
    report = json.loads(invoke("status", run.root, "--json").output)

    assert "ingest    running (process gone)  0" in table
    assert report["stages"]["ingest"]["state"] == "running"


def test_status_of_missing_run(tmp_path):
    result = CliRunner().invoke(main, ["status", str(tmp_path)])

    assert result.exit_code == 1
    assert "is not a run folder" in result.output


def test_missing_source_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "nothing.tar"), "--out", str(tmp_path / "run")])

    assert result.exit_code == 1
    assert result.output.strip() == f"Error: source not found: {tmp_path / 'nothing.tar'}"


def test_build_runs_ingest_and_lists_outputs(tmp_path, biomedica_shard, elife_small_folder):
    out = tmp_path / "run"

    result = invoke("build", biomedica_shard, elife_small_folder, "--out", out, "--limit", "18")

    assert result.exit_code == 0, result.output
    assert RunDir(out).stage_info("ingest").count == 18
    assert f"manifest: {out / 'manifest.json'}" in result.output
    assert "ingest" in result.output.splitlines()[1]


def test_settings_persist_across_commands(tmp_path, elife_small_folder):
    out = tmp_path / "run"
    invoke("ingest", elife_small_folder, "--out", out, "--set", "ingest.chunk_size=2", "--limit", "4")

    invoke("ingest", elife_small_folder, "--out", out)

    manifest = RunDir(out).read_manifest()
    assert manifest["config"]["ingest"]["chunk_size"] == 2
    assert manifest["config"]["limit"] == 4
    assert manifest["stages"]["ingest"]["count"] == 4
    assert tomllib.loads((out / "config.toml").read_text())["ingest"]["chunk_size"] == 2
    assert (out / "config.toml").read_text().splitlines().count("chunk_size = 2") == 1


def test_second_command_on_busy_run_is_refused(tmp_path, biomedica_shard):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from microvqa_pp.run.rundir import RunDir; RunDir({str(out)!r}).acquire_lock(); print('locked', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        result = CliRunner().invoke(main, ["ingest", str(biomedica_shard), "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()

    assert result.exit_code == 1
    assert f"run folder {out} is in use by another microvqa-pp process (pid {holder.pid}" in result.output


@pytest.fixture
def many_shards(tmp_path, sample_members, write_shard, distinct_copy):
    """16 shards of 15 distinct figures each (16 work units), plus one damaged sample."""
    folder = tmp_path / "shards"
    for index in range(16):
        samples = distinct_copy(sample_members, index)
        if index == 5:
            key, members = samples[2]
            samples[2] = (key, {**members, "txt": b""})
        write_shard(folder / f"{index:06d}.tar", samples)
    return folder


def _kill_when_parts_exist(arguments: list, parts_dir: Path, parts: int) -> None:
    """Start the command, SIGKILL its process group once `parts` part files exist."""
    environment = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "microvqa_pp", *map(str, arguments)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = [path for path in parts_dir.glob("*.parquet") if not path.name.endswith(".rejected.parquet")]
            if len(done) >= parts:
                break
            assert process.poll() is None, "the command finished before it could be killed"
            time.sleep(0.01)
        assert process.poll() is None, "the command finished before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL


def test_killed_ingest_resumes_to_same_output(tmp_path, many_shards):
    reference = tmp_path / "reference"
    completed = run_command("ingest", many_shards, "--out", reference)
    assert completed.returncode == 0, completed.stderr.decode()

    out = tmp_path / "killed"
    parts_dir = out / "stages" / "ingest.parts"
    _kill_when_parts_exist(["ingest", many_shards, "--out", out], parts_dir, 3)

    killed = RunDir(out)
    assert killed.stage_info("ingest").state == "running"
    assert not killed.stage_output("ingest").exists()
    assert "running (process gone)" in run_command("status", out).stdout.decode()

    # Kill the resumed run too, later, and finish with two workers.
    _kill_when_parts_exist(["ingest", many_shards, "--out", out], parts_dir, 8)
    completed = run_command("ingest", many_shards, "--out", out, "--workers", "2")
    assert completed.returncode == 0, completed.stderr.decode()
    assert "resuming" in completed.stderr.decode()

    expected = pq.read_table(reference / "stages" / "ingest.parquet").to_pylist()
    actual = pq.read_table(out / "stages" / "ingest.parquet").to_pylist()
    assert [row["figure_id"] for row in actual] == [row["figure_id"] for row in expected]
    assert len({row["figure_id"] for row in actual}) == len(actual) == 239
    assert actual == expected
    assert pq.read_table(out / "stages" / "ingest.rejected.parquet").to_pylist() == pq.read_table(
        reference / "stages" / "ingest.rejected.parquet"
    ).to_pylist()
    reference_entry = RunDir(reference).stage_entry("ingest")
    entry = killed.stage_entry("ingest")
    assert (entry["state"], entry["count"], entry["rejected"], entry["stats"]) == (
        "done",
        reference_entry["count"],
        {"empty_caption": 1},
        reference_entry["stats"],
    )
    assert not parts_dir.exists()


def test_token_never_written(tmp_path, http_server, biomedica_shard):
    shard = http_server.root / "datasets" / "lab" / "gated" / "000000.tar"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(biomedica_shard.read_bytes())
    http_server.token = TOKEN
    out = tmp_path / "run"
    source = "hf://datasets/lab/gated/000000.tar"

    denied = run_command("-v", "ingest", source, "--out", out, env={"HF_ENDPOINT": http_server.url, "HF_TOKEN": ""})
    completed = run_command("-v", "ingest", source, "--out", out, env={"HF_ENDPOINT": http_server.url, "HF_TOKEN": TOKEN})

    assert denied.returncode == 1
    assert f"access denied to {source}: HTTP 401 (HF_TOKEN is not set)" in denied.stderr.decode()
    assert completed.returncode == 0, completed.stderr.decode()
    assert RunDir(out).stage_info("ingest").count == 15
    assert http_server.requests[-1]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    for output in (denied.stdout, denied.stderr, completed.stdout, completed.stderr):
        assert TOKEN.encode() not in output
    written = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name == "run.log" for path in written)
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path


def test_ray_executor_gives_same_output(tmp_path, sample_members, write_shard, distinct_copy):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    shards = tmp_path / "shards"
    for index in range(4):
        write_shard(shards / f"{index:06d}.tar", distinct_copy(sample_members[:6], index))

    local = run_command("ingest", shards, "--out", tmp_path / "local")
    on_ray = run_command("ingest", shards, "--out", tmp_path / "ray", "--executor", "ray", "--workers", "2")

    assert local.returncode == 0, local.stderr.decode()
    assert on_ray.returncode == 0, on_ray.stderr.decode()
    assert "starting Ray (local, 2 CPUs)" in on_ray.stderr.decode()
    expected = pq.read_table(tmp_path / "local" / "stages" / "ingest.parquet").to_pylist()
    assert pq.read_table(tmp_path / "ray" / "stages" / "ingest.parquet").to_pylist() == expected
    assert len(expected) == 24


def test_forced_source_kind_is_remembered(tmp_path, biomedica_shard):
    shard = tmp_path / "shard.bin"
    shard.write_bytes(biomedica_shard.read_bytes())
    out = tmp_path / "run"

    first = invoke("ingest", shard, "--out", out, "--source-kind", "biomedica")
    again = invoke("ingest", shard, "--out", out)

    assert first.exit_code == 0, first.output
    assert again.exit_code == 0, again.output
    assert RunDir(out).read_manifest()["sources"] == [{"kind": "biomedica", "location": str(shard)}]
    assert RunDir(out).stage_info("ingest").count == 15


def test_status_marks_stage_whose_input_changed(tmp_path, elife_small_folder):
    out = tmp_path / "run"
    invoke("ingest", elife_small_folder, "--out", out, "--limit", "4")
    invoke("generate", out)
    assert json.loads(invoke("status", out, "--json").output)["out_of_date"] == {}

    invoke("ingest", elife_small_folder, "--out", out, "--limit", "3")

    report = json.loads(invoke("status", out, "--json").output)
    assert report["out_of_date"] == {"generate": ["ingest"]}
    assert report["stages"]["generate"]["state"] == "done"
    assert "generate  done (out of date: ingest changed)" in invoke("status", out).output


def test_stage_commands_take_no_limit(tmp_path, elife_small_folder):
    out = tmp_path / "run"
    invoke("ingest", elife_small_folder, "--out", out, "--limit", "4")

    result = CliRunner().invoke(main, ["generate", str(out), "--limit", "2"])

    assert result.exit_code == 2
    assert "No such option '--limit'" in result.output
    assert RunDir(out).read_manifest()["config"]["limit"] == 4


def test_stage_command_on_other_folder_leaves_no_files(tmp_path):
    folder = tmp_path / "not-a-run"
    folder.mkdir()

    result = CliRunner().invoke(main, ["generate", str(folder)])

    assert result.exit_code == 1
    assert "is not a run folder" in result.output
    assert list(folder.iterdir()) == []


def test_invalid_setting_creates_no_run_folder(tmp_path, elife_small_folder):
    out = tmp_path / "run"

    result = CliRunner().invoke(main, ["ingest", str(elife_small_folder), "--out", str(out), "--set", "ingest.chunk_size=zero"])

    assert result.exit_code == 1
    assert "ingest.chunk_size" in result.output
    assert not (out / "manifest.json").exists()
    assert not (out / "images").exists()


def test_library_root_logging_adds_no_second_handler():
    # A library that calls logging.info() would otherwise make logging print every record of
    # this package again through a basicConfig handler, debug tracebacks included.
    code = (
        "import logging\n"
        "from microvqa_pp.log import setup_logging\n"
        "setup_logging(0)\n"
        "logging.info('library line')\n"
        "logging.getLogger('microvqa_pp.cli').debug('debug line')\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
