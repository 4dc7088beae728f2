"""Time and peak memory of the HiCQA-Graph at 10 k, 100 k and 1 M QA nodes, from random features.

Each size runs in its own process. A graph has three QAs per figure. Image embeddings (256
values, the pixel-descriptor width) and text embeddings (384 values, as all-MiniLM-L6-v2) are
drawn around random topic centres, so that nearest neighbours mean something. Signals are random.
Three phases are measured:

    build   arrays to HeteroData, both k-nearest-neighbour searches included
    epoch   one training epoch over all partitions (default filter settings: partitions of
            50,000 QAs, random-projection forest above 20,000 nodes)
    score   both heads for every QA (two passes, each with half the signals hidden)

Peak memory is the process's peak resident set size during the phase (Linux VmHWM, reset before
each phase), so it includes the arrays that stay loaded. The last table column divides each time
by the number of QAs, relative to the smallest size: about 1 means linear growth.

    python benchmarks/graph_scale.py                  # 10k, 100k and 1M QAs, one thread
    python benchmarks/graph_scale.py --sizes 10000    # one size
    python benchmarks/graph_scale.py --threads 0      # threads as the filter chooses them
    python benchmarks/graph_scale.py --halo           # score each partition with its halo

Training and scoring use one thread by default, because on a machine shared with other jobs
several PyTorch threads wait on each other and their times vary several-fold.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

IMAGE_WIDTH = 256
TEXT_WIDTH = 384
QAS_PER_FIGURE = 3
TOPICS_PER_MILLION = 20_000


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _random_arrays(num_qas: int, seed: int):
    import numpy as np

    from microvqa_pp.graph.build import GraphArrays
    from microvqa_pp.graph.signals import SIGNALS, signal_index

    rng = np.random.default_rng(seed)
    num_figures = -(-num_qas // QAS_PER_FIGURE)
    topics = max(10, num_qas * TOPICS_PER_MILLION // 1_000_000)
    figure_topic = rng.integers(0, topics, num_figures)
    qa_figure = np.repeat(np.arange(num_figures), QAS_PER_FIGURE)[:num_qas]

    def around(centres, members, width):
        values = rng.standard_normal((members.size, width), dtype=np.float32) * 0.5
        values += centres[members]
        return values

    image = around(rng.standard_normal((topics, IMAGE_WIDTH), dtype=np.float32), figure_topic, IMAGE_WIDTH)
    text_centres = rng.standard_normal((topics, TEXT_WIDTH), dtype=np.float32)
    caption = around(text_centres, figure_topic, TEXT_WIDTH)
    qa = around(text_centres, figure_topic[qa_figure], TEXT_WIDTH)

    signals = np.full((num_qas, len(SIGNALS)), np.nan, dtype=np.float32)
    signals[:, signal_index("text_similarity")] = rng.uniform(-0.1, 0.9, num_qas)
    signals[:, signal_index("lexical_overlap")] = rng.uniform(0.0, 1.0, num_qas)
    signals[:, signal_index("span_found")] = rng.integers(0, 2, num_qas)
    task = rng.integers(0, 3, num_qas)
    return GraphArrays(image, caption, qa, qa_figure, signals, task)


def measure(num_qas: int, threads: int | None, seed: int = 0, halo: bool = False) -> dict:
    """Build, train one epoch and score a random graph of `num_qas` QAs; return times and peaks."""
    import torch

    from microvqa_pp.config import FilterConfig
    from microvqa_pp.graph.build import build_graph
    from microvqa_pp.graph.partition import PartitionedGraph
    from microvqa_pp.graph.scoring import SINGLE_THREAD_BELOW, torch_threads
    from microvqa_pp.graph.signals import SignalSpec
    from microvqa_pp.graph.train import build_model, predict_heads, score_folds, train_epoch

    settings = FilterConfig(threads=threads, score_halo=halo)
    arrays = _random_arrays(num_qas, seed)
    spec = SignalSpec.fit(arrays.signals)
    result: dict = {"qas": num_qas, "figures": arrays.num_figures}

    _reset_peak()
    started = time.perf_counter()
    data = build_graph(arrays, spec, knn_k=settings.knn_k, exact_below=settings.knn_exact_below, trees=settings.knn_trees, seed=seed)
    graph = PartitionedGraph(data, settings.batch_qas)
    result["build_s"] = time.perf_counter() - started
    result["build_peak_gib"] = _peak_gib()
    result["edges"] = sum(data[edge_type].num_edges for edge_type in data.edge_types)
    result["partitions"] = len(graph)
    result["edges_inside_partitions"] = graph.kept_edge_share

    threads = settings.threads or (1 if num_qas < SINGLE_THREAD_BELOW else None)
    with torch_threads(threads):
        result["threads"] = torch.get_num_threads()
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = build_model(data, settings)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
        train_mask = torch.ones(num_qas, dtype=torch.bool)

        _reset_peak()
        started = time.perf_counter()
        train_epoch(model, optimizer, graph, spec, train_mask, generator)
        result["epoch_s"] = time.perf_counter() - started
        result["epoch_peak_gib"] = _peak_gib()

        _reset_peak()
        started = time.perf_counter()
        predicted = predict_heads(model, graph, spec, score_folds(num_qas, seed), halo=settings.score_halo)
        result["score_s"] = time.perf_counter() - started
        result["score_peak_gib"] = _peak_gib()
    assert predicted.shape == (num_qas, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="QA node counts")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="PyTorch CPU threads for training and scoring (0: the filter's own choice, see filter.threads)",
    )
    parser.add_argument("--halo", action="store_true", help="Score each partition with its halo (filter.score_halo).")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()

    if arguments.child is not None:
        print(json.dumps(measure(arguments.child, arguments.threads or None, halo=arguments.halo)))
        return

    import platform

    import torch

    print(f"Python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} CPU threads available")
    rows = []
    for size in arguments.sizes:
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--threads", str(arguments.threads), *(["--halo"] if arguments.halo else [])],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)

    base = rows[0]
    header = f"{'QAs':>9} {'edges':>11} {'parts':>5} {'thr':>3}  {'build s':>8} {'GiB':>5}  {'epoch s':>8} {'GiB':>5}  {'score s':>8} {'GiB':>5}  per-QA time vs first (build/epoch/score)"
    print(header)
    for row in rows:
        scale = base["qas"] / row["qas"]
        ratios = "/".join(f"{row[key] / base[key] * scale:.2f}" for key in ("build_s", "epoch_s", "score_s"))
        print(
            f"{row['qas']:>9,} {row['edges']:>11,} {row['partitions']:>5} {row['threads']:>3}  "
            f"{row['build_s']:>8.1f} {row['build_peak_gib']:>5.2f}  {row['epoch_s']:>8.1f} {row['epoch_peak_gib']:>5.2f}  "
            f"{row['score_s']:>8.1f} {row['score_peak_gib']:>5.2f}  {ratios}"
        )


if __name__ == "__main__":
    main()
