"""The no-image check: flag questions answerable from the text alone, rewrite them, check again.

The agent answers each MCQ without the image, `samples` times with the options in a different
seeded order each time. A question whose correct option gets more than `max_accuracy` of the
answers is flagged, and the agent rewrites its stem and distractors (keeping the correct answer);
a rewrite that fails validation is discarded. The check repeats until the question passes or
`max_rounds` rewrites were tried. Outcomes: `passed` (never flagged), `rewritten-passed`, `failed`.

Offline, the answers come from `ShortcutAnswerer`, which exploits the known text-only cues of
multiple-choice questions; each sample uses one cue in turn:

- `word_overlap`: the option sharing the most content words with the stem;
- `longest_option`: the longest option (options within 10 % of the longest tie);
- `stem_similarity`: the option closest to the stem under the sentence embedder.

A cue that cannot tell options apart spreads its answer evenly over the tied options, so a
question without cues scores the chance level 1/n, deterministically.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from pydantic import BaseModel

from microvqa_pp.agents.base import Agent, AgentTask, Message, ReplyError
from microvqa_pp.agents.prompts import load_prompt
from microvqa_pp.mcq.embedding import SentenceEmbedder
from microvqa_pp.mcq.offline import OfflineWriter, QAContext
from microvqa_pp.mcq.positions import stable_seed
from microvqa_pp.mcq.text import content_words, normalize_option, strip_option_labels
from microvqa_pp.mcq.validation import McqDraft, Violation

logger = logging.getLogger(__name__)

OUTCOMES = ("passed", "rewritten-passed", "failed")

LENGTH_TIE = 0.9
"""Options at least this share of the longest option's length tie for `longest_option`."""
SIMILARITY_TIE = 0.02
"""Options within this cosine similarity of the most similar one tie for `stem_similarity`."""

# MicroVQA's answer extraction: the first "answer is (N)", with optional bold markers.
_ANSWER = re.compile(r"answer is \*?\*?\(?([0-9]{1,2})\)?\*?\*?", re.IGNORECASE)


