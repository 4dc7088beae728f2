"""The filter's inputs: figures, QAs, signals and embeddings, read from a run and turned into arrays.

A run folder provides `stages/ingest.parquet` (Figure), `stages/generate.parquet` (QA),
`stages/score.parquet` (QASignals) and `stages/embeddings.parquet` (Embedding: one `image` and
one `caption` vector per figure, one `qa` vector per QA).

A QA enters the graph when its figure exists and its question and answer are not empty. The
others are `unplaced`, with the reason, and are reported as dropped without a score. A missing
signal or embedding does not exclude a QA: the signal counts as missing and the embedding as a zero
vector, and both are counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from microvqa_pp.errors import MicroVQAError
from microvqa_pp.graph.build import GraphArrays
from microvqa_pp.graph.signals import signal_matrix
from microvqa_pp.records import QA, TASK_NAMES, Embedding, Figure, QASignals, Rejection
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records

logger = logging.getLogger(__name__)

EMBEDDINGS_STAGE = "embeddings"
"""Name of the parquet file of Embedding records that the `score` stage writes beside its output."""

VQA_INPUT_KINDS = ("vqa-parquet", "vqa-jsonl")
"""`Figure.source_kind` of figures read from a user's VQA data set by `filter --input`; their
`source_key` contains the data set's own image name or path."""

MISSING_FIGURE = "missing_figure"
EMPTY_QA = "empty_qa"

_TASK_IDS = {name.lower(): task for task, name in TASK_NAMES.items()}


@dataclass
class Embeddings:
    """Vectors of one kind, by item id, as one matrix."""

    ids: dict[str, int]
    matrix: np.ndarray

    def lookup(self, item_ids: list[str]) -> tuple[np.ndarray, int]:
        """Return the rows of `item_ids` [N, D] (zeros where missing) and the number missing."""
        width = self.matrix.shape[1] if self.matrix.size else 1
        rows = np.zeros((len(item_ids), width), dtype=np.float32)
        missing = 0
        for position, item_id in enumerate(item_ids):
            index = self.ids.get(item_id)
            if index is None:
                missing += 1
            else:
                rows[position] = self.matrix[index]
        return rows, missing


@dataclass
class FilterInputs:
    """Everything the filter reads, aligned: `signals[i]` belongs to `qas[i]` (None when missing)."""

    figures: list[Figure]
    qas: list[QA]
    signals: list[QASignals | None]
    embeddings: dict[str, Embeddings]
    figure_rejections: dict[str, Rejection] = field(default_factory=dict)
    """Rejections of figures that some QA refers to, by figure id (from `filter --input`)."""


@dataclass
class PlacedInputs:
    """The graph's arrays and, for each of its QAs, the index into `FilterInputs.qas`.

    `unplaced` maps the index of every QA left out of the graph to its reason.
    """

    arrays: GraphArrays
    qa_rows: np.ndarray
    unplaced: dict[int, str]
    missing: dict[str, int]


def read_embeddings(path: Path) -> dict[str, Embeddings]:
    """Read an embeddings parquet file into one matrix per kind (`image`, `caption`, `qa`)."""
    table = pq.read_table(path, columns=["kind", "item_id", "vector"])
    result: dict[str, Embeddings] = {}
    kinds = table.column("kind").to_numpy(zero_copy_only=False)
    for kind in sorted(set(kinds.tolist())):
        selected = table.filter(kinds == kind)
        ids = selected.column("item_id").to_pylist()
        vectors = selected.column("vector").combine_chunks()
        lengths = np.diff(vectors.offsets.to_numpy())
        if lengths.size and (lengths != lengths[0]).any():
            raise MicroVQAError(
                f"{path}: the {kind} embeddings have different lengths ({sorted(set(lengths.tolist()))}); "
                "rerun the `score` stage with --force"
            )
        width = int(lengths[0]) if lengths.size else 0
        flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        result[kind] = Embeddings({item_id: row for row, item_id in enumerate(ids)}, flat.reshape(len(ids), width))
    return result


