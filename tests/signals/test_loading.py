"""Device choice, precision and cache namespaces of the signal models."""

from __future__ import annotations

import pytest
import torch

from microvqa_pp.errors import ConfigError
from microvqa_pp.signals.loading import model_dtype, precision_tag, resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_cuda_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_picks_cpu_without_gpu(no_gpu):
    assert resolve_device("auto") == "cpu"


def test_auto_picks_cuda_first(two_cuda_devices):
    assert resolve_device("auto") == "cuda"


def test_auto_picks_mps_without_cuda(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"


def test_existing_cuda_index_is_kept(two_cuda_devices):
    assert resolve_device("cuda:1") == "cuda:1"


def test_missing_cuda_index_is_refused(two_cuda_devices):
    with pytest.raises(ConfigError, match=r"'cuda:2' but torch sees 2 CUDA device"):
        resolve_device("cuda:2")


def test_cuda_without_cuda_is_refused(no_gpu):
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        resolve_device("cuda")


def test_mps_without_mps_is_refused(no_gpu):
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", ""])
def test_unknown_device_name_is_refused(name):
    with pytest.raises(ConfigError, match="invalid signals.device"):
        resolve_device(name)


@pytest.mark.parametrize(
    ("device", "half", "dtype", "tag"),
    [
        ("cuda", True, torch.float16, "|float16"),
        ("cuda:1", True, torch.float16, "|float16"),
        ("mps", True, torch.float16, "|float16"),
        ("cuda", False, torch.float32, ""),
        ("cpu", True, torch.float32, ""),
        ("cpu", False, torch.float32, ""),
    ],
)
def test_half_precision_only_on_gpu(device, half, dtype, tag):
    assert model_dtype(device, half) == dtype
    assert precision_tag(device, half) == tag


def test_half_precision_values_are_cached_apart(tmp_path):
    from microvqa_pp import models
    from microvqa_pp.signals.cache import SignalCache
    from microvqa_pp.signals.text import SentenceEmbedder

    cache = SignalCache(tmp_path / "signals.sqlite")
    on_cpu = SentenceEmbedder(models.TEXT_EMBEDDER, "cpu", half_precision=True, batch_size=8, cache=cache)
    on_gpu = SentenceEmbedder(models.TEXT_EMBEDDER, "cuda", half_precision=True, batch_size=8, cache=cache)
    assert on_gpu.namespace == on_cpu.namespace + "|float16"
