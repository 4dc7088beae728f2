"""Ingest throughput against the bare floor of reading and decoding the same shards.

Builds a set of BIOMEDICA-layout shards in a temporary folder from the bundled sample
(`examples/biomedica/000000.tar`, 15 figures): each shard contains `--copies` copies of the 15
figures under new keys, with bytes appended after the image data so that every figure has its
own SHA-256 (decoders ignore those bytes). Two image formats are measured: the sample's own PNG files, and the same
images re-encoded as JPEG (quality 90), the format of most BIOMEDICA figures.

For each format it prints, in figures per second of wall-clock time and per CPU-second:
- the floor: one process reading the tar members and decoding each image with Pillow;
- `microvqa-pp ingest` with 1 worker (wall-clock rate over the stage's own time in the manifest,
  so Python start-up is left out) and its ratio to the floor;
- `ingest --workers 2` and its speed-up over 1 worker;
- peak resident memory of ingest for a quarter of the shards and for all of them;
- as a diagnostic, the rate of ingest's per-unit work in this process with the image store
  switched off, which shows what writing one file per image costs.
Each rate is the best of `--repeats` runs, the one least slowed by other processes; the rates
per CPU-second are less sensitive to a busy machine.

Run: `python benchmarks/ingest.py [--shards 16] [--copies 4] [--formats png,jpeg] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "biomedica" / "000000.tar"

CHILD = """
import json, os, resource, sys
import microvqa_pp.cli, microvqa_pp.ingest.stage, microvqa_pp.pipeline  # imports are not timed
from microvqa_pp.cli import main

def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime

