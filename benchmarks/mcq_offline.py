"""The offline mcq stage on the bundled figures: throughput, rejections, outcomes and positions.

Ingests the 35 bundled figures, writes QAs with the offline `generate` stage and keeps all of
them in place of the filter. Then it runs the `mcq` stage offline twice. The first run loads
MiniLM and trains the Bloom's classifier. The second, with `--force` in the same process, shows
the cost per question without that one-off loading.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/mcq_offline.py [--out FOLDER]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

from microvqa_pp.config import load_config
from microvqa_pp.mcq.stage import McqStage
from microvqa_pp.pipeline import open_run, run_stages
from microvqa_pp.records import MCQ, QA, FilterDecision, to_table
from microvqa_pp.run.stage import read_records, run_stage, write_parquet
from microvqa_pp.sources import locate_sources

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Run folder to create (default: a temporary folder).")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = arguments.out or Path(tempfile.mkdtemp(prefix="mcq-benchmark-")) / "run"
    sources = locate_sources([str(EXAMPLES / "biomedica" / "000000.tar"), str(EXAMPLES / "elife-01222"), str(EXAMPLES / "elife-00230")], "auto")
    run, _ = open_run(str(root), create=True, sources=sources)
    config = load_config("offline", {})
    run_stages(["ingest", "generate"], run, config)

    qas = read_records(run.stage_output("generate"), QA)
    decisions = [FilterDecision(qa.qa_id, qa.figure_id, "", qa.question, 1.0, True, "", "none", rank) for rank, qa in enumerate(qas)]
    write_parquet(run.stage_output("filter"), to_table(decisions, FilterDecision))
    run.set_stage("filter", state="done", fingerprint="benchmark-keep-all", count=len(decisions))

    timings = []
    for force in (False, True):
        started = time.perf_counter()
        result = run_stage(McqStage(run, config), force=force)
        timings.append(time.perf_counter() - started)

    records = read_records(run.stage_output("mcq"), MCQ)
    stats = result.stats
    print(f"{len(qas)} QAs from {stats.get('qas_in', 0)} kept; {len(records)} MCQs; rejected {dict(result.rejected)}")
    print(f"first run (loads MiniLM, trains the Bloom's classifier): {timings[0]:.1f} s")
    print(f"second run (--force, models loaded): {timings[1]:.1f} s, {len(qas) / timings[1]:.1f} QAs/s")
    print("no-image outcomes:", dict(Counter(record.no_image_outcome for record in records)))
    print("correct positions:", stats["correct_index_counts"])
    print("answer kinds:", dict(Counter(record.span_kind.partition(":")[0] for record in records).most_common()))
    print("distractor sources:", dict(Counter(record.distractor_source for record in records).most_common()))
    print("Bloom's levels:", dict(sorted(Counter(record.blooms_level for record in records).items())))
    print(f"run folder: {root}")


if __name__ == "__main__":
    main()
