"""Similarity of each test question and image to the training split.

For every test item, the most similar training item and their similarity: cosine similarity of
embeddings, or `1 - Hamming distance / 64` of perceptual hashes when a run has no image
embeddings. A grouped split should leave lower similarities than a random split of the same
questions, where other questions about the same figure or article fall into training.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from microvqa_pp.records import Embedding, Figure, MCQ
from microvqa_pp.release.grouping import parse_phashes

logger = logging.getLogger(__name__)

BLOCK_ROWS = 1024
"""Query rows per similarity block, which bounds memory to BLOCK_ROWS x reference rows."""


@dataclass
class Representation:
    """Items as vectors for nearest-neighbour search.

    `kind` is `cosine` (rows of `vectors` are L2-normalised, dense or scipy sparse) or `phash`
    (`vectors` contains 64-bit hashes as uint64). `ids` are the item ids in row order and
    `description` names the representation in the report.
    """

    kind: str
    ids: list[str]
    vectors: Any
    description: str

    def __len__(self) -> int:
        return len(self.ids)


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def _similarities(representation: Representation, query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return the dense similarity matrix of query rows against reference rows."""
    vectors = representation.vectors
    if representation.kind == "phash":
        distances = np.bitwise_count(vectors[query][:, None] ^ vectors[reference][None, :])
        return 1.0 - distances.astype(np.float64) / 64.0
    similarities = vectors[query] @ vectors[reference].T
    if hasattr(similarities, "toarray"):
        similarities = similarities.toarray()
    return np.asarray(similarities, dtype=np.float64)


def nearest(representation: Representation, query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, return the position in `reference` of its most similar row and the similarity.

    `query` and `reference` are row indices into the representation. Without reference rows,
    positions are -1 and similarities NaN. Ties go to the earliest reference row.
    """
    positions = np.full(len(query), -1, dtype=np.int64)
    best = np.full(len(query), np.nan)
    if len(reference) == 0:
        return positions, best
    for start in range(0, len(query), BLOCK_ROWS):
        block = _similarities(representation, query[start : start + BLOCK_ROWS], reference)
        positions[start : start + len(block)] = block.argmax(axis=1)
        best[start : start + len(block)] = block.max(axis=1)
    return positions, best


def embedding_representation(embeddings: list[Embedding], kind: str, ids: list[str], preferred_model: str | None) -> Representation | None:
    """Build a cosine representation of `ids` from cached embeddings of one kind, or None.

    When several models embedded the same kind, `preferred_model` wins, else the first model
    in name order. Returns None unless every id has a vector of that model.
    """
    by_model: dict[str, dict[str, list[float]]] = {}
    for embedding in embeddings:
        if embedding.kind == kind:
            by_model.setdefault(embedding.model, {})[embedding.item_id] = embedding.vector
    if not by_model:
        return None
    model = preferred_model if preferred_model in by_model else sorted(by_model)[0]
    vectors = by_model[model]
    missing = [item for item in ids if item not in vectors]
    if missing:
        logger.warning("%d of %d %s items have no %s embedding (first: %s), so the overlap uses a fallback representation", len(missing), len(ids), kind, model, missing[0])
        return None
    matrix = _normalise(np.array([vectors[item] for item in ids], dtype=np.float64))
    return Representation("cosine", list(ids), matrix, f"{kind} embeddings ({model})")


def tfidf_representation(ids: list[str], texts: list[str]) -> Representation:
    """Represent texts by TF-IDF vectors of words and bigrams (a fallback without embeddings)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, norm="l2")
    try:
        matrix = vectorizer.fit_transform(texts).tocsr()
    except ValueError:
        # Every text is empty or a stop word: all similarities are 0.
        from scipy.sparse import csr_matrix

        matrix = csr_matrix((len(texts), 1))
    return Representation("cosine", list(ids), matrix, "TF-IDF of the question text (no question embeddings in this run)")


def phash_representation(figures: list[Figure]) -> Representation:
    """Represent images by their perceptual hashes (a fallback without image embeddings)."""
    values, _ = parse_phashes(figure.phash for figure in figures)
    return Representation("phash", [figure.figure_id for figure in figures], values, "64-bit perceptual hashes (no image embeddings in this run)")


