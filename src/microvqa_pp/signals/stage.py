"""Stage `score`: consistency signals and embeddings for every QA of the `generate` stage.

Work units are slices of at most `signals.chunk_size` QAs, taken row group by row group from
`stages/generate.parquet`, so neither the plan nor a unit reads the whole data set. Each unit
reads only the `ingest` row groups that hold its figures. A unit writes its QASignals part and,
before that, its embeddings part (`stages/score.parts/embeddings/UNIT.parquet`); `finish` merges
the embedding parts into `stages/embeddings.parquet` in unit order. Figures without any QA come
last, in units of their own, so that every figure gets its image and caption embeddings once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from microvqa_pp import models
from microvqa_pp.agents import make_agent
from microvqa_pp.errors import ConfigError, MicroVQAError
from microvqa_pp.records import QA, Embedding, Figure, QASignals, Rejection, arrow_schema, from_table, to_table
from microvqa_pp.run.executor import Executor
from microvqa_pp.run.stage import ChunkedStage, StageResult, UnitResult, WorkUnit, write_parquet
from microvqa_pp.signals.loading import check_device_name, check_model_name, model_identity, resolve_text_model
from microvqa_pp.signals.scorer import SignalScorer, unavailable_signals

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.parquet"
NOTE_KEYS = {"clip": "signals.clip", "nli": "signals.nli", "judge": "signals.judge"}
_USAGE_PREFIX = "usage_"
# Settings that change how fast the signals are computed, not their values.
_SPEED_SETTINGS = ("batch_size", "device")


@dataclass(frozen=True)
class UnitPlan:
    """The input of one work unit: a slice of a generate row group, or figures without QAs."""

    qa_row_group: int | None
    qa_start: int = 0
    qa_stop: int = 0
    figure_row_groups: list[int] = field(default_factory=list)
    embed_figures: list[str] = field(default_factory=list)
    """Figure ids whose image and caption embeddings this unit writes (each figure in one unit)."""


class ScoreStage(ChunkedStage):
    """Compute text, NLI, CLIP and judge signals per QA, and the image, caption and QA embeddings."""

    name = "score"
    requires = ("generate",)
    record_type = QASignals

    def __init__(self, run, config):
        super().__init__(run, config)
        settings = config.signals
        check_device_name(settings.device)
        if settings.text_model != models.TEXT_EMBEDDER:
            check_model_name(settings.text_model, "signals.text_model")
        if settings.nli_model is not None:
            check_model_name(settings.nli_model, "signals.nli_model")
        if settings.clip_model is not None:
            check_model_name(settings.clip_model, "signals.clip_model")
        if settings.judge and config.agent.backend == "offline":
            raise ConfigError(
                "signals.judge needs an LLM agent, but agent.backend is 'offline'; set agent.backend = "
                "'openai' with agent.base_url and agent.model, or set signals.judge = false"
            )
        if settings.judge:
            # Building the agent checks its settings now rather than inside a worker. The instance
            # is not kept, because each worker process needs its own connections.
            make_agent(config.agent, None, config.seed).close()
        self._scorer: SignalScorer | None = None
        self._scorer_pid: int | None = None
        self._unit_ids: list[str] = []
        self._embedding_count = 0

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes build their own scorer; models and connections are never pickled.
        state = self.__dict__.copy()
        state["_scorer"] = None
        state["_scorer_pid"] = None
        return state

    # Paths and fingerprint ---------------------------------------------------------------------

    @property
    def embeddings_path(self) -> Path:
        return self.run.stages_dir / EMBEDDINGS_FILE

    @property
    def embedding_parts(self) -> Path:
        return self.run.stage_parts(self.name) / "embeddings"

    def fingerprint_inputs(self) -> dict[str, Any]:
        settings = self.config.signals.model_dump(mode="json")
        for name in _SPEED_SETTINGS:
            settings.pop(name)
        data: dict[str, Any] = {
            "signals": settings,
            "ingest": self.run.stage_entry("ingest").get("fingerprint", ""),
            "models": {
                "text": model_identity(resolve_text_model(settings["text_model"])),
                "nli": model_identity(settings["nli_model"]) if settings["nli_model"] else None,
                "clip": model_identity(settings["clip_model"]) if settings["clip_model"] else None,
            },
        }
        if settings["judge"]:
            from microvqa_pp.signals.judge import JudgeTask

            agent = self.config.agent
            data["judge"] = {
                "prompt": JudgeTask.prompt_version,
                "agent": [agent.backend, agent.base_url, agent.model, agent.temperature, agent.max_tokens, agent.max_image_side],
            }
        return data

    # Running ---------------------------------------------------------------------------------

    def execute(self, executor: Executor) -> StageResult:
        self._record_unavailable_signals()
        try:
            result = super().execute(executor)
        finally:
            if self._scorer is not None and self._scorer_pid == os.getpid() and self._scorer.agent is not None:
                self._scorer.agent.close()
            self._scorer = None

        usage = {key.removeprefix(_USAGE_PREFIX): result.stats.pop(key) for key in list(result.stats) if key.startswith(_USAGE_PREFIX)}
        if usage:
            self.run.add_usage(f"{self.name}:{self.config.agent.model}", usage)
        result.stats["embeddings"] = self._embedding_count
        return result

    def _record_unavailable_signals(self) -> None:
        """Write a manifest note (and a log warning) for each signal left out; drop stale notes."""
        settings = self.config.signals
        unavailable = unavailable_signals(settings)
        logger.info(
            "score: text similarity with %s; NLI %s; CLIP %s; judge %s",
            settings.text_model,
            settings.nli_model or "unavailable",
            settings.clip_model or "unavailable",
            f"by {self.config.agent.model or self.config.agent.backend}" if settings.judge else "off",
        )
        with self.run.update_manifest() as manifest:
            notes = manifest.setdefault("notes", {})
            for signal, key in NOTE_KEYS.items():
                if signal in unavailable:
                    notes[key] = unavailable[signal]
                    if signal != "judge":
                        logger.warning("score: %s", unavailable[signal])
                else:
                    notes.pop(key, None)

    def plan(self) -> list[WorkUnit]:
        generate_path = self.run.stage_output("generate")
        ingest_path = self.run.stage_output("ingest")
        for path, stage in ((generate_path, "generate"), (ingest_path, "ingest")):
            if not path.exists():
                raise MicroVQAError(f"the output of stage {stage!r} is missing: {path}; run `microvqa-pp {stage} {self.run.root}`")

        ingest_file = pq.ParquetFile(ingest_path)
        figure_ids = ingest_file.read(columns=["figure_id"]).column("figure_id").combine_chunks()
        group_starts = _row_group_starts(ingest_file)
        embedded = np.zeros(len(figure_ids), dtype=bool)
        chunk = self.config.signals.chunk_size

        units: list[WorkUnit] = []
        generate_file = pq.ParquetFile(generate_path)
        for group in range(generate_file.num_row_groups):
            qa_figures = generate_file.read_row_group(group, columns=["figure_id"]).column("figure_id")
            positions = pc.fill_null(pc.index_in(qa_figures, value_set=figure_ids), -1).to_numpy()
            for start in range(0, len(positions), chunk):
                stop = min(start + chunk, len(positions))
                known = positions[start:stop]
                known = known[known >= 0]
                first_seen = [int(position) for position in dict.fromkeys(known.tolist()) if not embedded[position]]
                embedded[first_seen] = True
                plan = UnitPlan(
                    qa_row_group=group,
                    qa_start=start,
                    qa_stop=stop,
                    figure_row_groups=_groups_of(known, group_starts),
                    embed_figures=figure_ids.take(pa.array(first_seen, pa.int64())).to_pylist(),
                )
                units.append(WorkUnit(f"qas-{group:05d}-{start:08d}", plan, stop - start))

        without_qas = np.flatnonzero(~embedded)
        for number, start in enumerate(range(0, len(without_qas), chunk)):
            positions = without_qas[start : start + chunk]
            plan = UnitPlan(
                qa_row_group=None,
                figure_row_groups=_groups_of(positions, group_starts),
                embed_figures=figure_ids.take(pa.array(positions, pa.int64())).to_pylist(),
            )
            units.append(WorkUnit(f"zfigures-{number:05d}", plan, 0))

        # An embedding part of a unit that is not done yet is rewritten when the unit runs, so
        # parts left by a killed run never reach the merged file.
        self._unit_ids = [unit.unit_id for unit in units]
        logger.info("score: %d QAs and %d figures in %d work units", sum(unit.size or 0 for unit in units), len(figure_ids), len(units))
        return units

    def process(self, unit: WorkUnit, progress: Callable[[int], None]) -> UnitResult:
        plan: UnitPlan = unit.payload
        qas: list[QA] = []
        if plan.qa_row_group is not None:
            table = pq.ParquetFile(self.run.stage_output("generate")).read_row_group(plan.qa_row_group)
            qas = from_table(table.slice(plan.qa_start, plan.qa_stop - plan.qa_start), QA)
        figures = self._read_figures(plan, {qa.figure_id for qa in qas} | set(plan.embed_figures))

        scorer = self.scorer
        usage_before = scorer.agent.usage() if scorer.agent is not None else {}
        batch = scorer.score(figures, qas, image_root=self.run.root, embed_figures=plan.embed_figures, progress=progress)
        write_parquet(self.embedding_parts / f"{unit.unit_id}.parquet", to_table(batch.embeddings, Embedding))

        counters = dict(batch.counters)
        counters["figures_embedded"] = sum(1 for embedding in batch.embeddings if embedding.kind == "image")
        if scorer.agent is not None:
            # The agent's counts are totals per process; a unit records what it added.
            for name, total in scorer.agent.usage().items():
                if total - usage_before.get(name, 0):
                    counters[_USAGE_PREFIX + name] = total - usage_before.get(name, 0)
        return UnitResult(records=batch.signals, rejections=batch.rejections, counters=counters)

    def finish(self, tables: Iterator[pa.Table], rejections: list[Rejection]) -> Iterator[pa.Table]:
        """Pass the signal tables through, then merge the embedding parts in unit order."""
        yield from tables
        schema = arrow_schema(Embedding)
        temporary = self.embeddings_path.with_name(f".{EMBEDDINGS_FILE}.tmp")
        count = 0
        with pq.ParquetWriter(temporary, schema) as writer:
            for unit_id in self._unit_ids:
                part = self.embedding_parts / f"{unit_id}.parquet"
                if part.exists():
                    table = pq.read_table(part).cast(schema)
                    writer.write_table(table)
                    count += table.num_rows
        temporary.replace(self.embeddings_path)
        self._embedding_count = count

    # Helpers ---------------------------------------------------------------------------------

    @property
    def scorer(self) -> SignalScorer:
        """Return this process's scorer; its models load on first use and its agent connects once."""
        if self._scorer is None or self._scorer_pid != os.getpid():
            agent = make_agent(self.config.agent, self.run, seed=self.config.seed) if self.config.signals.judge else None
            self._scorer = SignalScorer(self.config.signals, self.run.cache_dir / "embeddings", agent)
            self._scorer_pid = os.getpid()
        return self._scorer

    def _read_figures(self, plan: UnitPlan, figure_ids: set[str]) -> list[Figure]:
        if not figure_ids or not plan.figure_row_groups:
            return []
        table = pq.ParquetFile(self.run.stage_output("ingest")).read_row_groups(plan.figure_row_groups)
        table = table.filter(pc.is_in(table.column("figure_id"), value_set=pa.array(sorted(figure_ids), pa.string())))
        return from_table(table, Figure)


def _row_group_starts(parquet_file: pq.ParquetFile) -> np.ndarray:
    sizes = [parquet_file.metadata.row_group(index).num_rows for index in range(parquet_file.num_row_groups)]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)


def _groups_of(positions: np.ndarray, group_starts: np.ndarray) -> list[int]:
    """Return the sorted row groups that hold the given row positions."""
    if len(positions) == 0:
        return []
    groups = np.searchsorted(group_starts, positions, side="right") - 1
    return sorted({int(group) for group in groups})
