"""Bloom's taxonomy levels of questions: by the agent, or by an offline classifier.

The offline classifier is a logistic regression on sentence embeddings (or TF-IDF features) of
the text "Question stem: ...\\nCorrect answer: ...", trained on the 127 expert-labelled MicroVQA
questions shipped in `microvqa_pp/data/blooms_train.jsonl`. Its cross-validated accuracy and
macro-F1 against the majority-class baseline are measured by `benchmarks/blooms.py`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from microvqa_pp.agents.base import AgentTask, Message, ReplyError
from microvqa_pp.agents.prompts import load_prompt
from microvqa_pp.deps import require
from microvqa_pp.mcq.embedding import SentenceEmbedder

logger = logging.getLogger(__name__)

LEVEL_NAMES: dict[int, str] = {
    1: "Recall",
    2: "Comprehension",
    3: "Application",
    4: "Analysis",
    5: "Synthesis/Evaluation",
    6: "Create",
}
"""Bloom's revised taxonomy levels as MicroVQA uses them for microscopy questions."""

_NAME_TO_LEVEL: dict[str, int] = {
    "recall": 1,
    "remember": 1,
    "remembering": 1,
    "knowledge": 1,
    "comprehension": 2,
    "understand": 2,
    "understanding": 2,
    "application": 3,
    "apply": 3,
    "applying": 3,
    "analysis": 4,
    "analyze": 4,
    "analyzing": 4,
    "analyse": 4,
    "analysing": 4,
    "synthesis": 5,
    "evaluation": 5,
    "evaluate": 5,
    "evaluating": 5,
    "synthesis/evaluation": 5,
    "create": 6,
    "creating": 6,
    "creation": 6,
}

_NAME_LINE = re.compile(r"bloom'?s(?:\s+level)?\s*[:=]\s*([A-Za-z/ ]+?)\s*(?:\(|$|\n|,|\.)", re.IGNORECASE | re.MULTILINE)
_LEVEL_LINE = re.compile(r"level\s*[:=]?\s*([1-6])\b", re.IGNORECASE)
_STEM = re.compile(r"Question stem:\s*(.*?)\s*\n\s*Correct answer:\s*(.*)", re.DOTALL)

FeatureKind = Literal["embedding", "tfidf"]


@dataclass(frozen=True)
class BloomsExample:
    """One labelled question: the stem, its correct answer and the expert's level (1 to 6)."""

    stem: str
    answer: str
    level: int


def level_from_name(name: str) -> int | None:
    """Return the level of a Bloom's category name such as `Analysis` or `Evaluating`, or None."""
    key = name.strip().lower().replace(" ", "")
    if key in _NAME_TO_LEVEL:
        return _NAME_TO_LEVEL[key]
    first = re.split(r"[/,\s]", name.strip().lower())[0]
    return _NAME_TO_LEVEL.get(first)


def parse_blooms_reply(text: str) -> int:
    """Return the level stated in a reply of the form `Bloom's: NAME` / `Level: N`.

    The category name wins over the number when both are present and disagree: two of the
    expert records say `Comprehension` with `Level: 1`, and their reasoning argues for level 2.
    Raises ValueError when the reply states neither.
    """
    name_match = _NAME_LINE.search(text)
    if name_match:
        level = level_from_name(name_match.group(1))
        if level is not None:
            return level
    level_match = _LEVEL_LINE.search(text)
    if level_match:
        return int(level_match.group(1))
    raise ValueError(f"no Bloom's level found in the reply {text[:120]!r}")


def classifier_text(stem: str, answer: str) -> str:
    """Return the text the classifier reads, in the layout of the training records."""
    return f"Question stem: {stem.strip()}\nCorrect answer: {answer.strip()}"


def default_training_path() -> Path:
    return Path(str(resources.files("microvqa_pp.data").joinpath("blooms_train.jsonl")))


def load_training_examples(path: Path | None = None) -> list[BloomsExample]:
    """Read the expert-labelled chat records into examples; records without a stem are skipped."""
    path = path or default_training_path()
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            messages = json.loads(line)["messages"]
            user = next(message["content"] for message in messages if message["role"] == "user")
            assistant = next(message["content"] for message in messages if message["role"] == "assistant")
            match = _STEM.search(user)
            if match is None:
                logger.warning("%s line %d: no 'Question stem:' in the user turn, skipped", path, line_number)
                continue
            examples.append(BloomsExample(match.group(1).strip(), match.group(2).strip(), parse_blooms_reply(assistant)))
    return examples


