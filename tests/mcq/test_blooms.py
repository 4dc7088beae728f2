"""Bloom's levels: reply parsing, the packaged labels, and the offline classifier against the baseline."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from microvqa_pp.mcq.blooms import BloomsClassifier, BloomsItem, BloomsTask, load_training_examples, parse_blooms_reply


@pytest.mark.parametrize(
    ("reply", "level"),
    [
        ("Bloom's: Comprehension\nLevel: 2\nReasoning: ...", 2),
        ("Bloom's: Synthesis/Evaluation\nLevel: 5", 5),
        ("Bloom's: Evaluating\nLevel: 5", 5),
        ("Bloom's: Analysis (Level 4)", 4),
        ("**Bloom's: Application**\nLevel: 3", 3),
        ("Level: 6", 6),
        # The name wins over a contradicting number, as in two of the expert records.
        ("Bloom's: Comprehension\nLevel: 1", 2),
    ],
)
def test_parse_reply(reply, level):
    assert parse_blooms_reply(reply) == level


def test_parse_reply_without_level():
    with pytest.raises(ValueError, match="no Bloom's level"):
        parse_blooms_reply("This question is about cells.")


def test_training_examples():
    examples = load_training_examples()
    assert len(examples) == 127
    assert Counter(example.level for example in examples) == {2: 61, 1: 42, 3: 14, 4: 8, 5: 2}
    assert all(example.stem and example.answer for example in examples)
    assert examples[0].answer == "irregular"


def held_out_fold(examples, seed=0):
    labels = np.array([example.level for example in examples])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rarest level has fewer members than folds
        train_index, test_index = next(StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(labels, labels))
    return [examples[i] for i in train_index], [examples[i] for i in test_index]


@pytest.mark.parametrize("features", ["embedding", "tfidf"])
def test_classifier_beats_majority(features, embedder):
    train, test = held_out_fold(load_training_examples())
    classifier = BloomsClassifier(features, embedder if features == "embedding" else None, 1.0 if features == "embedding" else 10.0)
    predicted = classifier.fit(train).predict([e.stem for e in test], [e.answer for e in test])
    truth = [example.level for example in test]
    majority = Counter(example.level for example in train).most_common(1)[0][0]
    baseline = [majority] * len(test)

    assert accuracy_score(truth, predicted) > accuracy_score(truth, baseline)
    assert f1_score(truth, predicted, average="macro") > f1_score(truth, baseline, average="macro") + 0.15


def test_classifier_arguments():
    with pytest.raises(ValueError, match="needs a sentence embedder"):
        BloomsClassifier("embedding", None)
    with pytest.raises(ValueError, match="features must be"):
        BloomsClassifier("bag-of-words")
    with pytest.raises(RuntimeError):
        BloomsClassifier("tfidf").predict(["stem"], ["answer"])


def test_task_renders_and_parses():
    task = BloomsTask()
    messages = task.messages(BloomsItem("q1", "Which stain labels the nuclei?", "DAPI"))
    assert [message.role for message in messages] == ["system", "user"]
    user = messages[1].content[0]
    assert "Question stem: Which stain labels the nuclei?\nCorrect answer: DAPI" in user
    assert "Create (6)" in messages[0].content[0]
    assert task.parse("Bloom's: Recall\nLevel: 1\nReasoning: memory.", None) == 1