class ShortcutAnswerer:
    """Answers MCQs from text alone with the cues a model can exploit (see the module docstring)."""

    def __init__(self, embedder: SentenceEmbedder | None = None):
        self.embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def heuristics(self) -> tuple[str, ...]:
        names = ("word_overlap", "longest_option")
        return names + ("stem_similarity",) if self.embedder is not None else names

    def weights(self, heuristic: str, question: str, options: Sequence[str]) -> list[float]:
        """Return the share of the answer that each option gets under one cue (sums to 1)."""
        if heuristic == "word_overlap":
            stem_words = content_words(question)
            scores = [float(len(content_words(option) & stem_words)) for option in options]
            return _spread(scores, tolerance=0.0) if max(scores) > 0 else _uniform(len(options))
        if heuristic == "longest_option":
            lengths = [float(len(option.strip())) for option in options]
            longest = max(lengths)
            tied = [length >= LENGTH_TIE * longest for length in lengths]
            return _normalise([1.0 if is_tied else 0.0 for is_tied in tied])
        if heuristic == "stem_similarity":
            if self.embedder is None:
                raise ValueError("the stem_similarity cue needs a sentence embedder")
            vectors = self._embed([question, *options])
            similarities = (vectors[1:] @ vectors[0]).astype(float).tolist()
            return _spread(similarities, tolerance=SIMILARITY_TIE)
        raise ValueError(f"unknown cue {heuristic!r}; expected one of {self.heuristics}")

    def heuristic_for(self, sample: int) -> str:
        return self.heuristics[sample % len(self.heuristics)]

    def expected_accuracy(self, draft: McqDraft, samples: int | None = None) -> float:
        """Return the mean share of the answer the correct option gets over `samples` samples."""
        samples = samples or len(self.heuristics)
        correct = draft.correct_position()
        shares = [self.weights(self.heuristic_for(sample), draft.question, draft.options)[correct] for sample in range(samples)]
        return float(np.mean(shares))

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embed texts ahead of `weights` in one batch; one call per question is many times slower."""
        if self.embedder is not None and texts:
            self._embed(list(texts))

    def _embed(self, texts: list[str]) -> np.ndarray:
        assert self.embedder is not None
        missing = [text for text in dict.fromkeys(texts) if text not in self._vectors]
        if missing:
            for text, vector in zip(missing, self.embedder.encode(missing)):
                self._vectors[text] = vector
        return np.stack([self._vectors[text] for text in texts])


def _uniform(count: int) -> list[float]:
    return [1.0 / count] * count


def _normalise(values: list[float]) -> list[float]:
    total = sum(values)
    return [value / total for value in values]


def _spread(scores: list[float], tolerance: float) -> list[float]:
    """Give the answer to the best-scoring option, split evenly among options within `tolerance` of it."""
    best = max(scores)
    return _normalise([1.0 if score >= best - tolerance else 0.0 for score in scores])


# The text-only answer task -------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerItem:
    """One text-only attempt at an MCQ: the options in the order shown for this sample."""

    item_id: str
    question: str
    options: tuple[str, ...]
    sample: int


class TextOnlyAnswerTask(AgentTask[AnswerItem, list[float]]):
    """Answer an MCQ without its image; the output is the answer's share per option (one-hot for a model)."""

    name = "mcq_answer_text"
    prompt_version = load_prompt("microvqa_pp.mcq", "mcq_answer_text").version
    output_model = None

    def __init__(self, answerer: ShortcutAnswerer | None = None):
        self.answerer = answerer
        self.template = load_prompt("microvqa_pp.mcq", self.name)

    def item_id(self, item: AnswerItem) -> str:
        return item.item_id

    def messages(self, item: AnswerItem) -> list[Message]:
        numbered = "\n".join(f"({number}) {option}" for number, option in enumerate(item.options, start=1))
        return self.template.render(question=item.question, options=numbered)

    def parse(self, text: str, item: AnswerItem) -> list[float]:
        match = _ANSWER.search(text)
        if match is None:
            raise ReplyError('no "The answer is (X)" in the reply')
        number = int(match.group(1))
        if not 1 <= number <= len(item.options):
            raise ReplyError(f"answer ({number}) is not one of the options 1..{len(item.options)}")
        return [1.0 if index == number - 1 else 0.0 for index in range(len(item.options))]

    def prepare_offline(self, items: Sequence[AnswerItem]) -> None:
        """Embed the stems and options of all items at once before `offline` answers them one by one."""
        if self.answerer is not None:
            self.answerer.prefetch([text for item in items for text in (item.question, *item.options)])

    def offline(self, item: AnswerItem) -> list[float]:
        if self.answerer is None:
            raise ReplyError("offline_unavailable: no shortcut answerer was configured")
        return self.answerer.weights(self.answerer.heuristic_for(item.sample), item.question, item.options)


# The rewrite task ----------------------------------------------------------------------------


class RewriteReply(BaseModel):
    """The JSON object the model returns for `mcq_rewrite`."""

    question: str
    distractors: list[str]
    rationale: str = ""


@dataclass(frozen=True)
class RewriteItem:
    """A flagged MCQ with how often the text-only answers were right and one such answer."""

    context: QAContext
    draft: McqDraft
    correct_share: float
    text_only_reply: str
    round: int


