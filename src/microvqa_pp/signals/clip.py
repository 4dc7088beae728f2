"""CLIP image and text embeddings, through open_clip or transformers' `CLIPModel`.

`signals.clip_model` chooses the library: a name starting with `hf-hub:` or `local-dir:` is an
open_clip model (BiomedCLIP is `hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`);
any other name is a transformers CLIP folder or hub id. Both give unit-length vectors, so the
cosine similarity of an image and a text is their dot product. Texts longer than the text
tower's context are truncated by its tokenizer, and counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from functools import cached_property, lru_cache
from typing import Any, Callable

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from microvqa_pp.deps import require
from microvqa_pp.signals.cache import SignalCache, content_key
from microvqa_pp.signals.loading import (
    HF_HUB_PREFIX,
    LOCAL_DIR_PREFIX,
    load_model,
    model_dtype,
    model_identity,
    CachedModel,
    to_device,
)

DECODE_THREADS = min(4, os.cpu_count() or 1)
"""Threads that decode and preprocess images while the model runs."""

CLIP_VERSION = "clip-v1"
"""Version of how vectors are computed here (L2-normalized tower outputs); part of the cache namespace."""


def is_open_clip_name(name: str) -> bool:
    """Return whether `name` selects open_clip (`hf-hub:` or `local-dir:`) rather than transformers."""
    return name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX))


class ClipEncoder(CachedModel, ABC):
    """Image and text towers of a CLIP model, with cached unit-length embeddings."""

    @cached_property
    def namespace(self) -> str:
        return f"{model_identity(self.name)}|{CLIP_VERSION}{self.precision}"

    # What each library implements ----------------------------------------------------------

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Return the number of tokens the text tower reads, special tokens included."""

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Return the side, in pixels, of the square images the image tower reads."""

    @property
    def draft_side(self) -> int:
        """Return the smallest side a JPEG may be decoded at: twice the input side, so the
        preprocessing's own resize still does the final filtering."""
        return 2 * self.image_size

    @abstractmethod
    def preprocess_image(self, image: Any) -> Any:
        """Return the preprocessed pixel tensor (channels, height, width) of one PIL image."""

    def image_batch(self, images: list[Any]) -> Any:
        """Stack preprocessed pixel tensors into one batch."""
        import torch

        return torch.stack(images)

    @abstractmethod
    def text_batch(self, texts: list[str]) -> Any:
        """Return the tokenized, truncated input of a list of texts."""

    @abstractmethod
    def forward_images(self, batch: Any) -> Any:
        """Return unit-length image embeddings of one preprocessed batch."""

    @abstractmethod
    def forward_texts(self, batch: Any) -> Any:
        """Return unit-length text embeddings of one tokenized batch."""

    @abstractmethod
    def token_counts(self, texts: list[str]) -> list[int]:
        """Return each text's token count without truncation, special tokens included."""

    # Cached embedding ------------------------------------------------------------------------

    def embed_images(
        self, image_keys: list[str], open_image: Callable[[int], Any | None], counters: Counter[str]
    ) -> dict[str, np.ndarray]:
        """Return the embeddings of images by content key; `open_image(i)` loads image i.

        Decoding and preprocessing run in threads (PIL releases the GIL) one batch ahead of the
        model, so they overlap with the forward pass. At most two batches of preprocessed images
        are in memory. An image for which `open_image` returns None (unreadable) is left out.
        """
        namespace = f"{self.namespace}|image"
        found = self.cache.get_vectors(namespace, image_keys)
        counters["clip_image_cache_hits"] += sum(1 for key in image_keys if key in found)
        missing = [index for index, key in enumerate(image_keys) if key not in found]
        batches = [missing[start : start + self.batch_size] for start in range(0, len(missing), self.batch_size)]

        def prepare(index: int) -> Any:
            image = open_image(index)
            return None if image is None else self.preprocess_image(image)

        new: dict[str, np.ndarray] = {}
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            pending = [pool.submit(prepare, index) for index in batches[0]] if batches else []
            for number, indices in enumerate(batches):
                prepared = [(index, future.result()) for index, future in zip(indices, pending)]
                if number + 1 < len(batches):
                    pending = [pool.submit(prepare, index) for index in batches[number + 1]]
                prepared = [(index, pixels) for index, pixels in prepared if pixels is not None]
                if not prepared:
                    continue
                vectors = self.forward_images(self.image_batch([pixels for _, pixels in prepared]))
                new.update({image_keys[index]: vector for (index, _), vector in zip(prepared, vectors.float().cpu().numpy())})
        if new:
            self.cache.put_vectors(namespace, new)
        found.update(new)
        return found

    def embed_texts(self, texts: list[str], counters: Counter[str]) -> np.ndarray:
        """Return one unit-length vector per text, from the cache where possible."""
        namespace = f"{self.namespace}|text"
        keys = [content_key(text) for text in texts]
        found = self.cache.get_vectors(namespace, keys)
        counters["clip_text_cache_hits"] += sum(1 for key in keys if key in found)
        missing = {key: text for key, text in zip(keys, texts) if key not in found}
        if missing:
            missing_texts = list(missing.values())
            counters["clip_text_truncated"] += self.count_truncated(missing_texts)
            vectors = []
            for start in range(0, len(missing_texts), self.batch_size):
                batch = self.text_batch(missing_texts[start : start + self.batch_size])
                vectors.append(self.forward_texts(batch).float().cpu().numpy())
            new = dict(zip(missing, np.concatenate(vectors)))
            self.cache.put_vectors(namespace, new)
            found.update(new)
        return np.stack([found[key] for key in keys])

    def count_truncated(self, texts: list[str]) -> int:
        """Count the texts with more tokens than the text tower reads."""
        limit = self.context_length
        # A token covers at least one UTF-8 byte, so shorter texts cannot exceed the limit.
        long_texts = [text for text in texts if len(text.encode("utf-8")) + 2 > limit]
        if not long_texts:
            return 0
        return sum(1 for count in self.token_counts(long_texts) if count > limit)