def embedding_tables(records: list[Embedding]) -> dict[str, Embeddings]:
    """Group Embedding records by kind into matrices (the in-memory twin of `read_embeddings`)."""
    by_kind: dict[str, list[Embedding]] = {}
    for record in records:
        by_kind.setdefault(record.kind, []).append(record)
    return {
        kind: Embeddings(
            {record.item_id: row for row, record in enumerate(items)},
            np.asarray([record.vector for record in items], dtype=np.float32),
        )
        for kind, items in by_kind.items()
    }


def load_run_inputs(run: RunDir) -> FilterInputs:
    """Read the outputs of `ingest`, `generate` and `score` (with its embeddings) from a run."""
    paths = {name: run.stage_output(name) for name in ("ingest", "generate", "score", EMBEDDINGS_STAGE)}
    for name, path in paths.items():
        if not path.exists():
            raise MicroVQAError(f"the filter needs {path}, which does not exist; run `microvqa-pp score {run.root}` first")
    figures = read_records(paths["ingest"], Figure)
    qas = read_records(paths["generate"], QA)
    by_qa = {record.qa_id: record for record in read_records(paths["score"], QASignals)}
    figure_rejections = {}
    rejected_path = run.stage_rejected("ingest")
    if rejected_path.exists():
        figure_rejections = {rejection.item_id: rejection for rejection in read_records(rejected_path, Rejection)}
    return FilterInputs(
        figures=figures,
        qas=qas,
        signals=[by_qa.get(qa.qa_id) for qa in qas],
        embeddings=read_embeddings(paths[EMBEDDINGS_STAGE]),
        figure_rejections=figure_rejections,
    )


def task_index(qa: QA) -> int:
    """Return the 0-based MicroVQA task of a QA, or -1 when unknown."""
    if qa.task in TASK_NAMES:
        return qa.task - 1
    return _TASK_IDS.get(qa.task_str.strip().lower(), 0) - 1


def place(inputs: FilterInputs) -> PlacedInputs:
    """Turn the inputs into graph arrays; QAs that cannot be placed are listed with the reason."""
    figure_index = {figure.figure_id: position for position, figure in enumerate(inputs.figures)}
    qa_rows, qa_figure, unplaced = [], [], {}
    for row, qa in enumerate(inputs.qas):
        if qa.figure_id not in figure_index:
            rejection = inputs.figure_rejections.get(qa.figure_id)
            unplaced[row] = rejection.reason if rejection else MISSING_FIGURE
        elif not qa.question.strip() or not qa.answer.strip():
            unplaced[row] = EMPTY_QA
        else:
            qa_rows.append(row)
            qa_figure.append(figure_index[qa.figure_id])

    figure_ids = [figure.figure_id for figure in inputs.figures]
    placed = [inputs.qas[row] for row in qa_rows]
    missing: Counter[str] = Counter()
    matrices = {}
    for kind, ids in (("image", figure_ids), ("caption", figure_ids), ("qa", [qa.qa_id for qa in placed])):
        table = inputs.embeddings.get(kind, Embeddings({}, np.zeros((0, 1), dtype=np.float32)))
        matrices[kind], missing[f"{kind}_embedding"] = table.lookup(ids)
    signals = [inputs.signals[row] for row in qa_rows]
    missing["signals"] = sum(record is None for record in signals)
    for name, count in missing.items():
        if count:
            logger.warning("filter: %d %s missing; they count as missing inputs in the graph", count, name.replace("_", " ") + ("s" if name != "signals" else ""))

    arrays = GraphArrays(
        image=matrices["image"],
        caption=matrices["caption"],
        qa=matrices["qa"],
        qa_figure=np.asarray(qa_figure, dtype=np.int64),
        signals=signal_matrix(signals),
        task=np.asarray([task_index(qa) for qa in placed], dtype=np.int64),
    )
    return PlacedInputs(arrays, np.asarray(qa_rows, dtype=np.int64), unplaced, dict(missing))


def image_name(figure: Figure) -> str:
    """Return the image name a filter decision reports: the data set's own for `filter --input`."""
    if figure.source_kind in VQA_INPUT_KINDS:
        return figure.source_key
    return f"{figure.figure_id}.{figure.image_format}"
