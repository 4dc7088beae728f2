"""NLI entailment of a QA statement by its caption, with a sequence-classification cross-encoder.

The premise is the caption and the hypothesis the QA restated as a statement. A caption longer
than the model's context is cut into windows of consecutive sentences (overlapping by one
sentence where that fits) that fit beside the hypothesis. Each window is scored, and the pair
takes the probabilities of the window with the highest entailment: a statement supported by one
part of the caption is entailed by the caption. `window` records which one it was.

The model's output columns are read from its `id2label`; the order differs between NLI models
(e.g. contradiction, entailment, neutral for the cross-encoder DeBERTa-v3 models), so it is
never assumed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Mapping

from microvqa_pp.deps import require
from microvqa_pp.signals.cache import content_key
from microvqa_pp.signals.lexical import split_sentences
from microvqa_pp.signals.loading import CachedModel, ModelLoadError, load_model, model_dtype, model_identity, to_device

NLI_VERSION = "nli-sentence-windows-v1"
"""Version of the windowing and aggregation; part of the cache namespace."""

LABELS = ("entailment", "neutral", "contradiction")
_LABEL_ALIASES = {
    "entailment": "entailment",
    "entail": "entailment",
    "entails": "entailment",
    "entailed": "entailment",
    "neutral": "neutral",
    "contradiction": "contradiction",
    "contradict": "contradiction",
    "contradicts": "contradiction",
    "contradictory": "contradiction",
}
MIN_PREMISE_TOKENS = 32
"""Premise tokens kept beside an over-long hypothesis; the hypothesis is truncated instead."""
_UNLIMITED = 100_000  # tokenizers without a limit report a huge model_max_length


@dataclass(frozen=True)
class NLIResult:
    """Probabilities from the caption window with the highest entailment."""

    entailment: float
    neutral: float
    contradiction: float
    window: int


def label_columns(id2label: Mapping[Any, str], model_name: str = "the NLI model") -> dict[str, int]:
    """Map entailment, neutral and contradiction to the model's output columns.

    Raises ModelLoadError when the labels are not exactly those three (under common spellings),
    e.g. for a model whose config has the generic `LABEL_0`, `LABEL_1`, `LABEL_2`.
    """
    columns: dict[str, int] = {}
    for index, label in id2label.items():
        canonical = _LABEL_ALIASES.get(str(label).strip().casefold())
        if canonical is None or canonical in columns:
            columns = {}
            break
        columns[canonical] = int(index)
    if len(id2label) != 3 or set(columns) != set(LABELS):
        found = {int(index): label for index, label in id2label.items()}
        raise ModelLoadError(
            f"cannot map the output labels of {model_name} to entailment, neutral and contradiction: its "
            f"config's id2label is {found}. Use a 3-class NLI model, or set id2label in its config.json "
            "to the label names in the order the model was trained with"
        )
    return columns


def premise_windows(sentence_lengths: list[int], budget: int) -> list[tuple[int, int]]:
    """Group consecutive sentences into windows of at most `budget` tokens.

    Returns (start, end) sentence ranges, end exclusive. A window starts with the last sentence
    of the previous one when that sentence and the next fit together, so a statement that spans
    a sentence boundary is seen whole. A sentence longer than `budget` is a window of its own.
    """
    count = len(sentence_lengths)
    if count == 0:
        return [(0, 0)]
    windows = []
    start = 0
    while True:
        end = start
        total = 0
        while end < count and (end == start or total + sentence_lengths[end] <= budget):
            total += sentence_lengths[end]
            end += 1
        windows.append((start, end))
        if end >= count:
            return windows
        overlap_fits = sentence_lengths[end - 1] + sentence_lengths[end] <= budget
        start = end - 1 if overlap_fits and end - 1 > start else end


@lru_cache(maxsize=None)
def _load_cross_encoder(name: str, device: str, half_precision: bool) -> tuple[Any, Any]:
    transformers = require("transformers", "ml", "the NLI signal")
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(name, dtype=model_dtype(device, half_precision))
    model.to(device).eval()
    return tokenizer, model


@dataclass
class _PairWindow:
    """One (premise window, hypothesis) input to the model."""

    pair: int
    window: int
    premise: str
    hypothesis: str
    tokens: int


class NLIScorer(CachedModel):
    """Cached entailment, neutral and contradiction probabilities for (caption, statement) pairs."""

    @cached_property
    def loaded(self) -> tuple[Any, Any, dict[str, int]]:
        tokenizer, model = load_model(
            "NLI model", self.name, "signals.nli_model", lambda: _load_cross_encoder(self.name, self.device, self.half_precision)
        )
        return tokenizer, model, label_columns(model.config.id2label, repr(self.name))

    @property
    def tokenizer(self) -> Any:
        return self.loaded[0]

    @property
    def model(self) -> Any:
        return self.loaded[1]

    @property
    def columns(self) -> dict[str, int]:
        return self.loaded[2]

    @cached_property
    def namespace(self) -> str:
        return f"{model_identity(self.name)}|{NLI_VERSION}{self.precision}"

    @cached_property
    def max_length(self) -> int:
        """Return the longest input the model takes, in tokens (special tokens included)."""
        limits = [self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", None)]
        limits = [int(limit) for limit in limits if limit and 0 < limit < _UNLIMITED]
        return min(limits) if limits else 512

    def score(self, pairs: list[tuple[str, str]], counters: Counter[str]) -> list[NLIResult]:
        """Return the NLI result of each (caption, statement) pair, from the cache where possible."""
        keys = [content_key(premise, hypothesis) for premise, hypothesis in pairs]
        found = self.cache.get_scores(self.namespace, keys)
        counters["nli_cache_hits"] += sum(1 for key in keys if key in found)
        missing = {key: pair for key, pair in zip(keys, pairs) if key not in found}
        if missing:
            results = self.compute(list(missing.values()), counters)
            new = {key: [result.entailment, result.neutral, result.contradiction, result.window] for key, result in zip(missing, results)}
            self.cache.put_scores(self.namespace, new)
            found.update(new)
        return [NLIResult(*found[key][:3], window=int(found[key][3])) for key in keys]

    def compute(self, pairs: list[tuple[str, str]], counters: Counter[str]) -> list[NLIResult]:
        """Score every window of every pair with the model and keep each pair's best window."""
        inputs = self.windows(pairs, counters)
        counters["nli_windows"] += len(inputs)
        best: list[NLIResult | None] = [None] * len(pairs)
        for batch_inputs, encoded in self.batches(inputs):
            probabilities = self.forward(encoded).tolist()
            for item, row in zip(batch_inputs, probabilities):
                result = NLIResult(
                    entailment=row[self.columns["entailment"]],
                    neutral=row[self.columns["neutral"]],
                    contradiction=row[self.columns["contradiction"]],
                    window=item.window,
                )
                current = best[item.pair]
                if current is None or result.entailment > current.entailment:
                    best[item.pair] = result
        return best  # type: ignore[return-value]

    def windows(self, pairs: list[tuple[str, str]], counters: Counter[str]) -> list[_PairWindow]:
        """Cut each pair's caption into windows that fit beside its statement."""
        captions = list(dict.fromkeys(premise for premise, _ in pairs))
        sentences = {caption: split_sentences(caption) or [caption] for caption in captions}
        unique_sentences = list(dict.fromkeys(sentence for caption in captions for sentence in sentences[caption]))
        hypotheses = list(dict.fromkeys(hypothesis for _, hypothesis in pairs))
        lengths = self._token_counts(unique_sentences + hypotheses)
        special = self.tokenizer.num_special_tokens_to_add(pair=True)

        inputs = []
        for index, (premise, hypothesis) in enumerate(pairs):
            budget = self.max_length - special - lengths[hypothesis]
            if budget < MIN_PREMISE_TOKENS:
                counters["nli_truncated"] += 1
                budget = MIN_PREMISE_TOKENS
            caption_sentences = sentences[premise]
            sentence_lengths = [lengths[sentence] for sentence in caption_sentences]
            for window, (start, end) in enumerate(premise_windows(sentence_lengths, budget)):
                window_tokens = sum(sentence_lengths[start:end])
                if window_tokens > budget:
                    counters["nli_truncated"] += 1
                text = " ".join(caption_sentences[start:end])
                inputs.append(_PairWindow(index, window, text, hypothesis, window_tokens + lengths[hypothesis]))
        return inputs

    def batches(self, inputs: list[_PairWindow]) -> list[tuple[list[_PairWindow], Any]]:
        """Return tokenized batches of model inputs, longest first so that each batch pads little."""
        ordered = sorted(inputs, key=lambda item: -item.tokens)
        batches = []
        for start in range(0, len(ordered), self.batch_size):
            chunk = ordered[start : start + self.batch_size]
            encoded = self.tokenizer(
                [item.premise for item in chunk],
                [item.hypothesis for item in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batches.append((chunk, encoded))
        return batches

    def forward(self, encoded: Any) -> Any:
        """Return the class probabilities (float32, in the model's column order) of one batch."""
        import torch

        with torch.inference_mode():
            logits = self.model(**to_device(dict(encoded), self.device)).logits
            return torch.softmax(logits.float(), dim=-1).cpu()

    def _token_counts(self, texts: list[str]) -> dict[str, int]:
        if not texts:
            return {}
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return {text: len(token_ids) for text, token_ids in zip(texts, ids)}
