"""Time `microvqa-pp eval` against a loopback server with a fixed latency, and the parsers alone.

The server is the OpenAI-compatible stub of the tests (tests/stubs/openai_server.py), so the
figures measure the evaluation's own overhead and its concurrency, not a model. For each
concurrency the script evaluates the 51 questions of the bundled MicroVQA-format CSV into a fresh
folder, then runs the same command again, which finds every result and sends no request.
Finally it times both answer parsers on a mix of reply forms.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/eval_throughput.py --latency 0.2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from stubs.openai_server import OpenAIStub, Reply  # noqa: E402

from microvqa_pp.agents.cache import ResponseCache  # noqa: E402
from microvqa_pp.agents.openai import OpenAIBackend  # noqa: E402
from microvqa_pp.evaluation.loaders import load_dataset  # noqa: E402
from microvqa_pp.evaluation.parsing import parse_reference, parse_robust  # noqa: E402
from microvqa_pp.evaluation.runner import EvalSettings, Evaluation  # noqa: E402

CSV = REPO / "tests" / "data" / "microvqa_format" / "demo_dataset.csv"
REPLIES = [
    "The nuclei are condensed.\nThe answer is (2)",
    "**Answer:** C",
    "The answer is (1). Wait, actually the answer is (4).",
    "The answer is Higher laser power provides more energy to activate PhoCl.",
    "I cannot tell from the image.",
]


def evaluate(folder: Path, url: str, concurrency: int) -> tuple[float, int]:
    """Run one evaluation and return its wall time and the number of requests it sent."""
    loaded = load_dataset(str(CSV), folder / "images")
    backend = OpenAIBackend("stub-model", url, concurrency=concurrency, cache=ResponseCache(folder / "cache" / "llm.sqlite"))
    settings = EvalSettings(model="stub-model", agent="openai", batch_size=max(32, 2 * concurrency))
    started = time.perf_counter()
    Evaluation(folder, backend, settings).run(loaded)
    seconds = time.perf_counter() - started
    requests = backend.usage().get("requests", 0)
    backend.close()
    return seconds, requests


def time_parsers(rounds: int) -> dict[str, float]:
    """Return the replies parsed per second by each parser."""
    choices = ["Increased binding", "Higher laser power provides more energy to activate PhoCl", "Thermal damage", "Less DAPI"]
    rates = {}
    for name, parse in (("reference", parse_reference), ("robust", lambda reply: parse_robust(reply, choices))):
        started = time.perf_counter()
        for _ in range(rounds):
            for reply in REPLIES:
                parse(reply)
        rates[name] = rounds * len(REPLIES) / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="Seconds the server waits before each reply.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="Request slots to measure.")
    parser.add_argument("--parser-rounds", type=int, default=2000, help="Times each reply form is parsed.")
    arguments = parser.parse_args()

    rows = []
    with OpenAIStub(latency=arguments.latency) as stub, tempfile.TemporaryDirectory() as temporary:
        stub.default_reply = Reply.text("The answer is (2)")
        for concurrency in arguments.concurrency:
            folder = Path(temporary) / f"c{concurrency}"
            first, sent = evaluate(folder, stub.url, concurrency)
            again, resent = evaluate(folder, stub.url, concurrency)
            rows.append((concurrency, first, sent, again, resent))

    baseline = rows[0][1]
    print(f"51 questions, server latency {arguments.latency:g} s")
    print("| concurrency | seconds | questions/s | speed-up | requests | rerun seconds | rerun requests |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for concurrency, first, sent, again, resent in rows:
        print(f"| {concurrency} | {first:.2f} | {51 / first:.1f} | {baseline / first:.1f}x | {sent} | {again:.2f} | {resent} |")

    rates = time_parsers(arguments.parser_rounds)
    print()
    print("| parser | replies/s |")
    print("| --- | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
