"""The options an evaluation folder is bound to are stored once and compared on every later run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microvqa_pp.errors import ConfigError
from microvqa_pp.evaluation.options import OPTIONS_FILE, check_options, store_options
from microvqa_pp.evaluation.runner import EvalSettings


def settings(**changes) -> dict:
    values = {"model": "m", "agent": "openai", "dataset": "/data/microvqa.parquet", **changes}
    return EvalSettings(**values).defining_options()


def test_stored_options_accept_same_run(tmp_path: Path) -> None:
    store_options(tmp_path, settings(limit=10))

    check_options(tmp_path, settings(limit=10, batch_size=4))

    stored = json.loads((tmp_path / OPTIONS_FILE).read_text())
    assert stored["limit"] == 10
    assert stored["dataset"] == "/data/microvqa.parquet"
    assert "batch_size" not in stored


def test_every_differing_option_named(tmp_path: Path) -> None:
    store_options(tmp_path, settings())

    with pytest.raises(ConfigError) as raised:
        check_options(tmp_path, settings(split="test", max_image_side=512))

    message = str(raised.value)
    assert "--split is not set there but 'test' now" in message
    assert "eval.max_image_side is not set there but 512 now" in message
    assert "--model" not in message


def test_empty_folder_accepts_any_options(tmp_path: Path) -> None:
    check_options(tmp_path / "new", settings())
    assert not (tmp_path / "new").exists()


def test_unreadable_options_file_rejected(tmp_path: Path) -> None:
    (tmp_path / OPTIONS_FILE).write_text("{not json")

    with pytest.raises(ConfigError) as raised:
        check_options(tmp_path, settings())

    assert f"cannot read the options of the evaluation in {tmp_path}" in str(raised.value)
    assert "Pass a new --out folder" in str(raised.value)
