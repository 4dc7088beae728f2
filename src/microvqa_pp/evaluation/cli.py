"""The `microvqa-pp eval` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from microvqa_pp import __version__
from microvqa_pp.agents.base import ChatBackend
from microvqa_pp.cli import handle_errors
from microvqa_pp.config import Config, explicit_settings, load_config
from microvqa_pp.errors import ConfigError
from microvqa_pp.log import log_to_file

logger = logging.getLogger(__name__)


@click.command("eval")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the results; rerunning the same command resumes in it.")
@click.option("--agent", "backend", type=click.Choice(["openai", "transformers"]), help="Model backend: an OpenAI-compatible server or a local transformers model. Default: openai.")
@click.option("--base-url", help="Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")
@click.option("--model", help="Model name to request from the server, or the hub id or local folder of a transformers model.")
@click.option(
    "--no-image",
    "no_image",
    type=click.Choice(["reference", "choices-only", "last-sentence"]),
    help="Send no images: `reference` uses MicroVQA's no-image prompt; `choices-only` also drops the question "
    "text; `last-sentence` keeps only the question's last sentence.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate a seeded random sample of this many questions.")
@click.option("--seed", type=int, help="Seed sent with each request and used for the --limit sample. Default: 0, as MicroVQA.")
@click.option("--split", help="Split of a Hugging Face data set (default: its only split).")
@click.option("--temperature", type=click.FloatRange(min=0), help="Sampling temperature. Default: 1, as MicroVQA's reference client.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Maximum tokens per reply. Default: 2048.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests in flight at once (OpenAI-compatible backend).")
@click.option("--device", help="Torch device of the transformers backend: auto, cpu, cuda, mps.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file of settings ([agent] and [eval] tables).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting, e.g. --set agent.timeout_s=300 (repeatable).")
@handle_errors
def eval_command(dataset: str, out: Path, config_file: Path | None, overrides: tuple[str, ...], **options: Any) -> None:
    """Evaluate a model on DATASET with MicroVQA's reference prompt and answer parsing.

    DATASET is a Hugging Face id (jmhb/microvqa), a parquet file or folder in the MicroVQA layout
    (also the project's test-split export, or a run folder), a MicroVQA++ release parquet, or a
    MicroVQA-format CSV. Writes results.parquet, summary.json and report.md to --out and prints the
    accuracy table. Every answer is read by the reference parser and by a robust parser.
    """
    from microvqa_pp.evaluation.loaders import dataset_identity, load_dataset
    from microvqa_pp.evaluation.options import check_options
    from microvqa_pp.evaluation.runner import EvalSettings, Evaluation, RequestsFailedError, format_table

    config = _config(config_file, overrides, options)
    out.mkdir(parents=True, exist_ok=True)
    log_to_file(out / "eval.log")
    logger.info("microvqa-pp %s: %s", __version__, " ".join(sys.argv[1:]))

    settings = EvalSettings(
        model=_model_name(config),
        agent=config.eval.backend,
        no_image=config.eval.no_image,
        temperature=config.eval.temperature,
        max_tokens=config.eval.max_tokens,
        seed=config.seed,
        limit=config.eval.limit,
        batch_size=batch_size(config),
        max_image_side=config.eval.max_image_side,
        dataset=dataset_identity(dataset),
        split=config.eval.split,
    )
    # Checked before a model or a data set is loaded, so a folder of another evaluation is rejected at once.
    check_options(out, settings.defining_options())
    backend = make_backend(config, out)
    try:
        loaded = load_dataset(dataset, out / "images", split=config.eval.split)
        if not loaded.questions:
            raise ConfigError(f"{dataset} has no usable questions ({len(loaded.rejections)} rejected); see the log")
        if config.eval.no_image == "off" and not any(question.images for question in loaded.questions):
            logger.warning("%s has no images: the questions are sent as text with the reference prompt", dataset)
        summary = Evaluation(out, backend, settings).run(loaded)
    except RequestsFailedError as error:
        raise RequestsFailedError(f"{error} {_failure_hint(config, out)}.") from error
    finally:
        backend.close()
    click.echo(format_table(summary))
    click.echo(f"results: {out / 'results.parquet'}\nsummary: {out / 'summary.json'}\nreport: {out / 'report.md'}")


def _config(config_file: Path | None, overrides: tuple[str, ...], options: dict[str, Any]) -> Config:
    values: dict[str, Any] = {}
    agent = {key: options[key] for key in ("base_url", "model", "concurrency") if options.get(key) is not None}
    if agent:
        values["agent"] = agent
    evaluation = {
        key: options[key]
        for key in ("backend", "no_image", "limit", "split", "temperature", "max_tokens", "device")
        if options.get(key) is not None
    }
    if evaluation:
        values["eval"] = evaluation
    if options.get("seed") is not None:
        values["seed"] = options["seed"]
    return load_config(None, explicit_settings(file=config_file, values=values, overrides=overrides))


def _failure_hint(config: Config, out: Path) -> str:
    if config.eval.backend == "openai":
        return (
            f"Check that the server at {config.agent.base_url} is running and serves the model {config.agent.model!r} "
            "(--base-url, --model), then run the same command again"
        )
    return f"See {out / 'eval.log'} for each error, then run the same command again"


def _model_name(config: Config) -> str:
    if not config.agent.model:
        raise ConfigError("no model given; pass --model NAME (the server's model name, or a transformers hub id or folder)")
    return config.agent.model


def make_backend(config: Config, out: Path) -> ChatBackend:
    """Build the chat backend the configuration names; the OpenAI one caches under OUT/cache."""
    if config.eval.backend == "transformers":
        from microvqa_pp.agents.transformers_backend import TransformersBackend

        return TransformersBackend(
            config.agent.model,
            device=config.eval.device,
            dtype=config.eval.dtype,
            max_image_side=config.eval.max_image_side,
        )

    from microvqa_pp.agents import LLM_CACHE_FILE
    from microvqa_pp.agents.cache import ResponseCache
    from microvqa_pp.agents.openai import OpenAIBackend

    settings = config.agent.model_copy(update={"max_image_side": config.eval.max_image_side or FULL_SIZE_IMAGE_SIDE})
    cache = ResponseCache(out / "cache" / LLM_CACHE_FILE) if settings.cache else None
    return OpenAIBackend.from_settings(settings, cache=cache)


FULL_SIZE_IMAGE_SIDE = 1 << 16
"""A maximum image side no microscopy figure reaches, so that images are sent unchanged."""


def batch_size(config: Config) -> int:
    """Return the questions per checkpoint: the setting, but at least two per request slot."""
    if config.eval.backend == "openai":
        return max(config.eval.batch_size, 2 * config.agent.concurrency)
    return config.eval.batch_size
