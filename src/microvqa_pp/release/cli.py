"""The `microvqa-pp report` command."""

from __future__ import annotations

from pathlib import Path

import click

from microvqa_pp.cli import handle_errors



@click.command()
@click.argument("run_folder", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--blooms-reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file of Bloom's-labelled questions to compare with (default: the packaged MicroVQA expert labels).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting, e.g. --set report.tsne_perplexity=20 (repeatable).")
@handle_errors
def report(run_folder: str, blooms_reference: Path | None, overrides: tuple[str, ...]) -> None:
    """Write the data-set report RUN/report/index.html and print its path.

    The page shows counts and rejection reasons per stage, Bloom's levels against a reference,
    a t-SNE of image and question embeddings by split, the consistency signals, correct-option
    positions and the train-test overlap. Sections whose stages have not run say so.
    """
    from microvqa_pp.log import log_to_file
    from microvqa_pp.pipeline import open_run
    from microvqa_pp.release.report import write_report

    values = {"report": {"blooms_reference": str(blooms_reference)}} if blooms_reference else {}
    run, config = open_run(run_folder, layers={"values": values, "overrides": overrides})
    log_to_file(run.logs_dir / "run.log")
    click.echo(str(write_report(run, config)))
