"""Compute every configured signal for a batch of QAs: the engine of the score stage.

`SignalScorer.score` takes figures and their QAs and returns one QASignals record per QA it
could score, the embeddings, rejections (unknown figure, empty QA, unreadable image) and
counters. Models load on first use, once per process (the loaders are memoized), and every
embedding and NLI score goes through the SQLite cache.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from microvqa_pp.agents.cache import file_sha256
from microvqa_pp.config import SignalsConfig
from microvqa_pp.errors import ConfigError
from microvqa_pp.records import QA, Embedding, Figure, QASignals, Rejection
from microvqa_pp.signals.cache import SignalCache
from microvqa_pp.signals.clip import DECODE_THREADS, ClipEncoder, load_clip
from microvqa_pp.signals.lexical import lexical_overlap, span_found
from microvqa_pp.signals.loading import check_device_name, resolve_device
from microvqa_pp.signals.nli import NLIScorer
from microvqa_pp.signals.pixels import PIXEL_DESCRIPTOR, UnreadableImage, open_image, pixel_descriptor
from microvqa_pp.signals.statement import restate
from microvqa_pp.signals.text import SentenceEmbedder

logger = logging.getLogger(__name__)

STAGE = "score"
PIXEL_DRAFT_SIDE = 128
"""JPEGs are decoded at no less than this many pixels a side for the pixel descriptor."""


@dataclass
class ScoredBatch:
    """The outputs of scoring one batch of QAs."""

    signals: list[QASignals] = field(default_factory=list)
    embeddings: list[Embedding] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)


@dataclass
class _Item:
    """A QA that passed the input checks, with its figure and statement."""

    qa: QA
    figure: Figure
    statement: str


def unavailable_signals(settings: SignalsConfig) -> dict[str, str]:
    """Return, per signal that the settings leave out, a note naming what is missing and what replaces it."""
    notes = {}
    if settings.clip_model is None:
        notes["clip"] = (
            "CLIP image-text alignment unavailable (signals.clip_model is not set): clip_image_caption "
            f"and clip_image_qa are empty, and image embeddings are the deterministic {PIXEL_DESCRIPTOR}."
        )
    if settings.nli_model is None:
        notes["nli"] = (
            "NLI entailment unavailable (signals.nli_model is not set): the nli_* columns are empty; "
            "text_similarity, lexical_overlap and span_found are the caption-QA evidence."
        )
    if not settings.judge:
        notes["judge"] = "Agent judge not run (signals.judge is false): judge_score is empty."
    return notes


class SignalScorer:
    """Computes the configured signals for batches of figures and QAs."""

    def __init__(self, settings: SignalsConfig, cache_dir: Path, agent: Any = None):
        check_device_name(settings.device)
        if settings.judge and agent is None:
            raise ConfigError(
                "signals.judge is true but no agent was given; pass an LLM agent, or set signals.judge = false"
            )
        self.settings = settings
        self.agent = agent
        self.cache = SignalCache(cache_dir)

    def __getstate__(self) -> dict[str, Any]:
        # Models stay in the process that loaded them; a copy loads its own on first use.
        return {"settings": self.settings, "agent": self.agent, "cache": self.cache}

    @cached_property
    def device(self) -> str:
        device = resolve_device(self.settings.device)
        logger.info("signals run on %s", device)
        return device

    def _model_options(self) -> dict[str, Any]:
        return {
            "half_precision": self.settings.half_precision,
            "batch_size": self.settings.batch_size,
            "cache": self.cache,
        }

    @cached_property
    def text(self) -> SentenceEmbedder:
        return SentenceEmbedder(self.settings.text_model, self.device, **self._model_options())

    @cached_property
    def nli(self) -> NLIScorer | None:
        if self.settings.nli_model is None:
            return None
        return NLIScorer(self.settings.nli_model, self.device, **self._model_options())

    @cached_property
    def clip(self) -> ClipEncoder | None:
        if self.settings.clip_model is None:
            return None
        return load_clip(self.settings.clip_model, self.device, **self._model_options())

    @property
    def image_model(self) -> str:
        """Return the model name recorded with image embeddings."""
        return self.settings.clip_model or PIXEL_DESCRIPTOR

    # Scoring ---------------------------------------------------------------------------------

    def score(
        self,
        figures: Sequence[Figure],
        qas: Sequence[QA],
        *,
        image_root: Path | None = None,
        embed_figures: Iterable[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ScoredBatch:
        """Score every QA against its figure.

        `image_root` is the folder that relative `image_path`s are relative to (the run folder),
        and `embed_figures` the figure ids whose image and caption embeddings to return (all
        given figures when None). Results are in the order of `qas`, rejected QAs left out.
        """
        batch = ScoredBatch()
        figures_by_id = {figure.figure_id: figure for figure in figures}
        items = self._check_inputs(qas, figures_by_id, batch)

        embedded_ids = list(figures_by_id) if embed_figures is None else [i for i in embed_figures if i in figures_by_id]
        needed_ids = list(dict.fromkeys([*embedded_ids, *(item.figure.figure_id for item in items)]))
        needed = [figures_by_id[figure_id] for figure_id in needed_ids]
        image_vectors, unreadable = self._image_vectors(needed, image_root, batch.counters)
        for figure_id, detail in unreadable.items():
            logger.warning("score: cannot read the image of figure %s: %s", figure_id, detail)
        readable_items = []
        for item in items:
            detail = unreadable.get(item.figure.figure_id)
            if detail is None:
                readable_items.append(item)
            else:
                batch.rejections.append(Rejection(STAGE, item.qa.qa_id, "image_unreadable", detail, item.figure.figure_id))
        items = readable_items

        captions = list(dict.fromkeys(figure.caption for figure in needed if figure.figure_id not in unreadable))
        statements = [item.statement for item in items]
        caption_vectors = dict(zip(captions, self.text.embed(captions, batch.counters))) if captions else {}
        statement_vectors = self.text.embed(statements, batch.counters) if statements else np.zeros((0, 0))

        signals = [self._text_signals(item, caption_vectors, vector) for item, vector in zip(items, statement_vectors)]
        self._add_nli(items, signals, batch.counters)
        self._add_clip(items, signals, image_vectors, batch.counters)
        self._add_judge(items, signals, image_root, batch.counters)
        batch.signals = signals
        batch.counters["qas_scored"] += len(signals)

        for figure_id in embedded_ids:
            if figure_id in unreadable:
                continue
            figure = figures_by_id[figure_id]
            batch.embeddings.append(Embedding("image", figure_id, self.image_model, image_vectors[figure_id].tolist()))
            batch.embeddings.append(Embedding("caption", figure_id, self.settings.text_model, caption_vectors[figure.caption].tolist()))
        for item, vector in zip(items, statement_vectors):
            batch.embeddings.append(Embedding("qa", item.qa.qa_id, self.settings.text_model, vector.tolist()))

        if progress is not None:
            progress(len(qas))
        return batch

    def _check_inputs(self, qas: Sequence[QA], figures_by_id: dict[str, Figure], batch: ScoredBatch) -> list[_Item]:
        """Restate each QA, rejecting those without a known figure or without text."""
        items = []
        for qa in qas:
            figure = figures_by_id.get(qa.figure_id)
            if figure is None:
                batch.rejections.append(Rejection(STAGE, qa.qa_id, "unknown_figure", f"no figure with id {qa.figure_id!r}"))
                continue
            answer = qa.answer.strip() or qa.answer_span.strip()
            if not qa.question.strip() or not answer:
                batch.rejections.append(Rejection(STAGE, qa.qa_id, "empty_qa", "the question or the answer is empty", qa.figure_id))
                continue
            restatement = restate(qa.question, answer)
            batch.counters[f"statement_{restatement.rule}"] += 1
            items.append(_Item(qa, figure, restatement.text))
        return items

    def _image_vectors(
        self, figures: list[Figure], image_root: Path | None, counters: Counter[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Return image vectors by figure id (CLIP, else the pixel descriptor) and the unreadable figures."""
        unreadable: dict[str, str] = {}
        paths: dict[str, Path] = {}
        keys: dict[str, str] = {}
        for figure in figures:
            path = Path(figure.image_path)
            paths[figure.figure_id] = path if path.is_absolute() or image_root is None else image_root / path
            try:
                keys[figure.figure_id] = figure.image_sha256 or file_sha256(paths[figure.figure_id])
            except OSError as error:
                unreadable[figure.figure_id] = f"{type(error).__name__}: {error}"

        readable = [figure.figure_id for figure in figures if figure.figure_id not in unreadable]
        first_with_key = {keys[figure_id]: figure_id for figure_id in reversed(readable)}
        unique_keys = list(first_with_key)

        def open_for(index: int, draft_side: int | None = None) -> Any:
            figure_id = first_with_key[unique_keys[index]]
            try:
                return open_image(paths[figure_id], draft_side=draft_side)
            except UnreadableImage as error:
                unreadable[figure_id] = str(error)
                return None

        if self.clip is not None:
            clip = self.clip
            by_key = clip.embed_images(unique_keys, lambda index: open_for(index, clip.draft_side), counters)
        else:
            by_key = self._pixel_descriptors(unique_keys, lambda index: open_for(index, PIXEL_DRAFT_SIDE), counters)

        vectors = {}
        for figure_id in readable:
            vector = by_key.get(keys[figure_id])
            if vector is None:
                unreadable.setdefault(figure_id, unreadable.get(first_with_key[keys[figure_id]], "the image could not be decoded"))
            else:
                vectors[figure_id] = vector
        return vectors, unreadable

    def _pixel_descriptors(self, keys: list[str], open_for: Callable[[int], Any], counters: Counter[str]) -> dict[str, np.ndarray]:
        found = self.cache.get_vectors(PIXEL_DESCRIPTOR, keys)
        counters["pixel_cache_hits"] += len(found)
        missing = [index for index, key in enumerate(keys) if key not in found]

        def describe(index: int) -> np.ndarray | None:
            image = open_for(index)
            return None if image is None else pixel_descriptor(image)

        new = {}
        # Decoding dominates and PIL releases the GIL, so threads use every core.
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            for start in range(0, len(missing), self.settings.batch_size):
                indices = missing[start : start + self.settings.batch_size]
                for index, vector in zip(indices, pool.map(describe, indices)):
                    if vector is not None:
                        new[keys[index]] = vector
        if new:
            self.cache.put_vectors(PIXEL_DESCRIPTOR, new)
        found.update(new)
        return found

    def _text_signals(self, item: _Item, caption_vectors: dict[str, np.ndarray], statement_vector: np.ndarray) -> QASignals:
        qa, figure = item.qa, item.figure
        return QASignals(
            qa_id=qa.qa_id,
            figure_id=qa.figure_id,
            hypothesis=item.statement,
            text_similarity=float(np.dot(caption_vectors[figure.caption], statement_vector)),
            lexical_overlap=lexical_overlap(item.statement, figure.caption),
            span_found=span_found(qa.answer_span or qa.answer, figure.caption, qa.span_start, qa.span_end),
        )

    def _add_nli(self, items: list[_Item], signals: list[QASignals], counters: Counter[str]) -> None:
        if self.nli is None or not items:
            return
        results = self.nli.score([(item.figure.caption, item.statement) for item in items], counters)
        for record, result in zip(signals, results):
            record.nli_entailment = result.entailment
            record.nli_neutral = result.neutral
            record.nli_contradiction = result.contradiction
            record.nli_window = result.window

    def _add_clip(
        self, items: list[_Item], signals: list[QASignals], image_vectors: dict[str, np.ndarray], counters: Counter[str]
    ) -> None:
        if self.clip is None or not items:
            return
        captions = list(dict.fromkeys(item.figure.caption for item in items))
        caption_vectors = dict(zip(captions, self.clip.embed_texts(captions, counters)))
        statement_vectors = self.clip.embed_texts([item.statement for item in items], counters)
        for record, item, statement_vector in zip(signals, items, statement_vectors):
            image_vector = image_vectors[item.figure.figure_id]
            record.clip_image_caption = float(np.dot(image_vector, caption_vectors[item.figure.caption]))
            record.clip_image_qa = float(np.dot(image_vector, statement_vector))

    def _add_judge(self, items: list[_Item], signals: list[QASignals], image_root: Path | None, counters: Counter[str]) -> None:
        if not self.settings.judge or not items:
            return
        from microvqa_pp.signals.judge import JudgeItem, JudgeTask

        judge_items = []
        for item in items:
            path = Path(item.figure.image_path)
            if not path.is_absolute() and image_root is not None:
                path = image_root / path
            judge_items.append(JudgeItem(item.qa.qa_id, item.qa.question, item.qa.answer, item.statement, item.figure.caption, path))
        results = self.agent.run(JudgeTask(), judge_items)
        counters["judge_requests"] += len(judge_items)
        for record, result in zip(signals, results):
            if result.ok and result.output is not None:
                record.judge_score = result.output.score
                record.judge_reason = result.output.reason
            else:
                counters[f"judge_failed_{result.error}"] += 1
                logger.debug("score: no judge verdict for %s: %s %s", result.item_id, result.error, result.error_detail)



def score_qas(
    figures: list[Figure],
    qas: list[QA],
    settings: SignalsConfig,
    cache_dir: Path,
    agent: Any = None,
    *,
    image_root: Path | None = None,
    rejections: list[Rejection] | None = None,
) -> tuple[list[QASignals], list[Embedding]]:
    """Compute the configured signals for QAs outside a run (a user's data set, corrupted QAs).

    Relative image paths are taken relative to `image_root` (default: the working folder).
    Returns one QASignals per scorable QA, in the order of `qas`, and the image and caption
    embeddings of every figure plus one `qa` embedding per scored QA. A QA that cannot be scored
    (unknown figure, empty question or answer, unreadable image) is left out, logged, and
    appended to `rejections` when a list is given.
    """
    scorer = SignalScorer(settings, cache_dir, agent)
    batch = scorer.score(figures, qas, image_root=image_root)
    if batch.rejections:
        reasons = Counter(rejection.reason for rejection in batch.rejections)
        logger.warning(
            "%d of %d QAs could not be scored (%s)",
            len(batch.rejections),
            len(qas),
            ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common()),
        )
    if rejections is not None:
        rejections.extend(batch.rejections)
    return batch.signals, batch.embeddings