started = cpu_seconds()
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    usage = {
        "cpu_s": cpu_seconds() - started,
        "main_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "worker_peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    with open(os.environ["BENCHMARK_USAGE_FILE"], "w") as handle:
        json.dump(usage, handle)
"""
"""Runs one command in a fresh process and writes its CPU time and peak memory (KiB) to a file."""


def read_sample() -> list[tuple[str, dict[str, bytes]]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(SAMPLE) as archive:
        for member in archive:
            key, _, extension = member.name.partition(".")
            samples.setdefault(key, {})[extension] = archive.extractfile(member).read()
    return list(samples.items())


def as_jpeg(png: bytes) -> bytes:
    output = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(output, format="JPEG", quality=90)
    return output.getvalue()


def build_shards(folder: Path, count: int, copies: int, image_format: str) -> list[Path]:
    """Write `count` shards of `copies` x 15 distinct figures each; return their paths."""
    samples = read_sample()
    if image_format == "jpeg":
        samples = [(key, {**members, "jpg": as_jpeg(members["jpg"])}) for key, members in samples]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(count):
        path = folder / f"{shard:06d}.tar"
        with tarfile.open(path, "w") as archive:
            for copy in range(copies):
                for key, members in samples:
                    image = members["jpg"] + f"shard {shard} copy {copy}".encode()
                    metadata = json.loads(members["json"])
                    metadata["image_hash"] = hashlib.sha256(image).hexdigest()
                    for extension, data in (("jpg", image), ("txt", members["txt"]), ("json", json.dumps(metadata).encode())):
                        info = tarfile.TarInfo(f"s{shard:06d}c{copy:03d}-{key}.{extension}")
                        info.size = len(data)
                        archive.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def floor_rate(shards: list[Path]) -> dict[str, float]:
    """Read every member of the shards as a stream and decode every image with Pillow."""
    figures = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for shard in shards:
        with open(shard, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                data = archive.extractfile(member).read()
                if member.name.endswith(".jpg"):
                    Image.open(io.BytesIO(data)).load()
                    figures += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"figures": figures, "rate": figures / wall, "cpu_rate": figures / cpu}


def run_ingest(shards: list[Path], out: Path, workers: int) -> dict[str, float]:
    """Run `microvqa-pp ingest` in a fresh process; return its rates and peak memory."""
    shutil.rmtree(out, ignore_errors=True)
    usage_file = out.with_suffix(".usage.json")
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "BENCHMARK_USAGE_FILE": str(usage_file)}
    command = [sys.executable, "-c", CHILD, "-q", "ingest", *map(str, shards), "--out", str(out), "--workers", str(workers)]
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    entry = json.loads((out / "manifest.json").read_text())["stages"]["ingest"]
    usage = json.loads(usage_file.read_text())
    return {
        "figures": entry["count"],
        "rate": entry["count"] / entry["seconds"],
        "cpu_rate": entry["count"] / usage["cpu_s"],
        "main_peak_mib": usage["main_peak_kib"] / 1024,
        "worker_peak_mib": usage["worker_peak_kib"] / 1024,
    }


def validation_rate(shards: list[Path], root: Path) -> dict[str, float]:
    """Run the ingest stage's per-unit work in this process without writing images (a diagnostic)."""
    sys.path.insert(0, str(REPO / "src"))
    from microvqa_pp.config import load_config
    from microvqa_pp.ingest import stage as ingest_stage
    from microvqa_pp.run.rundir import RunDir
    from microvqa_pp.sources import locate_sources

    run = RunDir(root)
    run.create()
    stage = ingest_stage.IngestStage(run, load_config(), locate_sources([str(path) for path in shards]))
    store_image = ingest_stage.store_image
    ingest_stage.store_image = lambda run, sha256, extension, data: f"images/{sha256}.{extension}"
    try:
        figures = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        for unit in stage.plan():
            figures += len(stage.process(unit, lambda count: None).records)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        ingest_stage.store_image = store_image
    return {"figures": figures, "rate": figures / wall, "cpu_rate": figures / cpu}


def best(measure, repeats: int) -> dict[str, float]:
    """Repeat a measurement and keep the fastest run (the least disturbed by other processes)."""
    return max((measure() for _ in range(repeats)), key=lambda result: result["rate"])


def describe_machine() -> str:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{os.cpu_count()} CPUs {platform.machine()}, Python {platform.python_version()}, load average {load}"


def benchmark_format(root: Path, image_format: str, shard_count: int, copies: int, repeats: int) -> None:
    shards = build_shards(root / f"shards-{image_format}", shard_count, copies, image_format)
    size_mib = sum(path.stat().st_size for path in shards) / 2**20
    quarter = shards[: max(1, shard_count // 4)]
    print(f"\n{image_format}: {shard_count} shards of {15 * copies} figures, {size_mib:.0f} MiB")

    floor = best(lambda: floor_rate(shards), repeats)
    one = best(lambda: run_ingest(shards, root / f"run-{image_format}-1", workers=1), repeats)
    two = best(lambda: run_ingest(shards, root / f"run-{image_format}-2", workers=2), repeats)
    small = run_ingest(quarter, root / f"run-{image_format}-quarter", workers=1)
    unstored = best(lambda: validation_rate(shards, root / f"run-{image_format}-unstored"), repeats)
    assert one["figures"] == two["figures"] == floor["figures"], (one, two, floor)

    print(f"  floor (tar read + Pillow decode): {floor['rate']:7.1f} figures/s   {floor['cpu_rate']:7.1f} per CPU-second")
    print(
        f"  ingest, 1 worker:                 {one['rate']:7.1f} figures/s   {one['cpu_rate']:7.1f} per CPU-second   "
        f"ratio to floor {one['rate'] / floor['rate']:.2f} (CPU {one['cpu_rate'] / floor['cpu_rate']:.2f})"
    )
    print(f"  ingest, 2 workers:                {two['rate']:7.1f} figures/s   speed-up {two['rate'] / one['rate']:.2f}")
    print(
        f"  ingest work without the image store (in process, diagnostic): "
        f"{unstored['cpu_rate']:.1f} per CPU-second, ratio to floor {unstored['cpu_rate'] / floor['cpu_rate']:.2f}"
    )
    print(
        f"  peak memory, 1 worker:            {small['main_peak_mib']:.0f} MiB with {len(quarter)} shards, "
        f"{one['main_peak_mib']:.0f} MiB with {shard_count} shards"
    )
    print(f"  peak memory, 2 workers:           main {two['main_peak_mib']:.0f} MiB, largest worker {two['worker_peak_mib']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=16, help="Shards in the full set (default 16).")
    parser.add_argument("--copies", type=int, default=4, help="Copies of the 15 sample figures per shard (default 4).")
    parser.add_argument("--formats", default="png,jpeg", help="Image formats to measure: png, jpeg or both (default).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per measurement; the fastest counts (default 3).")
    parser.add_argument("--keep", type=Path, help="Build in this folder and keep it, instead of a temporary folder.")
    arguments = parser.parse_args()

    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory(prefix="microvqa-bench-") as temporary:
        root = arguments.keep or Path(temporary)
        for image_format in arguments.formats.split(","):
            benchmark_format(root, image_format.strip(), arguments.shards, arguments.copies, arguments.repeats)
    print(f"\nmachine after the runs: {describe_machine()}")


if __name__ == "__main__":
    main()
