"""How often text-only shortcut cues answer real multiple-choice questions, against chance.

The offline no-image check answers each MCQ with three cues that need no image: the option
sharing most words with the stem, the longest option, and the option closest to the stem under
MiniLM. It flags a question when the correct option gets more than half of the answers. This
script measures those cues on released data bundled under tests/data: the 51 MicroVQA-format
questions of the MicroVQA repository's RefineBot demo and the 15 MicroVQA++ demo questions
(written by an LLM from captions), and how many questions the length rule of the validation
(correct option over 1.5 times the longest distractor) would reject.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/mcq_shortcuts.py
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pandas as pd

from microvqa_pp import models
from microvqa_pp.mcq.embedding import SentenceEmbedder
from microvqa_pp.mcq.no_image import ShortcutAnswerer
from microvqa_pp.mcq.text import strip_option_labels
from microvqa_pp.mcq.validation import McqDraft, correct_option_too_long

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def microvqa_questions() -> list[McqDraft]:
    frame = pd.read_csv(DATA / "microvqa_format" / "demo_dataset.csv")
    drafts = []
    for row in frame.itertuples():
        choices = ast.literal_eval(row.choices)
        question = row.question.removeprefix("Question:").strip()
        drafts.append(McqDraft(question, choices, choices[row.correct_index], ""))
    return drafts


def microvqa_pp_questions() -> list[McqDraft]:
    frame = pd.read_parquet(DATA / "microvqa_pp_demo" / "train-00000-of-00001.parquet", columns=["question", "choices", "correct_index"])
    drafts = []
    for row in frame.itertuples():
        choices = strip_option_labels(list(row.choices))
        drafts.append(McqDraft(row.question, choices, choices[row.correct_index - 1], ""))
    return drafts


def measure(name: str, drafts: list[McqDraft], answerer: ShortcutAnswerer) -> None:
    per_cue = {cue: [] for cue in answerer.heuristics}
    for draft in drafts:
        correct = draft.correct_position()
        for cue in answerer.heuristics:
            per_cue[cue].append(answerer.weights(cue, draft.question, draft.options)[correct])
    combined = np.mean([per_cue[cue] for cue in answerer.heuristics], axis=0)
    chance = np.mean([1 / len(draft.options) for draft in drafts])
    too_long = sum(correct_option_too_long(draft.correct_answer, draft.distractors(), 1.5) for draft in drafts)

    print(f"\n{name}: {len(drafts)} questions, chance {chance:.3f}")
    for cue, shares in per_cue.items():
        print(f"  {cue:16s} accuracy {np.mean(shares):.3f}")
    print(f"  {'all three cues':16s} accuracy {combined.mean():.3f}; flagged (> 0.5): {np.mean(combined > 0.5):.1%}")
    print(f"  length rule (ratio 1.5) would reject {too_long} of {len(drafts)}")


def main() -> None:
    started = time.perf_counter()
    answerer = ShortcutAnswerer(SentenceEmbedder(models.TEXT_EMBEDDER))
    drafts = {"MicroVQA RefineBot demo": microvqa_questions(), "MicroVQA++ demo": microvqa_pp_questions()}
    for questions in drafts.values():
        answerer.prefetch([text for draft in questions for text in (draft.question, *draft.options)])
    loaded = time.perf_counter()
    for name, questions in drafts.items():
        measure(name, questions, answerer)
    total = sum(len(questions) for questions in drafts.values())
    print(f"\nembedding (with model loading) {loaded - started:.1f} s; cues for {total} questions {time.perf_counter() - loaded:.2f} s")


if __name__ == "__main__":
    main()