@lru_cache(maxsize=None)
def _load_open_clip(name: str, device: str, half_precision: bool) -> tuple[Any, Any, Any]:
    import torch

    open_clip = require("open_clip", "clip", "CLIP alignment through open_clip")
    precision = "fp16" if model_dtype(device, half_precision) == torch.float16 else "fp32"
    model, preprocess = open_clip.create_model_from_pretrained(name, device=device, precision=precision)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)


class OpenClipEncoder(ClipEncoder):
    """An open_clip model from `hf-hub:ID` or `local-dir:FOLDER` (e.g. BiomedCLIP)."""

    @cached_property
    def loaded(self) -> tuple[Any, Any, Any]:
        return load_model(
            "open_clip model", self.name, "signals.clip_model", lambda: _load_open_clip(self.name, self.device, self.half_precision)
        )

    @property
    def context_length(self) -> int:
        return int(self.loaded[2].context_length)

    @property
    def image_size(self) -> int:
        size = self.loaded[0].visual.image_size
        return int(max(size) if isinstance(size, (tuple, list)) else size)

    def preprocess_image(self, image: Any) -> Any:
        return self.loaded[1](image)

    def text_batch(self, texts: list[str]) -> Any:
        return self.loaded[2](texts)

    def forward_images(self, batch: Any) -> Any:
        import torch

        model = self.loaded[0]
        dtype = next(model.parameters()).dtype
        with torch.inference_mode():
            return model.encode_image(batch.to(self.device, dtype=dtype), normalize=True)

    def forward_texts(self, batch: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.loaded[0].encode_text(batch.to(self.device), normalize=True)

    def token_counts(self, texts: list[str]) -> list[int]:
        tokenizer = self.loaded[2]
        if hasattr(tokenizer, "tokenizer"):  # open_clip's HFTokenizer wraps a transformers tokenizer
            return [len(ids) for ids in tokenizer.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        if hasattr(tokenizer, "encode"):  # the original CLIP BPE tokenizer; +2 for start and end tokens
            return [len(tokenizer.encode(text)) + 2 for text in texts]
        # NOTE: other open_clip tokenizers (e.g. SigLIP's) expose no untruncated count; none are counted.
        return [0 for _ in texts]


@lru_cache(maxsize=None)
def _load_transformers_clip(name: str, device: str, half_precision: bool) -> tuple[Any, Any, Any]:
    transformers = require("transformers", "ml", "CLIP alignment through transformers")
    model = transformers.CLIPModel.from_pretrained(name, dtype=model_dtype(device, half_precision))
    model.to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    image_processor = transformers.AutoImageProcessor.from_pretrained(name)
    return model, tokenizer, image_processor


class TransformersClipEncoder(ClipEncoder):
    """A transformers `CLIPModel` from a folder or hub id (e.g. `openai/clip-vit-base-patch16`)."""

    @cached_property
    def loaded(self) -> tuple[Any, Any, Any]:
        return load_model(
            "CLIP model", self.name, "signals.clip_model", lambda: _load_transformers_clip(self.name, self.device, self.half_precision)
        )

    @property
    def context_length(self) -> int:
        return int(self.loaded[0].config.text_config.max_position_embeddings)

    @property
    def image_size(self) -> int:
        return int(self.loaded[0].config.vision_config.image_size)

    def preprocess_image(self, image: Any) -> Any:
        return self.loaded[2](images=[image], return_tensors="pt")["pixel_values"][0]

    def text_batch(self, texts: list[str]) -> Any:
        return self.loaded[1](texts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")

    def forward_images(self, batch: Any) -> Any:
        import torch

        model = self.loaded[0]
        with torch.inference_mode():
            output = model.get_image_features(pixel_values=batch.to(self.device, dtype=model.dtype))
            return torch.nn.functional.normalize(_features(output), dim=-1)

    def forward_texts(self, batch: Any) -> Any:
        import torch

        with torch.inference_mode():
            output = self.loaded[0].get_text_features(**to_device(dict(batch), self.device))
            return torch.nn.functional.normalize(_features(output), dim=-1)

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.loaded[1](texts, truncation=False, verbose=False)["input_ids"]]


def _features(output: Any) -> Any:
    """Return the projected embeddings: transformers 5 wraps them as `pooler_output`, 4 returns a tensor."""
    return output if hasattr(output, "dim") else output.pooler_output


def load_clip(name: str, device: str, *, half_precision: bool, batch_size: int, cache: SignalCache) -> ClipEncoder:
    """Return the CLIP encoder for `signals.clip_model`; the model loads on first use."""
    encoder_type = OpenClipEncoder if is_open_clip_name(name) else TransformersClipEncoder
    return encoder_type(name, device, half_precision=half_precision, batch_size=batch_size, cache=cache)