class McqRewriteTask(AgentTask[RewriteItem, McqDraft]):
    """Rewrite the stem and distractors of a flagged MCQ, keeping the correct answer."""

    name = "mcq_rewrite"
    prompt_version = load_prompt("microvqa_pp.mcq", "mcq_rewrite").version
    output_model = RewriteReply

    def __init__(
        self,
        num_options: int,
        writer: OfflineWriter | None = None,
        answerer: ShortcutAnswerer | None = None,
        *,
        seed: int = 0,
        candidate_sets: int = 12,
        candidate_pool: int = 3,
    ):
        self.num_options = num_options
        self.writer = writer
        self.answerer = answerer
        self.seed = seed
        self.candidate_sets = candidate_sets
        self.candidate_pool = candidate_pool
        """Offline rewrites draw from the first `candidate_pool` times the needed number of ranked candidates."""
        self.template = load_prompt("microvqa_pp.mcq", self.name)
        self._searches: dict[str, list[McqDraft] | ReplyError] = {}

    def item_id(self, item: RewriteItem) -> str:
        return item.context.qa_id

    def messages(self, item: RewriteItem) -> list[Message]:
        images = [item.context.image_path] if item.context.image_path is not None else []
        return self.template.render(
            images,
            num_distractors=self.num_options - 1,
            caption=item.context.caption,
            question=item.draft.question,
            correct_answer=item.draft.correct_answer,
            distractors="\n".join(f"- {option}" for option in item.draft.distractors()),
            correct_share=f"{item.correct_share:.0%}",
            text_only_reply=item.text_only_reply.strip() or "(not available)",
        )

    def parse(self, text: str, item: RewriteItem) -> McqDraft:
        reply: RewriteReply = super().parse(text, item)  # type: ignore[assignment]
        correct = item.draft.correct_answer
        return McqDraft(
            question=reply.question.strip(),
            options=[correct] + strip_option_labels(reply.distractors),
            correct_answer=correct,
            rationale=reply.rationale.strip() or item.draft.rationale,
            span_kind=item.draft.span_kind,
            distractor_source="agent",
        )

    def prepare_offline(self, items: Sequence[RewriteItem]) -> None:
        """Build every item's candidate drafts and embed all their texts in one batch (see `offline`)."""
        self._searches = {item.context.qa_id: self._candidate_drafts(item) for item in items}
        if self.answerer is not None:
            texts = [text for drafts in self._searches.values() if isinstance(drafts, list) for draft in drafts for text in (draft.question, *draft.options)]
            self.answerer.prefetch(texts)

    def offline(self, item: RewriteItem) -> McqDraft:
        """Return the candidate draft that the shortcut answerer finds hardest.

        The candidates keep the correct answer and draw seeded sets of same-kind distractors: the
        writer's own ranking first, then random draws. Their stem is the generic question of the
        answer's kind, which shares no words with the options.
        """
        if self.writer is None or self.answerer is None:
            raise ReplyError("offline_unavailable: the offline rewrite needs the offline writer and the shortcut answerer")
        drafts = self._searches.pop(item.context.qa_id, None)
        if drafts is None:
            drafts = self._candidate_drafts(item)
        if isinstance(drafts, ReplyError):
            raise drafts
        scores = [self.answerer.expected_accuracy(draft) for draft in drafts]
        return drafts[int(np.argmin(scores))]

    def _candidate_drafts(self, item: RewriteItem) -> list[McqDraft] | ReplyError:
        assert self.writer is not None
        context = item.context
        kind = self.writer.resolve_kind(context)
        needed = self.num_options - 1
        rng = np.random.default_rng(stable_seed("offline-rewrite", self.seed, context.qa_id, item.round))
        ranked = self.writer.rank(self.writer.candidates(context, kind), self.writer.display_answer(context, kind), kind, rng)
        if len(ranked) < needed:
            return ReplyError(f"too_few_distractors: {len(ranked)} same-kind spans ({kind.key}) to rewrite with, {needed} needed")

        current = {normalize_option(option) for option in item.draft.distractors()}
        # Draw from the best-ranked candidates only, so a rewrite stays as plausible as the first draft.
        pool_size = min(len(ranked), self.candidate_pool * needed)
        choices = [list(range(needed))]
        for _ in range(self.candidate_sets - 1):
            choices.append(sorted(rng.choice(pool_size, size=needed, replace=False).tolist()))
        drafts = []
        for choice in choices:
            distractors = [ranked[index] for index in choice]
            if {normalize_option(candidate.text) for candidate in distractors} == current:
                continue
            drafts.append(self.writer.assemble(context, kind, distractors, generic_question=True))
        if not drafts:
            return ReplyError(f"too_few_distractors: no same-kind distractors other than the current ones for {context.answer!r}")
        return drafts


# The check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoImageSettings:
    samples: int = 3
    """Text-only answers per question and round."""
    max_accuracy: float = 0.5
    """A question whose correct option gets more than this share of the answers is flagged."""
    max_rounds: int = 2
    """Rewrites tried before a flagged question is marked `failed`."""
    seed: int = 0


@dataclass
class CheckResult:
    """The outcome of the check for one question, with the draft that was checked last."""

    draft: McqDraft
    outcome: str = ""
    accuracy: float | None = None
    """Share of text-only answers that chose the correct option, in the last round."""
    first_accuracy: float | None = None
    rewrite_rounds: int = 0
    rejected_rewrites: list[str] = field(default_factory=list)
    """Reasons of rewrites that were discarded (a failed request or validation)."""
    unanswered: int = 0
    """Text-only answers that failed or could not be parsed (counted as wrong, as MicroVQA scores them)."""


