"""The `microvqa-pp` command line.

Commands that belong to one stage or tool live beside that code and are imported only when
they run (see LAZY_COMMANDS), so `microvqa-pp --help` stays fast and a missing optional package
affects only the command that needs it.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from microvqa_pp import __version__
from microvqa_pp.errors import MicroVQAError
from microvqa_pp.log import log_to_file, setup_logging

logger = logging.getLogger("microvqa_pp.cli")

LAZY_COMMANDS: dict[str, str] = {
    "report": "microvqa_pp.release.cli:report",
    "filter": "microvqa_pp.graph.cli:filter_command",
    "filter-bench": "microvqa_pp.graph.cli:filter_bench_command",
}
"""Command name to `module:function` of a click command defined elsewhere."""
LAZY_COMMANDS["eval"] = "microvqa_pp.evaluation.cli:eval_command"


class LazyGroup(click.Group):
    """A click group that imports the commands in LAZY_COMMANDS when they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module_name, _, attribute = LAZY_COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)


def handle_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one-line command-line errors, and Ctrl-C into a resume hint."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except MicroVQAError as error:
            logger.debug("command failed", exc_info=True)
            raise click.ClickException(str(error)) from error
        except KeyboardInterrupt:
            click.echo("Interrupted. Run the same command again to resume where it stopped.", err=True)
            sys.exit(130)

    return wrapper


LIMIT_OPTION = click.option("--limit", type=click.IntRange(min=1), help="Stop after this many accepted figures (ingest).")
"""Only `build` and `ingest` take --limit: it selects figures, and later stages read what ingest kept."""


