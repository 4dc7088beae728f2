"""Fixtures for the agent tests: a backend aimed at the stub, and an image."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from microvqa_pp.agents.openai import OpenAIBackend


@pytest.fixture
def make_backend(openai_stub):
    """Build backends aimed at the stub with fast back-off; closed after the test."""
    backends: list[OpenAIBackend] = []

    def make(**options) -> OpenAIBackend:
        settings = {"retry_base_s": 0.01, "retry_max_s": 2.0, "timeout_s": 5.0, "max_retries": 3}
        settings.update(options)
        backend = OpenAIBackend(settings.pop("model", "stub-model"), openai_stub.url, **settings)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


@pytest.fixture
def large_image(tmp_path) -> Path:
    """A 600 x 300 RGB JPEG with a gradient, so that shrinking it changes its bytes."""
    image = Image.new("RGB", (600, 300))
    image.putdata([(x % 256, y % 256, (x + y) % 256) for y in range(300) for x in range(600)])
    path = tmp_path / "large.jpg"
    image.save(path, quality=95)
    return path
