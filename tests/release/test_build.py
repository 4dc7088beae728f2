"""The main job: `microvqa-pp build` on the bundled sample, twice, gives identical release files."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from microvqa_pp.cli import main
from microvqa_pp.pipeline import STAGES, stage_class

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MISSING = [name for name in STAGES if stage_class(name) is None]


def export_files(export_dir: Path) -> dict[str, bytes]:
    return {path.relative_to(export_dir).as_posix(): path.read_bytes() for path in sorted(export_dir.rglob("*")) if path.is_file()}


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING), reason=f"stages not in this version: {', '.join(MISSING)}")
def test_build_twice_gives_identical_exports(tmp_path):
    sources = [str(EXAMPLES / "biomedica" / "000000.tar"), str(EXAMPLES / "elife-01222"), str(EXAMPLES / "elife-00230")]
    outputs = []
    for name in ("first", "second"):
        result = CliRunner().invoke(main, ["-q", "build", *sources, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)

    first, second = export_files(tmp_path / "first" / "export"), export_files(tmp_path / "second" / "export")
    assert set(first) == set(second)
    assert {"README.md", "data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet", "microvqa/test-00000-of-00001.parquet", "chat/train.jsonl"} <= set(first)
    assert [name for name in first if first[name] != second[name]] == []

    output = outputs[0]
    for stage in STAGES:
        assert f"\n{stage} " in output or output.startswith(f"{stage} ")
    assert f"export: {tmp_path / 'first' / 'export'}" in output
    assert f"data-set card: {tmp_path / 'first' / 'export' / 'README.md'}" in output
    assert f"report: {tmp_path / 'first' / 'report' / 'index.html'}" in output