def question_representation(mcqs: list[MCQ], embeddings: list[Embedding], text_model: str | None) -> Representation:
    """Represent each MCQ by its QA's embedding, or by TF-IDF of its question without embeddings."""
    qa_ids = [mcq.qa_id for mcq in mcqs]
    embedded = embedding_representation(embeddings, "qa", qa_ids, text_model)
    if embedded is not None:
        return Representation(embedded.kind, [mcq.mcq_id for mcq in mcqs], embedded.vectors, embedded.description.replace("qa embeddings", "QA embeddings"))
    return tfidf_representation([mcq.mcq_id for mcq in mcqs], [mcq.question for mcq in mcqs])


def image_representation(figures: list[Figure], embeddings: list[Embedding], image_model: str | None) -> Representation:
    """Represent each figure by its image embedding, or by its perceptual hash without embeddings."""
    embedded = embedding_representation(embeddings, "image", [figure.figure_id for figure in figures], image_model)
    return embedded if embedded is not None else phash_representation(figures)


@dataclass
class Overlap:
    """Nearest training neighbours of the test questions of one split."""

    test_mcqs: list[str]
    nearest_question: list[str]
    question_similarity: np.ndarray
    nearest_figure: list[str]
    image_similarity: np.ndarray


def measure_overlap(
    mcq_ids: list[str],
    mcq_figures: list[str],
    is_test: np.ndarray,
    questions: Representation,
    images: Representation,
) -> Overlap:
    """Find, for each test question, the nearest training question and the nearest training image.

    `questions` has one row per MCQ in `mcq_ids` order; `images` one row per figure. A test
    question's image is compared with the images of the training questions' figures.
    """
    test = np.flatnonzero(is_test)
    train = np.flatnonzero(~is_test)
    question_positions, question_similarity = nearest(questions, test, train)

    figure_row = {figure_id: row for row, figure_id in enumerate(images.ids)}
    train_figures = sorted({figure_row[mcq_figures[index]] for index in train})
    train_figure_rows = np.array(train_figures, dtype=np.int64)
    test_figure_rows = np.array([figure_row[mcq_figures[index]] for index in test], dtype=np.int64)
    image_positions, image_similarity = nearest(images, test_figure_rows, train_figure_rows)

    return Overlap(
        test_mcqs=[mcq_ids[index] for index in test],
        nearest_question=[mcq_ids[train[position]] if position >= 0 else "" for position in question_positions],
        question_similarity=question_similarity,
        nearest_figure=[images.ids[train_figure_rows[position]] if position >= 0 else "" for position in image_positions],
        image_similarity=image_similarity,
    )


@dataclass
class OverlapComparison:
    """The overlap of a grouped split beside that of a random split of the same questions."""

    grouped: Overlap
    random: Overlap
    questions: Representation
    images: Representation


def compare_with_random(
    mcqs: list[MCQ],
    figures: list[Figure],
    is_test: np.ndarray,
    embeddings: list[Embedding],
    *,
    seed: int,
    text_model: str | None,
    image_model: str | None,
) -> OverlapComparison:
    """Measure the overlap of the split `is_test` and of a seeded random split with the same test share.

    `figures` must contain the figure of every MCQ.
    """
    questions = question_representation(mcqs, embeddings, text_model)
    images = image_representation(figures, embeddings, image_model)
    mcq_ids = [mcq.mcq_id for mcq in mcqs]
    mcq_figures = [mcq.figure_id for mcq in mcqs]
    grouped = measure_overlap(mcq_ids, mcq_figures, is_test, questions, images)
    share = float(is_test.mean()) if is_test.any() else 0.0
    baseline = measure_overlap(mcq_ids, mcq_figures, random_split(len(mcqs), share, seed), questions, images)
    return OverlapComparison(grouped, baseline, questions, images)


def random_split(count: int, test_share: float, seed: int) -> np.ndarray:
    """Return a test mask that puts `round(test_share * count)` random items in test, ignoring groups.

    At least one item goes to each side when there are two or more.
    """
    test_count = round(test_share * count)
    if count >= 2:
        test_count = min(max(test_count, 1), count - 1)
    chosen = random.Random(seed).sample(range(count), test_count)
    mask = np.zeros(count, dtype=bool)
    mask[chosen] = True
    return mask


def summarise(similarities: np.ndarray, high: float = 0.95) -> dict[str, float | int | None]:
    """Return the count, median, mean and share at or above `high` of finite similarities."""
    values = similarities[np.isfinite(similarities)]
    if len(values) == 0:
        return {"n": 0, "median": None, "mean": None, f"share_ge_{high}": None}
    return {
        "n": int(len(values)),
        "median": round(float(np.median(values)), 4),
        "mean": round(float(values.mean()), 4),
        f"share_ge_{high}": round(float((values >= high).mean()), 4),
    }
