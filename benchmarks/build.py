"""Time the whole offline build of the bundled sample and each stage's share of the wall time.

    python benchmarks/build.py [--out FOLDER] [--keep]

Runs the stages of this version in one process, as `microvqa-pp build` does, on the 35 bundled
figures (examples/biomedica/000000.tar, examples/elife-01222, examples/elife-00230) with the
offline profile, then writes the report. Stage times come from the run manifest; the rest of
the wall time (opening the run, resolving settings) is shown as `setup`. Module imports before
the clock starts are not counted.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SAMPLE = [REPO / "examples" / "biomedica" / "000000.tar", REPO / "examples" / "elife-01222", REPO / "examples" / "elife-00230"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="run folder to build into (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    arguments = parser.parse_args()

    import torch

    from microvqa_pp.pipeline import STAGES, available_stages, finish_build, open_run, run_stages
    from microvqa_pp.sources import locate_sources

    root = arguments.out or Path(tempfile.mkdtemp(prefix="microvqa-build-")) / "run"
    if root.exists():
        shutil.rmtree(root)
    names = available_stages()

    started = time.perf_counter()
    run, config = open_run(str(root), create=True, sources=locate_sources([str(path) for path in SAMPLE], "auto"), layers={"profile": "offline"})
    run_stages(names, run, config)
    report_started = time.perf_counter()
    finish_build(run, config)
    finished = time.perf_counter()

    wall = finished - started
    stages = run.read_manifest()["stages"]
    rows = [(name, stages[name]["count"], stages[name]["seconds"]) for name in names]
    report_seconds = finished - report_started
    setup = wall - sum(seconds for _, _, seconds in rows) - report_seconds

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}")
    print(f"sample: {len(SAMPLE)} sources, offline profile, run folder {root}")
    missing = [name for name in STAGES if name not in names]
    if missing:
        print(f"stages not run (the build stops before the first stage this version lacks): {', '.join(missing)}")
    print(f"{'step':<10} {'records':>8} {'seconds':>9} {'share':>7}")
    for name, count, seconds in [*rows, ("report", "", report_seconds), ("setup", "", setup)]:
        print(f"{name:<10} {count!s:>8} {seconds:>9.2f} {seconds / wall:>7.1%}")
    print(f"{'total':<10} {'':>8} {wall:>9.2f} {1:>7.1%}")

    if arguments.out is None and not arguments.keep:
        shutil.rmtree(root.parent)


if __name__ == "__main__":
    main()
