"""Sentence embeddings of captions and QA statements (sentence-transformers).

The embedder gives the caption-QA text similarity and the `caption` and `qa` embeddings that the
graph uses for its neighbour edges. Texts longer than the model's `max_seq_length` are truncated
by the tokenizer, and counted.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from microvqa_pp.deps import require
from microvqa_pp.signals.cache import SignalCache, content_key
from microvqa_pp.signals.loading import CachedModel, load_model, model_dtype, model_identity, resolve_text_model, to_device

SENTENCE_EMBEDDING_VERSION = "sentence-embedding-v1"
"""Version of how vectors are computed here (L2-normalized `sentence_embedding` output)."""


@lru_cache(maxsize=None)
def _load_sentence_transformer(path: str, device: str, half_precision: bool) -> Any:
    import torch

    sentence_transformers = require("sentence_transformers", "ml", "the sentence embedder")
    model = sentence_transformers.SentenceTransformer(path, device=device)
    if model_dtype(device, half_precision) == torch.float16:
        model.half()
    model.eval()
    return model


class SentenceEmbedder(CachedModel):
    """A sentence-transformers model with cached, L2-normalized embeddings."""

    def __init__(self, name: str, device: str, *, half_precision: bool, batch_size: int, cache: SignalCache):
        super().__init__(name, device, half_precision=half_precision, batch_size=batch_size, cache=cache)
        self.path = resolve_text_model(name)

    @cached_property
    def model(self) -> Any:
        return load_model(
            "sentence embedder",
            self.name,
            "signals.text_model",
            lambda: _load_sentence_transformer(self.path, self.device, self.half_precision),
        )

    @cached_property
    def namespace(self) -> str:
        return f"{model_identity(self.path)}|{SENTENCE_EMBEDDING_VERSION}{self.precision}"

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length or self.model.tokenizer.model_max_length)

    def embed(self, texts: list[str], counters: Counter[str]) -> np.ndarray:
        """Return one unit-length float32 vector per text, from the cache where possible."""
        keys = [content_key(text) for text in texts]
        found = self.cache.get_vectors(self.namespace, keys)
        counters["text_cache_hits"] += sum(1 for key in keys if key in found)
        missing = {key: text for key, text in zip(keys, texts) if key not in found}
        if missing:
            computed = self.compute(list(missing.values()), counters)
            new = dict(zip(missing, computed))
            self.cache.put_vectors(self.namespace, new)
            found.update(new)
        return np.stack([found[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)

    def compute(self, texts: list[str], counters: Counter[str]) -> np.ndarray:
        """Embed texts with the model, longest first so that each batch pads little."""
        counters["text_truncated"] += self.count_truncated(texts)
        vectors: list[np.ndarray | None] = [None] * len(texts)
        for indices, features in self.batches(texts):
            output = self.forward(features).float().cpu().numpy()
            for index, vector in zip(indices, output):
                vectors[index] = vector
        return np.stack(vectors)  # type: ignore[arg-type]

    def batches(self, texts: list[str]) -> list[tuple[list[int], dict[str, Any]]]:
        """Return the tokenized batches of `texts` with the positions they hold in `texts`."""
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        batches = []
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            features = self.model.preprocess([texts[index] for index in indices])
            batches.append((indices, features))
        return batches

    def forward(self, features: dict[str, Any]) -> Any:
        """Run the model on one tokenized batch and return unit-length embeddings."""
        import torch

        with torch.inference_mode():
            output = self.model(to_device(features, self.device))["sentence_embedding"]
            return torch.nn.functional.normalize(output, dim=-1)

    def count_truncated(self, texts: list[str]) -> int:
        """Count the texts with more tokens than the model reads."""
        limit = self.max_length
        # A token covers at least one UTF-8 byte, so shorter texts cannot exceed the limit.
        long_texts = [text for text in texts if len(text.encode("utf-8")) + 2 > limit]
        if not long_texts:
            return 0
        lengths = self.model.tokenizer(long_texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return sum(1 for ids in lengths if len(ids) > limit)
