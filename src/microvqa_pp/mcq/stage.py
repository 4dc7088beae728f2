"""Stage `mcq`: turn every QA the filter kept into a checked, labelled multiple-choice question.

Per work unit of kept QAs:

1. the agent writes the stem, options, correct answer and rationale (`mcq_write`). Each draft is
   validated. A draft that fails is requested again with the reason (LLM agents) or rejected;
2. the no-image check answers each question without its image and rewrites the flagged ones;
3. the agent (or the offline classifier) assigns the Bloom's level.

When all units are done, `finish` places the correct option of the k-th question at a balanced,
seeded position (see `positions`), and the position counts go into the stage's stats.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from microvqa_pp.agents import Agent, AgentResult, make_agent
from microvqa_pp.agents.cache import file_sha256
from microvqa_pp.errors import MicroVQAError
from microvqa_pp.mcq.blooms import LEVEL_NAMES, BloomsClassifier, BloomsItem, BloomsTask, default_training_path, packaged_classifier
from microvqa_pp.mcq.embedding import SentenceEmbedder, shared_embedder
from microvqa_pp.mcq.no_image import CheckResult, McqRewriteTask, NoImageCheck, NoImageSettings, ShortcutAnswerer, TextOnlyAnswerTask
from microvqa_pp.mcq.offline import OfflineWriter, QAContext
from microvqa_pp.mcq.positions import correct_position, place_options
from microvqa_pp.mcq.spans import OTHER, SpanPool, classify_span, default_lexicon
from microvqa_pp.mcq.validation import McqDraft, ValidationSettings, Violation, validate_draft
from microvqa_pp.mcq.writing import McqWriteTask, WriteItem
from microvqa_pp.records import MCQ, QA, Figure, Rejection, arrow_schema, from_table, to_table
from microvqa_pp.run.rundir import atomic_write_text
from microvqa_pp.run.stage import ChunkedStage, StageResult, UnitResult, WorkUnit

logger = logging.getLogger(__name__)

_REASON_PREFIX = re.compile(r"^([a-z][a-z_]+): ")


@dataclass(frozen=True)
class KeptQA:
    """A QA the filter kept, as a work unit carries it."""

    qa_id: str
    figure_id: str
    score: float


class McqStage(ChunkedStage):
    """Write, validate, check and label one MCQ per kept QA."""

    name = "mcq"
    requires = ("filter",)
    config_sections = ("mcq", "agent")
    record_type = MCQ

    def __init__(self, run, config):
        super().__init__(run, config)
        settings = config.mcq
        self.validation = ValidationSettings(settings.num_options, settings.max_length_ratio, settings.max_caption_copy_words)
        self.no_image = NoImageSettings(settings.no_image_samples, settings.no_image_max_accuracy, settings.rewrite_rounds, config.seed)
        self.position_counts: Counter[int] = Counter()
        self._tools: _Tools | None = None
        # Building the agent checks its settings now rather than inside a worker; each unit builds its own.
        make_agent(config.agent, None, config.seed).close()

    def __getstate__(self) -> dict[str, Any]:
        # Workers load their own models and pool; only settings travel.
        state = self.__dict__.copy()
        state["_tools"] = None
        return state

    def fingerprint_inputs(self) -> dict[str, Any]:
        lexicon = default_lexicon()
        return {
            "prompts": {task.name: task.prompt_version for task in (McqWriteTask, TextOnlyAnswerTask, McqRewriteTask, BloomsTask)},
            "lexicon": lexicon.version,
            "blooms_training": file_sha256(default_training_path()),
        }

    # Planning --------------------------------------------------------------------------------

    def plan(self) -> list[WorkUnit]:
        for stage in ("filter", "generate", "ingest"):
            if not self.run.stage_output(stage).exists():
                raise MicroVQAError(
                    f"stage mcq needs {self.run.relative(self.run.stage_output(stage))}, which does not exist; "
                    f"run `microvqa-pp {stage} {self.run.root}` first"
                )
        decisions = pq.read_table(self.run.stage_output("filter"), columns=["qa_id", "figure_id", "score", "keep"]).to_pylist()
        kept = [KeptQA(row["qa_id"], row["figure_id"], float(row["score"])) for row in decisions if row["keep"]]
        logger.info("mcq: %d of %d QAs were kept by the filter", len(kept), len(decisions))
        self._pool_path()  # Build the shared span pool once, here in the main process.

        size = self.config.mcq.chunk_size
        return [
            WorkUnit(f"{number:05d}", kept[start : start + size], len(kept[start : start + size]))
            for number, start in enumerate(range(0, len(kept), size))
        ]

    def _pool_path(self) -> Path:
        """Return the cached span pool of this run's captions and answers, building it when missing."""
        upstream = {stage: self.run.stage_entry(stage).get("fingerprint", "") for stage in ("ingest", "generate")}
        key = hashlib.sha256(json.dumps([upstream, default_lexicon().version], sort_keys=True).encode()).hexdigest()[:16]
        path = self.run.cache_dir / f"mcq-span-pool-{key}.json"
        if path.exists():
            return path
        pool = SpanPool()
        for batch in pq.ParquetFile(self.run.stage_output("ingest")).iter_batches(columns=["figure_id", "caption"]):
            for row in batch.to_pylist():
                pool.add_caption(row["figure_id"], row["caption"])
        for batch in pq.ParquetFile(self.run.stage_output("generate")).iter_batches(columns=["figure_id", "answer", "answer_kind"]):
            for row in batch.to_pylist():
                pool.add_answer(row["figure_id"], row["answer"], "" if row["answer_kind"] == OTHER else row["answer_kind"])
        logger.info("mcq: span pool of the corpus: %s", ", ".join(f"{kind} {count}" for kind, count in pool.counts().items()) or "empty")
        atomic_write_text(path, json.dumps(pool.to_json(), ensure_ascii=False))
        return path

    # One work unit ---------------------------------------------------------------------------

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        result = UnitResult(counters=Counter())
        counters = result.counters
        contexts = self._contexts(unit.payload, result)
        tools = self._load_tools()
        agent = make_agent(self.config.agent, self.run, self.config.seed)
        try:
            drafts = self._write(agent, tools, contexts, result)
            checks = self._check(agent, tools, drafts)
            levels = self._blooms(agent, tools, [(context, check.draft) for (context, _), check in zip(drafts, checks)], result)
        finally:
            usage = agent.usage()
            agent.close()

        for (context, _), check, (level, level_source, classifier_level) in zip(drafts, checks, levels):
            result.records.append(self._record(agent, context, check, level, level_source, classifier_level))
            counters["blooms_agent_classifier_agree"] += int(level == classifier_level)
            counters[f"no_image_{check.outcome.replace('-', '_')}"] += 1
            counters[f"blooms_level_{level}"] += 1
            counters["rewrites_rejected"] += len(check.rejected_rewrites)
            counters["no_image_unanswered"] += check.unanswered
            if check.draft.distractor_source:
                counters[f"distractors_{check.draft.distractor_source}"] += 1
        counters["qas_in"] = len(unit.payload)
        for name, value in usage.items():
            counters[f"agent_{name}"] = int(value)
        progress(len(unit.payload))
        return result

    def _contexts(self, kept: list[KeptQA], result: UnitResult) -> list[QAContext]:
        """Join the unit's kept QAs with their QA records and figures; a missing one becomes a rejection."""
        qa_ids = [item.qa_id for item in kept]
        figure_ids = sorted({item.figure_id for item in kept})
        qas = {qa.qa_id: qa for qa in from_table(_read_where(self.run.stage_output("generate"), "qa_id", qa_ids), QA)}
        figures = {figure.figure_id: figure for figure in from_table(_read_where(self.run.stage_output("ingest"), "figure_id", figure_ids), Figure)}
        contexts = []
        for item in kept:
            qa = qas.get(item.qa_id)
            figure = figures.get(qa.figure_id if qa else item.figure_id)
            if qa is None:
                result.rejections.append(Rejection(self.name, item.qa_id, "missing_qa", "the QA is not in stages/generate.parquet"))
                continue
            if figure is None:
                result.rejections.append(Rejection(self.name, item.qa_id, "missing_figure", f"figure {qa.figure_id} is not in stages/ingest.parquet"))
                continue
            image_path = self.run.root / figure.image_path if figure.image_path else None
            contexts.append(QAContext(qa, figure.caption, image_path, item.score, figure.source))
        return contexts

    def _load_tools(self) -> "_Tools":
        if self._tools is None:
            self._tools = _Tools(self)
        return self._tools

    def _validate(self, draft: McqDraft, context: QAContext) -> Violation | None:
        return validate_draft(draft, self.validation, context.caption)

    def _write(self, agent: Agent, tools: "_Tools", contexts: list[QAContext], result: UnitResult) -> list[tuple[QAContext, McqDraft]]:
        """Write and validate a draft per QA; retry a failed validation with the reason (LLM agents)."""
        task = McqWriteTask(self.config.mcq.num_options, tools.writer)
        accepted: dict[int, McqDraft] = {}
        pending = list(enumerate(WriteItem(context) for context in contexts))
        attempts = 1 if agent.template_generated else self.config.mcq.write_attempts
        for attempt in range(attempts):
            outputs = agent.run(task, [item for _, item in pending])
            retry: list[tuple[int, WriteItem]] = []
            for (index, item), output in zip(pending, outputs):
                context = item.context
                if not output.ok or output.output is None:
                    reason, detail = _failure(output)
                    result.rejections.append(Rejection(self.name, context.qa_id, reason, detail, context.source))
                    continue
                violation = self._validate(output.output, context)
                if violation is None:
                    accepted[index] = output.output
                elif attempt + 1 < attempts:
                    retry.append((index, WriteItem(context, output.raw_reply, f"{violation.reason}: {violation.detail}")))
                else:
                    result.rejections.append(Rejection(self.name, context.qa_id, violation.reason, violation.detail, context.source))
            result.counters["write_retries"] += len(retry)
            pending = retry
            if not pending:
                break
        return [(contexts[index], accepted[index]) for index in sorted(accepted)]

    def _check(self, agent: Agent, tools: "_Tools", drafts: list[tuple[QAContext, McqDraft]]) -> list[CheckResult]:
        answer_task = TextOnlyAnswerTask(tools.answerer)
        rewrite_task = McqRewriteTask(self.config.mcq.num_options, tools.writer, tools.answerer, seed=self.config.seed)
        return NoImageCheck(agent, answer_task, rewrite_task, self.no_image, self._validate).run(drafts)

    def _blooms(
        self, agent: Agent, tools: "_Tools", finals: list[tuple[QAContext, McqDraft]], result: UnitResult
    ) -> list[tuple[int, str, int]]:
        """Return per question the Bloom's level, its source and the offline classifier's level.

        The level comes from the agent, and the classifier's level is kept beside it. The
        classifier's level replaces the agent's when the agent is the offline one, when
        `mcq.blooms` is `classifier`, or when the agent's reply fails.
        """
        if not finals:
            return []
        items = [BloomsItem(context.qa_id, draft.question, draft.correct_answer) for context, draft in finals]
        classifier = tools.classifier()
        predicted = classifier.predict([item.stem for item in items], [item.answer for item in items])
        if agent.template_generated or self.config.mcq.blooms == "classifier":
            return [(level, classifier.name, level) for level in predicted]

        labelled: list[tuple[int, str, int]] = []
        for item, output, classifier_level in zip(items, agent.run(BloomsTask(), items), predicted):
            if output.ok and output.output is not None:
                labelled.append((output.output, f"agent:{agent.name}", classifier_level))
                continue
            result.counters["blooms_agent_failed"] += 1
            labelled.append((classifier_level, classifier.name, classifier_level))
        return labelled

    def _record(
        self, agent: Agent, context: QAContext, check: CheckResult, level: int, level_source: str, classifier_level: int
    ) -> MCQ:
        """Build the output record with the correct option first; `finish` moves it to its balanced position."""
        draft = check.draft
        qa = context.qa
        choices = place_options(draft.correct_answer, draft.distractors(), 0, self.config.seed, qa.qa_id)
        mention = classify_span(draft.correct_answer)
        return MCQ(
            mcq_id=f"mcq-{qa.qa_id}",
            qa_id=qa.qa_id,
            figure_id=qa.figure_id,
            question=draft.question,
            choices=choices,
            correct_index=0,
            correct_answer=draft.correct_answer,
            cot=draft.rationale,
            task=qa.task,
            task_str=qa.task_str,
            blooms_level=level,
            blooms_name=LEVEL_NAMES[level],
            blooms_source=level_source,
            no_image_outcome=check.outcome,
            no_image_accuracy=check.accuracy,
            rewrite_rounds=check.rewrite_rounds,
            consistency_score=context.consistency_score,
            generator=agent.name,
            prompt_version=f"{McqWriteTask.name}@{McqWriteTask.prompt_version}",
            span_kind=draft.span_kind or (mention.key if mention else OTHER),
            distractor_source=draft.distractor_source,
            blooms_level_classifier=classifier_level,
        )

    # Merging ---------------------------------------------------------------------------------

    def finish(self, tables: Iterator[pa.Table], rejections: list[Rejection]) -> Iterator[pa.Table]:
        """Move each question's correct option to the balanced position of its ordinal in the data set."""
        self.position_counts = Counter()
        ordinal = 0
        for table in tables:
            records = from_table(table, MCQ)
            for record in records:
                position = correct_position(ordinal, len(record.choices), self.config.seed)
                distractors = [choice for index, choice in enumerate(record.choices) if index != record.correct_index]
                record.choices = distractors[:position] + [record.choices[record.correct_index]] + distractors[position:]
                record.correct_index = position
                self.position_counts[position] += 1
                ordinal += 1
            yield to_table(records, MCQ).cast(arrow_schema(MCQ))

    def execute(self, executor) -> StageResult:
        result = super().execute(executor)
        usage = {name.removeprefix("agent_"): value for name, value in result.stats.items() if name.startswith("agent_")}
        if usage:
            self.run.add_usage(self.name, usage)
        result.stats["correct_index_counts"] = {str(position): self.position_counts[position] for position in range(self.config.mcq.num_options)}
        if self.config.agent.backend == "offline":
            self.run.add_note(
                "mcq",
                "MCQs were written by the offline template writer: distractors are same-kind spans from other captions "
                "(topped up from a built-in lexicon or scaled values), the no-image check used text shortcut cues "
                "instead of a model, and Bloom's levels come from the offline classifier.",
            )
        logger.info(
            "mcq: correct positions %s; no-image outcomes passed %d, rewritten-passed %d, failed %d",
            result.stats["correct_index_counts"],
            result.stats.get("no_image_passed", 0),
            result.stats.get("no_image_rewritten_passed", 0),
            result.stats.get("no_image_failed", 0),
        )
        return result