class NoImageCheck:
    """Runs the check, with rewrites, over a batch of MCQs through one agent."""

    def __init__(
        self,
        agent: Agent,
        answer_task: TextOnlyAnswerTask,
        rewrite_task: McqRewriteTask,
        settings: NoImageSettings,
        validate: Callable[[McqDraft, QAContext], Violation | None],
    ):
        self.agent = agent
        self.answer_task = answer_task
        self.rewrite_task = rewrite_task
        self.settings = settings
        self.validate = validate

    def run(self, pairs: Sequence[tuple[QAContext, McqDraft]]) -> list[CheckResult]:
        results = [CheckResult(draft) for _, draft in pairs]
        pending = list(range(len(pairs)))
        for round_number in range(self.settings.max_rounds + 1):
            accuracies, replies, unanswered = self.measure([(pairs[index][0], results[index].draft) for index in pending], round_number)
            flagged: list[tuple[int, float, str]] = []
            for index, accuracy, reply, missing in zip(pending, accuracies, replies, unanswered):
                result = results[index]
                result.accuracy = accuracy
                result.unanswered += missing
                if result.first_accuracy is None:
                    result.first_accuracy = accuracy
                if accuracy <= self.settings.max_accuracy:
                    result.outcome = "passed" if round_number == 0 else "rewritten-passed"
                elif round_number == self.settings.max_rounds:
                    result.outcome = "failed"
                else:
                    flagged.append((index, accuracy, reply))
            if not flagged:
                break

            items = [RewriteItem(pairs[index][0], results[index].draft, accuracy, reply, round_number) for index, accuracy, reply in flagged]
            if self.agent.template_generated:
                self.rewrite_task.prepare_offline(items)
            for (index, _, _), rewrite in zip(flagged, self.agent.run(self.rewrite_task, items)):
                result = results[index]
                result.rewrite_rounds += 1
                if not rewrite.ok or rewrite.output is None:
                    result.rejected_rewrites.append(rewrite.error or "no_output")
                    logger.debug("mcq: rewrite of %s failed: %s %s", pairs[index][0].qa_id, rewrite.error, rewrite.error_detail)
                    continue
                violation = self.validate(rewrite.output, pairs[index][0])
                if violation is not None:
                    result.rejected_rewrites.append(violation.reason)
                    logger.debug("mcq: rewrite of %s rejected: %s", pairs[index][0].qa_id, violation.detail)
                    continue
                result.draft = rewrite.output
            pending = [index for index, _, _ in flagged]
        return results

    def measure(self, pairs: Sequence[tuple[QAContext, McqDraft]], round_number: int) -> tuple[list[float], list[str], list[int]]:
        """Return per MCQ the correct option's share of the text-only answers, a reply that chose it, and the failures."""
        items: list[AnswerItem] = []
        correct_slots: list[int] = []
        for context, draft in pairs:
            correct = draft.correct_position()
            for sample in range(self.settings.samples):
                rng = np.random.default_rng(stable_seed("no-image-order", self.settings.seed, context.qa_id, round_number, sample))
                order = rng.permutation(len(draft.options)).tolist()
                items.append(AnswerItem(f"{context.qa_id}/round-{round_number}/sample-{sample}", draft.question, tuple(draft.options[i] for i in order), sample))
                correct_slots.append(order.index(correct))

        if self.agent.template_generated:
            self.answer_task.prepare_offline(items)
        results = self.agent.run(self.answer_task, items)
        accuracies, replies, unanswered = [], [], []
        samples = self.settings.samples
        for start in range(0, len(results), samples):
            shares, reply, missing = [], "", 0
            for result, slot in zip(results[start : start + samples], correct_slots[start : start + samples]):
                if not result.ok or result.output is None:
                    shares.append(0.0)
                    missing += 1
                    continue
                shares.append(result.output[slot])
                if result.output[slot] >= 0.5 and not reply:
                    reply = result.raw_reply
            accuracies.append(float(np.mean(shares)))
            replies.append(reply)
            unanswered.append(missing)
        return accuracies, replies, unanswered