def config_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that set a run's configuration."""
    options = [
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file of settings."),
        click.option("--profile", type=click.Choice(["offline", "full"]), help="Named set of defaults: offline (no model hub or LLM server) or full."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting, e.g. --set filter.keep_share=0.8 (repeatable)."),
        click.option("--workers", type=click.IntRange(min=1), help="Work units processed at once."),
        click.option("--executor", type=click.Choice(["local", "ray"]), help="Run work units in local processes or on Ray."),
        click.option("--agent", type=click.Choice(["offline", "openai"]), help="Question-writing backend."),
        click.option("--base-url", help="Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."),
        click.option("--model", help="Model name to request from the server."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def config_layers(options: dict[str, Any]) -> dict[str, Any]:
    """Turn the values of `config_options` into the layers that `open_run` takes."""
    values: dict[str, Any] = {}
    for key in ("limit", "workers", "executor"):
        if options.get(key) is not None:
            values[key] = options[key]
    agent = {key: options[option] for key, option in (("backend", "agent"), ("base_url", "base_url"), ("model", "model")) if options.get(option) is not None}
    if agent:
        values["agent"] = agent
    if options.get("source_kind"):
        values["ingest"] = {"source_kind": options["source_kind"]}
    return {
        "file": options.get("config_file"),
        "profile": options.get("profile"),
        "overrides": options.get("overrides") or (),
        "values": values,
    }


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
@click.version_option(__version__, prog_name="microvqa-pp")
def main(verbose: int, quiet: bool) -> None:
    """Build, filter, release and evaluate microscopy VQA data (MicroVQA++)."""
    setup_logging(-1 if quiet else verbose)


def _open(out: str, sources_spec: tuple[str, ...] | None, options: dict[str, Any]):
    """Open or create the run folder RUN for this command, holding its lock until the command ends."""
    from microvqa_pp.pipeline import open_run
    from microvqa_pp.run.rundir import RunDir
    from microvqa_pp.sources import locate_sources

    sources = None
    if sources_spec:
        kind = options.get("source_kind") or _stored_source_kind(out)
        sources = locate_sources(list(sources_spec), kind)
    else:
        RunDir(out).read_manifest()  # a clear error when `out` is not a run folder, before any lock file
    RunDir(out).acquire_lock()
    click.get_current_context().call_on_close(RunDir(out).release_lock)
    run, config = open_run(out, create=sources is not None, sources=sources, layers=config_layers(options))
    log_to_file(run.logs_dir / "run.log")
    logger.info("microvqa-pp %s: %s", __version__, " ".join(sys.argv[1:]))
    return run, config


def _stored_source_kind(out: str) -> str:
    """Return the `--source-kind` an earlier command stored in the run folder, or `auto`."""
    from microvqa_pp.run.rundir import RunDir

    run = RunDir(out)
    if not run.exists():
        return "auto"
    stored = (run.read_manifest().get("config") or {}).get("ingest") or {}
    return stored.get("source_kind", "auto")


SOURCE_KIND = click.option(
    "--source-kind",
    type=click.Choice(["auto", "biomedica", "parquet", "folder"]),
    default=None,
    help="Force the reader instead of detecting it from each SOURCE.",
)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create or resume.")
@SOURCE_KIND
@config_options
@LIMIT_OPTION
@click.option("--force", is_flag=True, help="Rerun every stage even when its output is up to date.")
@handle_errors
def build(sources: tuple[str, ...], out: str, force: bool, **options: Any) -> None:
    """Run every stage from SOURCES to the released data set, resuming finished work.

    SOURCES are BIOMEDICA shards (paths, globs, brace ranges such as shards/{000000..000009}.tar,
    https:// or hf:// URLs), parquet files, or folders of images with a JSONL of captions.
    """
    from microvqa_pp.pipeline import available_stages, finish_build, run_stages

    run, config = _open(out, sources, options)
    names = available_stages()
    run_stages(names, run, config, force=force)
    finish_build(run, config)
    click.echo(format_status(run, names))
    click.echo(format_outputs(run))


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create or resume.")
@SOURCE_KIND
@config_options
@LIMIT_OPTION
@click.option("--force", is_flag=True, help="Rerun the stage even when its output is up to date.")
@handle_errors
def ingest(sources: tuple[str, ...], out: str, force: bool, **options: Any) -> None:
    """Read SOURCES into validated, de-duplicated figures (stage `ingest` only)."""
    from microvqa_pp.pipeline import run_stages

    run, config = _open(out, sources, options)
    run_stages(["ingest"], run, config, force=force)
    click.echo(format_status(run, ["ingest"]))


def stage_command(name: str, summary: str) -> click.Command:
    """Build the command that runs one stage on an existing run folder."""

    @click.command(name=name, help=f"{summary} (stage `{name}` only) on the run folder RUN.")
    @click.argument("run_folder", metavar="RUN", type=click.Path(exists=True, file_okay=False))
    @config_options
    @click.option("--force", is_flag=True, help="Rerun the stage even when its output is up to date.")
    @handle_errors
    def command(run_folder: str, force: bool, **options: Any) -> None:
        from microvqa_pp.pipeline import run_stages

        run, config = _open(run_folder, None, options)
        run_stages([name], run, config, force=force)
        click.echo(format_status(run, [name]))

    return command


@main.command()
@click.argument("run_folder", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def status(run_folder: str, as_json: bool) -> None:
    """Print each stage's state, record count, rejections and output file.

    A stage whose command was killed stays `running` in the manifest; the table shows it as
    `running (process gone)`. Run the same command again to resume it. A stage whose input
    changed after it ran (an earlier stage was run again with other settings) shows as
    `done (out of date: STAGE changed)`, and JSON lists it under `out_of_date` with the stages
    that changed; `build` reruns it.
    """
    from microvqa_pp.pipeline import STAGES
    from microvqa_pp.run.rundir import RunDir

    run = RunDir(run_folder)
    manifest = run.read_manifest()
    names = list(STAGES) + [name for name in manifest.get("stages", {}) if name not in STAGES]
    if as_json:
        stages, out_of_date = {}, {}
        for name in names:
            info = run.stage_info(name)
            stages[name] = {"state": info.state, "count": info.count, "rejected": info.rejected, "output": info.output}
            if info.state == "done" and info.changed_upstream:
                out_of_date[name] = list(info.changed_upstream)
        click.echo(json.dumps({"stages": stages, "out_of_date": out_of_date, "notes": manifest.get("notes", {})}, indent=2))
        return
    click.echo(format_status(run, names))
    for key, text in manifest.get("notes", {}).items():
        click.echo(f"note ({key}): {text}")


def format_status(run: Any, names: list[str]) -> str:
    """Render stage states as an aligned text table."""
    rows = [("stage", "state", "records", "rejected", "output")]
    for name in names:
        info = run.stage_info(name)
        rejected = sum(info.rejected.values())
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(info.rejected.items(), key=lambda item: -item[1]))
        rows.append((name, info.state_text, str(info.count), f"{rejected} ({reasons})" if rejected else "0", info.output))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = []
    for row in rows:
        cells = [row[column].ljust(widths[column]) for column in range(4)] + [row[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_outputs(run: Any) -> str:
    """List the release files of a finished build that exist."""
    candidates = [
        ("export", run.export_dir),
        ("data-set card", run.export_dir / "README.md"),
        ("report", run.report_dir / "index.html"),
    ]
    lines = [f"{label}: {path}" for label, path in candidates if path.exists()]
    lines.append(f"manifest: {run.manifest_path}")
    return "\n".join(lines)


for _name, _summary in (
    ("generate", "Write caption-grounded question-answer pairs"),
    ("score", "Compute consistency signals for every QA"),
    ("mcq", "Turn kept QAs into multiple-choice questions with rationales"),
    ("split", "Split questions into train and test sets without leakage"),
    ("export", "Write the release files and the data-set card"),
):
    main.add_command(stage_command(_name, _summary))


if __name__ == "__main__":
    main()
