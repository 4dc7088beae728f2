"""Stage `generate`: caption-grounded question-answer pairs for every figure.

The agent (an OpenAI-compatible model, or the offline template writer) proposes QAs for each
figure from its image and caption. The grounding check keeps those whose answer span occurs in
the caption and whose question does not give the answer away. Figures are processed in chunks of
`generate.chunk_size`; each chunk's QAs and rejections are written at once, and model replies are
cached as they arrive, so a killed run resumes without asking the model again for a figure it
already answered.

Rejections are recorded per figure (`unparseable_reply` with the raw reply, request errors such
as `timeout` or `http_500`, `no_questions`) and per QA (`span_not_in_caption`,
`answer_in_question`, `duplicate_question`, `too_many_questions`, `empty_field`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import pyarrow.parquet as pq

from microvqa_pp.agents import Agent, AgentResult, make_agent
from microvqa_pp.agents.base import BackendError
from microvqa_pp.generate.grounding import CaptionChecker, GroundedQA
from microvqa_pp.generate.schema import ProposedQAs
from microvqa_pp.generate.task import FigureInput, GenerateQATask
from microvqa_pp.records import QA, TASK_NAMES, Rejection
from microvqa_pp.run.executor import Executor
from microvqa_pp.run.stage import ChunkedStage, StageResult, UnitResult, WorkUnit

logger = logging.getLogger(__name__)

RAW_REPLY_CHARS = 4000
"""Characters of an unusable reply kept in its rejection record."""
CONTENT_ERRORS = {"unparseable_reply", "offline_failed", "image_unreadable", "empty_reply", "http_400"}
"""Failures caused by one figure or its reply; any other failure is the server's or the network's."""
USAGE_PREFIX = "llm_"


class GenerateStage(ChunkedStage):
    """Write caption-grounded QAs for the figures of `ingest` (stage `generate`)."""

    name = "generate"
    requires = ("ingest",)
    config_sections = ("generate",)
    record_type = QA

    def __init__(self, run, config):
        super().__init__(run, config)
        self.task = GenerateQATask(config.generate.questions_per_figure)
        # Building the agent checks the agent settings now rather than inside a worker. The
        # instance is not kept, because each worker process needs its own connections.
        make_agent(config.agent, None, config.seed).close()
        self._agent: Agent | None = None
        self._agent_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_agent"] = None
        state["_agent_pid"] = None
        return state

    @property
    def offline(self) -> bool:
        return self.config.agent.backend == "offline"

    def generator_name(self) -> str:
        return "offline-template" if self.offline else self.config.agent.model

    def prompt_version(self) -> str:
        return GenerateQATask.offline_version() if self.offline else f"{self.task.name}@{self.task.prompt_version}"

    def fingerprint_inputs(self) -> dict[str, Any]:
        agent = self.config.agent
        inputs: dict[str, Any] = {"backend": agent.backend, "prompt": self.prompt_version()}
        if not self.offline:
            inputs.update(model=agent.model, temperature=agent.temperature, max_tokens=agent.max_tokens, max_image_side=agent.max_image_side)
        return inputs

    def agent(self) -> Agent:
        """Return this process's agent, building it on first use (also after a fork)."""
        if self._agent is None or self._agent_pid != os.getpid():
            self._agent = make_agent(self.config.agent, self.run, self.config.seed)
            self._agent_pid = os.getpid()
        return self._agent

    def plan(self) -> list[WorkUnit]:
        table = pq.read_table(self.run.stage_output("ingest"), columns=["figure_id", "caption", "image_path"])
        rows = table.to_pylist()
        size = self.config.generate.chunk_size
        units = []
        for number, start in enumerate(range(0, len(rows), size)):
            chunk = tuple((row["figure_id"], row["caption"], row["image_path"]) for row in rows[start : start + size])
            units.append(WorkUnit(f"{number:05d}", chunk, len(chunk)))
        return units

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        figures = [FigureInput(figure_id, caption, self.run.root / image_path) for figure_id, caption, image_path in unit.payload]
        agent = self.agent()
        usage_before = agent.usage()
        results = agent.run(self.task, figures)
        usage = {key: value - usage_before.get(key, 0) for key, value in agent.usage().items()}

        result = UnitResult(counters={"qa_proposed": 0})
        request_failures = 0
        for figure, agent_result in zip(figures, results):
            if agent_result.ok:
                self._ground(figure, agent_result, result)
            else:
                request_failures += agent_result.error not in CONTENT_ERRORS
                result.rejections.append(self._figure_rejection(figure, agent_result))
            progress(1)

        # Every figure of the chunk failing at the server (after all retries) means the server
        # is down or overloaded, not that the figures are bad: stop, so a rerun can resume.
        if request_failures == len(figures) >= 2:
            reasons = sorted({agent_result.error for agent_result in results})
            raise BackendError(
                f"all {len(figures)} requests of work unit {unit.unit_id} failed ({', '.join(reasons)}) at "
                f"{self.config.agent.base_url}; check the server, then run the same command again to resume"
            )

        result.counters["figures"] = len(figures)
        result.counters["figures_without_qa"] = len(figures) - len({record.figure_id for record in result.records})
        result.counters["qa_accepted"] = len(result.records)
        result.counters["replies_repaired"] = sum(agent_result.repaired for agent_result in results)
        for key, value in usage.items():
            result.counters[USAGE_PREFIX + key] = value
        return result

    def _ground(self, figure: FigureInput, agent_result: AgentResult[ProposedQAs], result: UnitResult) -> None:
        proposed = agent_result.output
        assert proposed is not None
        if not proposed.questions:
            result.rejections.append(Rejection(self.name, figure.figure_id, "no_questions", "the writer proposed no question for this caption"))
            return

        checker = CaptionChecker(figure.caption)
        kept = 0
        result.counters["qa_proposed"] += len(proposed.questions)
        for number, qa in enumerate(proposed.questions, start=1):
            qa_id = f"{figure.figure_id}#qa{number}"
            outcome = checker.check(qa)
            if not isinstance(outcome, GroundedQA):
                result.rejections.append(Rejection(self.name, qa_id, outcome.reason, f"{outcome.detail}; question: {qa.question!r}"))
                continue
            if kept == self.task.count:
                result.rejections.append(Rejection(self.name, qa_id, "too_many_questions", f"only {self.task.count} QAs per figure are kept"))
                continue
            kept += 1
            result.records.append(self._record(qa_id, figure, outcome))

    def _record(self, qa_id: str, figure: FigureInput, qa: GroundedQA) -> QA:
        return QA(
            qa_id=qa_id,
            figure_id=figure.figure_id,
            question=qa.question,
            answer=qa.answer,
            answer_span=qa.answer_span,
            span_start=qa.span_start,
            span_end=qa.span_end,
            support_sentence=qa.support_sentence,
            task=qa.task,
            task_str=TASK_NAMES[qa.task],
            generator=self.generator_name(),
            template_generated=self.offline,
            prompt_version=self.prompt_version(),
            answer_kind=qa.answer_kind,
            panel=qa.panel,
        )

    def _figure_rejection(self, figure: FigureInput, agent_result: AgentResult[ProposedQAs]) -> Rejection:
        detail = agent_result.error_detail
        if agent_result.raw_reply:
            detail = f"{detail}\n--- reply ---\n{agent_result.raw_reply[:RAW_REPLY_CHARS]}"
        logger.debug("generate: no QAs for %s: %s", figure.figure_id, agent_result.error)
        return Rejection(self.name, figure.figure_id, agent_result.error, detail)

    def execute(self, executor: Executor) -> StageResult:
        try:
            result = super().execute(executor)
        finally:
            if self._agent is not None and self._agent_pid == os.getpid():
                self._agent.close()
                self._agent = None

        usage = {key.removeprefix(USAGE_PREFIX): value for key, value in result.stats.items() if key.startswith(USAGE_PREFIX)}
        if usage:
            self.run.add_usage(f"{self.name}:{self.generator_name()}", usage)
        if self.offline:
            self.run.add_note(
                "generate",
                "Questions were written by the offline template writer (no language model) from "
                "answer spans found by rules in each caption; they are marked template_generated.",
            )
        return result