class _Tools:
    """The models and pools one process needs, loaded once: span pool, offline writer, embedder, classifier."""

    def __init__(self, stage: McqStage):
        self.seed = stage.config.seed
        pool = SpanPool.from_json(json.loads(stage._pool_path().read_text(encoding="utf-8")))
        self.writer = OfflineWriter(pool, stage.validation, stage.config.seed)
        self.text_model = stage.config.mcq.text_model
        self.embedder: SentenceEmbedder | None = shared_embedder(self.text_model) if self.text_model else None
        self.answerer = ShortcutAnswerer(self.embedder)

    def classifier(self) -> BloomsClassifier:
        return packaged_classifier(self.text_model, self.seed)


def _failure(output: AgentResult[Any]) -> tuple[str, str]:
    """Return the rejection reason and detail of a failed agent result.

    Offline failures name their reason at the start of the detail (`too_few_distractors: ...`).
    """
    detail = output.error_detail
    if output.error == "offline_failed":
        match = _REASON_PREFIX.match(detail)
        if match:
            return match.group(1), detail[match.end() :]
    return output.error or "no_output", detail


def _read_where(path: Path, column: str, values: list[str]) -> pa.Table:
    """Read the rows of a stage output whose `column` is one of `values`."""
    # NOTE: each unit filters the whole file. pyarrow skips row groups whose min/max exclude the
    # values, which works when the filter keeps QAs in stage-1 order; in any other order large runs
    # pay one scan per unit.
    if not values:
        return pq.read_table(path).slice(0, 0)
    return pq.read_table(path, filters=[(column, "in", values)])

