"""Shared fixtures: paths to the bundled real data, offline model hub, and fresh run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub: loading by hub id must fail fast instead of waiting for a timeout.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def biomedica_shard() -> Path:
    """The bundled BIOMEDICA-layout shard of 15 real figures."""
    return EXAMPLES / "biomedica" / "000000.tar"


@pytest.fixture(scope="session")
def elife_folder() -> Path:
    """The bundled folder of 15 eLife 01222 figures with figures.jsonl."""
    return EXAMPLES / "elife-01222"


@pytest.fixture(scope="session")
def elife_small_folder() -> Path:
    """The bundled folder of 5 eLife 00230 figures."""
    return EXAMPLES / "elife-00230"


@pytest.fixture(scope="session")
def demo_parquet() -> Path:
    """The 15 released MicroVQA++ demo rows (release schema, 1-based correct_index)."""
    return TEST_DATA / "microvqa_pp_demo" / "train-00000-of-00001.parquet"


@pytest.fixture(scope="session")
def microvqa_csv() -> Path:
    """51 MicroVQA-format questions, text only, 0-based correct_index."""
    return TEST_DATA / "microvqa_format" / "demo_dataset.csv"


# The OpenAI-compatible stub server, for every area whose code calls a model ------------------

import sys  # noqa: E402

# Tests import the stub's reply constructors with `from stubs.openai_server import Reply`.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def openai_stub():
    """A running OpenAI-compatible server on 127.0.0.1 with scripted replies (see stubs/openai_server.py)."""
    from stubs.openai_server import OpenAIStub

    with OpenAIStub() as stub:
        yield stub
