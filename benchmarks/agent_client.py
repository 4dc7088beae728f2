"""Throughput of the OpenAI-compatible client against a stub server with a fixed latency.

Starts tests/stubs/openai_server.py in its own process, replying after a fixed latency (200 ms by
default), and sends batches of chat requests through `OpenAIBackend.complete` at concurrency 1,
8 and 32. With a fixed latency L, the best possible throughput at concurrency c is c / L
requests per second, so the ratio to it shows the client's own overhead. Each setting runs
`--repeats` times after a warm-up batch, and the median is reported.

    python benchmarks/agent_client.py [--latency 0.2] [--rounds 10] [--repeats 3] [--cache]

`--cache` also measures the client with the SQLite reply cache on (every reply is written; the
keys never repeat, so nothing is read back).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from microvqa_pp.agents.base import ChatRequest, Message  # noqa: E402
from microvqa_pp.agents.cache import ResponseCache  # noqa: E402
from microvqa_pp.agents.openai import OpenAIBackend  # noqa: E402

CONCURRENCIES = (1, 8, 32)


def start_stub(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "stubs" / "openai_server.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        process.kill()
        raise RuntimeError(f"the stub server did not start (it printed {url!r})")
    return process, url


def requests(count: int) -> list[ChatRequest]:
    # A fresh id per request keeps cache keys unique, so the cache variant writes every reply.
    return [
        ChatRequest(messages=(Message.text("user", f"Which stain labels the nuclei? ({uuid.uuid4().hex})"),), max_tokens=64)
        for _ in range(count)
    ]


def measure(url: str, concurrency: int, latency: float, rounds: int, repeats: int, cache: ResponseCache | None) -> dict[str, float]:
    backend = OpenAIBackend("stub-model", url, concurrency=concurrency, timeout_s=30, max_retries=0, cache=cache)
    try:
        backend.complete(requests(concurrency))
        rates = []
        for _ in range(repeats):
            batch = requests(concurrency * rounds)
            started = time.perf_counter()
            replies = backend.complete(batch)
            seconds = time.perf_counter() - started
            failed = [reply.error for reply in replies if reply.error]
            if failed:
                raise RuntimeError(f"{len(failed)} requests failed: {sorted(set(failed))}")
            rates.append(len(batch) / seconds)
    finally:
        backend.close()
    rate = statistics.median(rates)
    ideal = concurrency / latency
    return {"concurrency": concurrency, "requests": concurrency * rounds, "rps": rate, "ideal_rps": ideal, "ratio": rate / ideal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="Stub reply latency in seconds.")
    parser.add_argument("--rounds", type=int, default=10, help="Requests per measurement, in multiples of the concurrency.")
    parser.add_argument("--repeats", type=int, default=3, help="Measurements per setting; the median is reported.")
    parser.add_argument("--cache", action="store_true", help="Also measure with the SQLite reply cache on.")
    arguments = parser.parse_args()

    process, url = start_stub(arguments.latency)
    results = []
    try:
        variants: list[tuple[str, bool]] = [("no cache", False)] + ([("cache", True)] if arguments.cache else [])
        for label, use_cache in variants:
            with tempfile.TemporaryDirectory() as folder:
                cache = ResponseCache(Path(folder) / "llm.sqlite") if use_cache else None
                for concurrency in CONCURRENCIES:
                    row = measure(url, concurrency, arguments.latency, arguments.rounds, arguments.repeats, cache)
                    row["variant"] = label
                    results.append(row)
                    print(
                        f"{label:8}  concurrency {concurrency:3d}: {row['rps']:7.1f} req/s "
                        f"(ideal {row['ideal_rps']:6.1f}, ratio {row['ratio']:.3f}, {row['requests']} requests)",
                        flush=True,
                    )
    finally:
        process.kill()
        process.wait()

    output = REPO / "benchmarks" / "out" / "agent_client.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"python": platform.python_version(), "latency_s": arguments.latency, "results": results}, indent=2) + "\n")
    print(f"results: {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