class BloomsClassifier:
    """Logistic regression over sentence embeddings or TF-IDF features of stem and answer.

    `class_weight="balanced"` because the expert labels are skewed (about half are level 2 and
    under a tenth above level 3); without it the model rarely predicts the rare levels.
    `regularization` is scikit-learn's C (inverse strength).
    """

    def __init__(
        self,
        features: FeatureKind = "embedding",
        embedder: SentenceEmbedder | None = None,
        regularization: float = 1.0,
        seed: int = 0,
    ):
        if features not in ("embedding", "tfidf"):
            raise ValueError(f"features must be 'embedding' or 'tfidf', got {features!r}")
        if features == "embedding" and embedder is None:
            raise ValueError("features='embedding' needs a sentence embedder")
        self.features = features
        self.embedder = embedder
        self.regularization = regularization
        self.seed = seed
        self._vectorizer = None
        self._model = None

    @property
    def name(self) -> str:
        """Short description recorded as the level's source, e.g. `classifier:logreg-embedding`."""
        return f"classifier:logreg-{self.features}"

    def fit(self, examples: Sequence[BloomsExample]) -> "BloomsClassifier":
        linear_model = require("sklearn.linear_model", "ml", "the Bloom's classifier")
        texts = [classifier_text(example.stem, example.answer) for example in examples]
        labels = np.array([example.level for example in examples])
        matrix = self._features(texts, fit=True)
        self._model = linear_model.LogisticRegression(
            C=self.regularization, max_iter=2000, class_weight="balanced", random_state=self.seed
        )
        self._model.fit(matrix, labels)
        return self

    def predict(self, stems: Sequence[str], answers: Sequence[str]) -> list[int]:
        """Return the predicted level (1 to 6) of each question."""
        if self._model is None:
            raise RuntimeError("BloomsClassifier.predict called before fit")
        if not stems:
            return []
        texts = [classifier_text(stem, answer) for stem, answer in zip(stems, answers)]
        return [int(level) for level in self._model.predict(self._features(texts, fit=False))]

    def _features(self, texts: list[str], *, fit: bool) -> np.ndarray:
        if self.features == "embedding":
            assert self.embedder is not None
            return self.embedder.encode(texts)
        if fit:
            text_features = require("sklearn.feature_extraction.text", "ml", "the Bloom's classifier")
            self._vectorizer = text_features.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
            return self._vectorizer.fit_transform(texts)
        return self._vectorizer.transform(texts)


@lru_cache(maxsize=4)
def packaged_classifier(text_model: str | None, seed: int = 0) -> BloomsClassifier:
    """Return the classifier trained on the packaged labels, trained once per process and settings."""
    from microvqa_pp.mcq.embedding import shared_embedder

    return train_classifier(shared_embedder(text_model) if text_model else None, seed=seed)


def train_classifier(
    embedder: SentenceEmbedder | None, *, seed: int = 0, path: Path | None = None
) -> BloomsClassifier:
    """Fit the offline classifier on the packaged expert labels; TF-IDF when no embedder is given."""
    features: FeatureKind = "embedding" if embedder is not None else "tfidf"
    regularization = 1.0 if features == "embedding" else 10.0
    classifier = BloomsClassifier(features, embedder, regularization=regularization, seed=seed)
    return classifier.fit(load_training_examples(path))


@dataclass(frozen=True)
class BloomsItem:
    """A question to label: its id, stem and correct answer."""

    item_id: str
    stem: str
    answer: str


class BloomsTask(AgentTask[BloomsItem, int]):
    """Assign a Bloom's level (1 to 6) to a question; offline, the classifier does."""

    name = "mcq_blooms"
    prompt_version = load_prompt("microvqa_pp.mcq", "mcq_blooms").version
    output_model = None

    def __init__(self, classifier: BloomsClassifier | None = None):
        self.classifier = classifier
        self.template = load_prompt("microvqa_pp.mcq", self.name)

    def item_id(self, item: BloomsItem) -> str:
        return item.item_id

    def messages(self, item: BloomsItem) -> list[Message]:
        return self.template.render(stem=item.stem, answer=item.answer)

    def parse(self, text: str, item: BloomsItem) -> int:
        try:
            return parse_blooms_reply(text)
        except ValueError as error:
            raise ReplyError(str(error)) from error

    def offline(self, item: BloomsItem) -> int:
        if self.classifier is None:
            raise ReplyError("offline_unavailable: no Bloom's classifier was configured")
        return self.classifier.predict([item.stem], [item.answer])[0]
