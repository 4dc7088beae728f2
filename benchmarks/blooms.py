"""Cross-validated quality of the offline Bloom's classifier against the majority-class baseline.

Trains the classifier that `microvqa-pp mcq` uses offline (logistic regression on MiniLM
sentence embeddings, and the TF-IDF variant used when no embedder is configured) on the 127
expert-labelled MicroVQA questions, with stratified 5-fold cross-validation repeated over
seeded shuffles, and prints accuracy and macro-F1 next to always predicting the most common level.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/blooms.py [--folds 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import Counter

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import StratifiedKFold

from microvqa_pp import models
from microvqa_pp.mcq.blooms import LEVEL_NAMES, BloomsClassifier, BloomsExample, classifier_text, load_training_examples
from microvqa_pp.mcq.embedding import SentenceEmbedder


class MemoEmbedder(SentenceEmbedder):
    """Embeds each distinct text once, so the folds do not re-run the model."""

    def __init__(self, name: str):
        super().__init__(name)
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts):
        missing = [text for text in dict.fromkeys(texts) if text not in self._memo]
        if missing:
            for text, vector in zip(missing, super().encode(missing)):
                self._memo[text] = vector
        return np.stack([self._memo[text] for text in texts])


def cross_validate(make_classifier, examples: list[BloomsExample], folds: int, seed: int) -> tuple[float, float, list[int]]:
    """Return accuracy, macro-F1 and the out-of-fold predictions of one seeded stratified split."""
    labels = np.array([example.level for example in examples])
    predictions = np.zeros_like(labels)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_index, test_index in splitter.split(np.zeros(len(labels)), labels):
        train = [examples[i] for i in train_index]
        test = [examples[i] for i in test_index]
        if make_classifier is None:
            majority = Counter(example.level for example in train).most_common(1)[0][0]
            predictions[test_index] = majority
            continue
        classifier = make_classifier(seed).fit(train)
        predictions[test_index] = classifier.predict([e.stem for e in test], [e.answer for e in test])
    accuracy = accuracy_score(labels, predictions)
    macro_f1 = f1_score(labels, predictions, average="macro", zero_division=0)
    return accuracy, macro_f1, predictions.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="Seeded shuffles of the folds (seeds 0..N-1).")
    parser.add_argument("--text-model", default=models.TEXT_EMBEDDER)
    arguments = parser.parse_args()

    # The rarest level has 2 examples, fewer than the folds; scikit-learn warns and still stratifies the rest.
    warnings.filterwarnings("ignore", message="The least populated class")

    examples = load_training_examples()
    counts = Counter(example.level for example in examples)
    print(f"{len(examples)} labelled questions; levels: " + ", ".join(f"{level} {LEVEL_NAMES[level]} {counts[level]}" for level in sorted(counts)))

    embedder = MemoEmbedder(arguments.text_model)
    started = time.perf_counter()
    embedder.encode([classifier_text(e.stem, e.answer) for e in examples])
    print(f"embedded {len(examples)} questions with {arguments.text_model} in {time.perf_counter() - started:.1f} s (includes loading)")

    candidates = {
        "majority class": None,
        "logreg on MiniLM embeddings (C=1)": lambda seed: BloomsClassifier("embedding", embedder, 1.0, seed),
        "logreg on TF-IDF 1-2 grams (C=10)": lambda seed: BloomsClassifier("tfidf", None, 10.0, seed),
    }
    print(f"\nstratified {arguments.folds}-fold cross-validation, seeds 0..{arguments.repeats - 1} (mean ± sd over seeds)")
    print(f"{'classifier':38s} {'accuracy':>15s} {'macro-F1':>15s}")
    labels = [example.level for example in examples]
    for name, factory in candidates.items():
        accuracies, f1_scores = [], []
        first_predictions: list[int] = []
        for seed in range(arguments.repeats):
            accuracy, macro_f1, predictions = cross_validate(factory, examples, arguments.folds, seed)
            accuracies.append(accuracy)
            f1_scores.append(macro_f1)
            first_predictions = first_predictions or predictions
        print(
            f"{name:38s} {statistics.mean(accuracies):7.3f} ± {statistics.pstdev(accuracies):.3f}"
            f" {statistics.mean(f1_scores):7.3f} ± {statistics.pstdev(f1_scores):.3f}"
        )
        if factory is not None and "MiniLM" in name:
            levels = sorted(counts)
            matrix = confusion_matrix(labels, first_predictions, labels=levels)
            confusion_text = "\n".join(f"    true {level}: " + " ".join(f"{value:3d}" for value in row) for level, row in zip(levels, matrix))
            confusion_note = f"  confusion (seed 0, columns predicted {levels}):\n{confusion_text}"
    print()
    print(confusion_note)


if __name__ == "__main__":
    main()
