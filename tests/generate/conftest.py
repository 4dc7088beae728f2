"""Fixtures for stage `generate`: run folders with ingested real figures, and caption helpers."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from microvqa_pp.pipeline import open_run, run_stages
from microvqa_pp.records import Figure
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records
from microvqa_pp.sources import locate_sources

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def ingested_template(tmp_path_factory, elife_small_folder) -> Path:
    """A run folder with the 5 eLife 00230 figures ingested, built once per session."""
    root = tmp_path_factory.mktemp("generate-template") / "run"
    run, config = open_run(str(root), create=True, sources=locate_sources([str(elife_small_folder)]))
    run_stages(["ingest"], run, config)
    return root


@pytest.fixture
def ingested_run(ingested_template, tmp_path) -> RunDir:
    """A fresh copy of the ingested run folder for one test."""
    root = tmp_path / "run"
    shutil.copytree(ingested_template, root)
    return RunDir(root)


@pytest.fixture
def figures(ingested_run) -> list[Figure]:
    return read_records(ingested_run.stage_output("ingest"), Figure)


@pytest.fixture(scope="session")
def bundled_captions() -> list[tuple[str, str]]:
    """(id, caption) of all 35 bundled real figures: 15 BIOMEDICA, 15 + 5 eLife."""
    captions = []
    for folder in ("elife-01222", "elife-00230"):
        for line in (EXAMPLES / folder / "figures.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            captions.append((record["id"], record["caption"]))
    with tarfile.open(EXAMPLES / "biomedica" / "000000.tar") as shard:
        for member in shard.getmembers():
            if member.name.endswith(".txt"):
                captions.append((member.name.removesuffix(".txt"), shard.extractfile(member).read().decode("utf-8")))
    return captions
