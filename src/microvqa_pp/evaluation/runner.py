"""Run an evaluation: requests through a chat backend, checkpoints, resume and the output files.

Output folder `DIR/`:

    results.parquet       one row per question (`EvalResult`): prompt hash, raw reply, each
                          parser's answer and correctness; options are 1-based and
                          `correct_index` is 0-based (see `RESULT_COLUMN_DESCRIPTIONS`)
    summary.json          N, accuracy, unparsed share, per task and per Bloom's level, 95 % CI
    report.md             the leaderboard-style table, groups, rejections, parser disagreements
    rejected.parquet      rows of the data set that could not be evaluated, with the reason
    images/               the data set's images, stored once by SHA-256
    results.parts/        finished batches of an evaluation still in progress
    cache/                the response cache of the OpenAI-compatible backend
    options.json          the options that decide the results; a run with other ones is rejected
    eval.log              the log of every command run on this folder

Questions are sent in batches; each finished batch is written to `results.parts/` at once, so a
killed evaluation resumes with the questions that have no result. A result is reused only when
its `request_key` (the prompt hash plus every setting that changes the reply) matches, and a
request that failed is sent again. When every request of a run fails (a server that is down), the
run raises `RequestsFailedError` instead of reporting an accuracy of 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from microvqa_pp.agents.base import ChatBackend, ChatReply, ChatRequest, ImagePart
from microvqa_pp.errors import ConfigError, MicroVQAError
from microvqa_pp.evaluation.loaders import LoadedDataset
from microvqa_pp.evaluation.options import DEFINING_OPTIONS, check_options, store_options
from microvqa_pp.evaluation.parsing import parse_reference, parse_robust
from microvqa_pp.evaluation.prompt import build_request, check_no_image_mode, template_for
from microvqa_pp.evaluation.records import EvalQuestion, EvalResult, results_table
from microvqa_pp.evaluation.report import build_summary, leaderboard_table, render_report
from microvqa_pp.records import Rejection, from_table, to_table
from microvqa_pp.run.rundir import atomic_write_text
from microvqa_pp.run.stage import write_parquet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides which requests an evaluation sends."""

    model: str
    agent: str
    no_image: str = "off"
    temperature: float = 1.0
    """MicroVQA's API client sends temperature 1 (its default); 0 gives greedy replies."""
    max_tokens: int = 2048
    seed: int = 0
    """Seed of each request, as MicroVQA sends it, and of the `limit` sample."""
    limit: int | None = None
    batch_size: int = 32
    """Questions per checkpoint; changes only how often progress is saved, never a result."""
    max_image_side: int | None = None
    """The longer image side the backend shrinks images to; None: full size."""
    dataset: str = ""
    """The data set: the absolute path of a local file or folder, or a Hugging Face id."""
    split: str | None = None

    def __post_init__(self) -> None:
        check_no_image_mode(self.no_image)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")

    def defining_options(self) -> dict[str, Any]:
        """Return the settings that decide the results, which an output folder is bound to."""
        return {name: getattr(self, name) for name in DEFINING_OPTIONS}

    def request_key(self, prompt_hash: str) -> str:
        data = {
            "prompt_hash": prompt_hash,
            "model": self.model,
            "agent": self.agent,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "max_image_side": self.max_image_side,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


class RequestsFailedError(MicroVQAError):
    """Every request an evaluation sent failed, so there is no reply to score."""


@dataclass
class _Planned:
    question: EvalQuestion
    request: ChatRequest
    prompt_hash: str
    request_key: str

    @property
    def result_id(self) -> tuple[str, str]:
        # Two questions of a data set may send the same request, so the id includes the question.
        return (self.question.question_id, self.request_key)


class Evaluation:
    """Evaluates one backend on one data set into an output folder."""

    def __init__(self, out_dir: Path, backend: ChatBackend, settings: EvalSettings):
        self.out_dir = Path(out_dir)
        self.backend = backend
        self.settings = settings
        self.parts_dir = self.out_dir / "results.parts"
        self.results_path = self.out_dir / "results.parquet"
        self.summary_path = self.out_dir / "summary.json"
        self.report_path = self.out_dir / "report.md"
        self.rejected_path = self.out_dir / "rejected.parquet"

    def select(self, questions: Sequence[EvalQuestion]) -> list[EvalQuestion]:
        """Return the questions to evaluate: all, or a seeded sample of `limit` in data-set order."""
        limit = self.settings.limit
        if limit is None or limit >= len(questions):
            return list(questions)
        chosen = sorted(random.Random(self.settings.seed).sample(range(len(questions)), limit))
        logger.info("evaluating a sample of %d of %d questions (seed %d)", limit, len(questions), self.settings.seed)
        return [questions[index] for index in chosen]

    def run(self, loaded: LoadedDataset) -> dict[str, Any]:
        """Evaluate the questions, write every output file and return the summary.

        Raises RequestsFailedError, and writes no summary, when every request sent failed.
        Results of questions answered in earlier runs stay on disk for the next run.
        """
        check_options(self.out_dir, self.settings.defining_options())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        store_options(self.out_dir, self.settings.defining_options())
        planned = [self._plan(question) for question in self.select(loaded.questions)]
        done = self._finished_results({item.result_id for item in planned})
        todo = [item for item in planned if item.result_id not in done]
        logger.info(
            "eval: started, %d questions, %d already done, model %s (%s), no-image mode %s",
            len(planned),
            len(planned) - len(todo),
            self.settings.model,
            self.settings.agent,
            self.settings.no_image,
        )

        with tqdm(total=len(planned), initial=len(planned) - len(todo), desc="eval", unit="question") as bar:
            for start in range(0, len(todo), self.settings.batch_size):
                batch = todo[start : start + self.settings.batch_size]
                replies = self.backend.complete([item.request for item in batch])
                results = [self._score(item, reply) for item, reply in zip(batch, replies)]
                self._write_part(results)
                done.update(((result.question_id, result.request_key), result) for result in results)
                bar.update(len(batch))

        sent = [done[item.result_id] for item in todo]
        if sent and all(result.error for result in sent):
            raise RequestsFailedError(self._all_failed_message(sent, answered=len(planned) - len(todo)))

        results = [done[item.result_id] for item in planned]
        summary = self._write_outputs(loaded, results)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        self._log_end(summary)
        return summary

    # Steps ---------------------------------------------------------------------------------

    def _plan(self, question: EvalQuestion) -> _Planned:
        request, prompt_hash = build_request(
            question,
            no_image=self.settings.no_image,
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
            seed=self.settings.seed,
        )
        return _Planned(question, request, prompt_hash, self.settings.request_key(prompt_hash))

    def _score(self, item: _Planned, reply: ChatReply) -> EvalResult:
        question = item.question
        text = "" if reply.error else reply.text
        reference = parse_reference(text)
        robust = parse_robust(text, question.choices)
        correct_option = question.correct_index + 1
        return EvalResult(
            question_id=question.question_id,
            task=question.task,
            task_str=question.task_str,
            blooms_level=question.blooms_level,
            blooms_name=question.blooms_name,
            correct_index=question.correct_index,
            correct_option=correct_option,
            n_choices=len(question.choices),
            n_images=sum(isinstance(part, ImagePart) for message in item.request.messages for part in message.content),
            prompt_hash=item.prompt_hash,
            request_key=item.request_key,
            model=self.settings.model,
            reply=text,
            error=reply.error,
            error_detail=reply.error_detail,
            cached=reply.cached,
            reference_option=reference.option,
            reference_reason=reference.reason if not reply.error else "request_failed",
            reference_correct=reference.option == correct_option,
            robust_option=robust.option,
            robust_reason=robust.reason if not reply.error else "request_failed",
            robust_correct=robust.option == correct_option,
        )

    def _finished_results(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], EvalResult]:
        """Read the results of earlier runs of the same requests; failed requests are not reused."""
        finished: dict[tuple[str, str], EvalResult] = {}
        sources = sorted(self.parts_dir.glob("part-*.parquet")) if self.parts_dir.is_dir() else []
        if self.results_path.exists():
            sources.insert(0, self.results_path)
        for path in sources:
            table = pq.read_table(path)
            if "correct_option" not in table.column_names:
                # Results files of earlier versions have no correct_option column.
                table = table.append_column("correct_option", pc.add(table["correct_index"], 1))
            for result in from_table(table, EvalResult):
                result_id = (result.question_id, result.request_key)
                if result_id in wanted and not result.error:
                    finished[result_id] = result
        return finished

    def _write_part(self, results: list[EvalResult]) -> None:
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(path.stem.removeprefix("part-")) for path in self.parts_dir.glob("part-*.parquet")]
        path = self.parts_dir / f"part-{max(numbers, default=0) + 1:06d}.parquet"
        write_parquet(path, results_table(results))

    def _write_outputs(self, loaded: LoadedDataset, results: list[EvalResult]) -> dict[str, Any]:
        template = template_for(self.settings.no_image)
        run_info = {
            "dataset": loaded.source,
            "layout": loaded.layout,
            "rejected": len(loaded.rejections),
            "notes": loaded.notes,
            "model": self.settings.model,
            "agent": self.settings.agent,
            "no_image": self.settings.no_image,
            "prompt": f"{template.name}@{template.version}",
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
            "seed": self.settings.seed,
            "limit": self.settings.limit,
            "max_image_side": self.settings.max_image_side,
            "usage": self.backend.usage(),
        }
        summary = build_summary(results, run_info)
        write_parquet(self.results_path, results_table(results))
        write_parquet(self.rejected_path, to_table(list(loaded.rejections), Rejection))
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")
        atomic_write_text(self.report_path, render_report(summary, results, loaded.rejections, self.settings.model))
        return summary

    def _all_failed_message(self, failed: list[EvalResult], answered: int) -> str:
        reasons = Counter(result.error for result in failed)
        counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items()))
        detail = " ".join(failed[0].error_detail.split())[:_ERROR_DETAIL_CHARS]
        message = f"all {len(failed)} requests failed ({counts}), so no accuracy is reported. First error: {detail or failed[0].error}."
        if answered:
            message += f" The {answered} questions answered in earlier runs stay in {self.out_dir} for the next run."
        return message

    def _log_end(self, summary: dict[str, Any]) -> None:
        reference, robust = summary["parsers"]["reference"], summary["parsers"]["robust"]
        logger.info(
            "eval: done, %d questions, accuracy %.3f (reference) / %.3f (robust), unparsed %.3f / %.3f, "
            "%d disagreements, %d failed requests",
            summary["n"],
            reference["accuracy"],
            robust["accuracy"],
            reference["unparsed"],
            robust["unparsed"],
            summary["disagreements"],
            summary["failed_requests"],
        )
        if summary["failed_requests"]:
            logger.warning(
                "%d of %d questions have no reply because their requests failed (%s). They are scored wrong, "
                "so the accuracy is a lower bound. Run the same command again to retry them",
                summary["failed_requests"],
                summary["n"],
                ", ".join(f"{reason}: {count}" for reason, count in summary["failed_reasons"].items()),
            )


_ERROR_DETAIL_CHARS = 200
"""Characters of the first error's detail quoted in the one-line error of a run where every request failed."""


def format_table(summary: dict[str, Any]) -> str:
    """Return the leaderboard-style table of a summary, for standard output."""
    return leaderboard_table(summary, summary.get("model", ""))

