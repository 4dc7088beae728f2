"""The `filter` and `filter-bench` commands."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import click

from microvqa_pp.cli import config_layers, config_options, format_status, handle_errors
from microvqa_pp.errors import MicroVQAError

logger = logging.getLogger(__name__)


def _open_run(folder: str, options: dict[str, Any], *, create: bool):
    """Open (or create) a run folder, holding its lock until the command ends."""
    from microvqa_pp import __version__
    from microvqa_pp.log import log_to_file
    from microvqa_pp.pipeline import open_run
    from microvqa_pp.run.rundir import RunDir

    RunDir(folder).acquire_lock()
    click.get_current_context().call_on_close(RunDir(folder).release_lock)
    run, config = open_run(folder, create=create, layers=config_layers(options))
    log_to_file(run.logs_dir / "run.log")
    logger.info("microvqa-pp %s: %s", __version__, " ".join(sys.argv[1:]))
    return run, config


@click.command(name="filter")
@click.argument("run_folder", metavar="[RUN]", required=False, type=click.Path(file_okay=False))
@click.option(
    "--input",
    "dataset",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Filter this VQA data set instead of a run's QAs: a MicroVQA++ parquet file, or a JSONL file "
    "of image (path), caption, question and answer. Needs --out.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder to create for --input.")
@config_options
@click.option("--force", is_flag=True, help="Rerun the filter even when its output is up to date.")
@handle_errors
def filter_command(run_folder: str | None, dataset: Path | None, out: str | None, force: bool, **options: Any) -> None:
    """Score every QA for cross-modal consistency with HiCQA-Graph and keep the most consistent.

    With RUN (a run folder whose `score` stage is done) this runs the stage `filter`. With
    --input DATASET --out RUN it filters an existing VQA data set, taking each question with its
    correct answer as the QA and computing its signals. The output then has one row per input QA
    with its image_name (or image path), question, score, keep and reason.

    The filter keeps the top filter.keep_share of QAs (0.75 by default), or every QA scoring at
    least filter.threshold; set them with --set, e.g. --set filter.keep_share=0.8.
    """
    from microvqa_pp.graph.stage import FilterStage
    from microvqa_pp.pipeline import run_stages

    if dataset is not None:
        if out is None or run_folder is not None:
            raise MicroVQAError("--input DATASET needs --out RUN (the run folder to create) and no RUN argument")
        from microvqa_pp.graph.dataset import import_dataset, signals_function

        run, config = _open_run(out, options, create=True)
        FilterStage(run, config)  # Reject invalid filter settings before the signals are computed.
        import_dataset(dataset, run, config, signals_function(run, config))
    else:
        if run_folder is None:
            raise MicroVQAError("give a run folder RUN, or --input DATASET --out RUN")
        if out is not None:
            raise MicroVQAError("--out is only for --input; the filter writes into RUN")
        if not Path(run_folder).is_dir():
            raise MicroVQAError(f"run folder {run_folder} does not exist")
        run, config = _open_run(run_folder, options, create=False)

    run_stages(["filter"], run, config, force=force)
    click.echo(format_status(run, ["filter"]))
    note = run.read_manifest().get("notes", {}).get("filter")
    if note:
        click.echo(f"note: {note}")


def _bench_config(folder: str, options: dict[str, Any]):
    """Resolve a run's settings with this command's options on top, without storing them in the run."""
    from microvqa_pp.pipeline import resolve_config
    from microvqa_pp.run.rundir import RunDir

    run = RunDir(folder)
    _, _, config = resolve_config(run, config_layers(options))
    return run, config


@click.command(name="filter-bench")
@click.argument("run_folder", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Corruption suites to build and average over.")
@click.option(
    "--share",
    type=click.FloatRange(min=0.01, max=0.24),
    default=0.1,
    show_default=True,
    help="Share of the QAs corrupted by each of the four corruption types.",
)
@config_options
@handle_errors
def filter_bench_command(run_folder: str, as_json: bool, seeds: int, share: float, **options: Any) -> None:
    """Measure how well the filter and each single-signal baseline detect corrupted QAs.

    From RUN's figures and QAs (stages `ingest` and `generate`), builds suites in which a share
    of QAs is corrupted: moved to another figure, answer replaced by a span of another caption,
    caption swapped between figures, or a number or entity in the answer altered. Signals are
    computed as in the `score` stage. Prints, per method, the AUROC of telling clean from
    corrupted QAs by score and the share of corrupted QAs removed at filter.keep_share, overall
    and per corruption type, averaged over --seeds suites.
    """
    from microvqa_pp.graph.bench import format_table, run_bench
    from microvqa_pp.graph.dataset import signals_function
    from microvqa_pp.records import QA, Figure
    from microvqa_pp.run.stage import read_records

    run, config = _bench_config(run_folder, options)
    for name in ("ingest", "generate"):
        if not run.stage_output(name).exists():
            raise MicroVQAError(f"filter-bench needs the output of stage {name!r} in {run.root}; run `microvqa-pp {name} {run.root}` first")
    figures = read_records(run.stage_output("ingest"), Figure)
    qas = read_records(run.stage_output("generate"), QA)
    if len(qas) < 8:
        raise MicroVQAError(f"{run.root} has {len(qas)} QAs; the benchmark needs at least 8 to corrupt and compare")
    report = run_bench(
        figures,
        qas,
        config,
        signals_function(run, config),
        seeds=[config.seed + offset for offset in range(seeds)],
        share=share,
    )
    if as_json:
        click.echo(json.dumps(_finite(report.to_json()), indent=2))
    else:
        click.echo(format_table(report))
        for note in report.notes:
            click.echo(f"note: {note}")


def _finite(value: Any) -> Any:
    """Replace NaN by None so the output is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
