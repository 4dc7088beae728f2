"""The stages of a build, in order, and how a command builds and runs them on a run folder."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from microvqa_pp.config import Config, config_to_toml, explicit_settings, load_config
from microvqa_pp.run.executor import Executor, make_executor
from microvqa_pp.run.rundir import RunDir, atomic_write_text
from microvqa_pp.run.stage import Stage, StageResult, run_stage
from microvqa_pp.sources import SourceLocation

logger = logging.getLogger(__name__)

STAGES: dict[str, str] = {
    "ingest": "microvqa_pp.ingest.stage:IngestStage",
    "generate": "microvqa_pp.generate.stage:GenerateStage",
    "score": "microvqa_pp.signals.stage:ScoreStage",
    "filter": "microvqa_pp.graph.stage:FilterStage",
    "mcq": "microvqa_pp.mcq.stage:McqStage",
    "split": "microvqa_pp.release.split:SplitStage",
    "export": "microvqa_pp.release.export:ExportStage",
}
"""Stage name to `module:class`, in build order."""


def stage_class(name: str) -> type[Stage] | None:
    """Import a stage class, or return None when its module is not part of this version."""
    module_name, _, class_name = STAGES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            return None
        raise
    return getattr(module, class_name)


def available_stages() -> list[str]:
    """Return the stages this version has, in build order, up to the first one it lacks.

    Each stage reads the output of the one before it, so a stage after a gap could not run.
    """
    names = []
    for name in STAGES:
        if stage_class(name) is None:
            break
        names.append(name)
    return names


def resolve_config(run: RunDir, layers: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], Config]:
    """Return the profile, the explicit settings and the configuration of `run` with `layers` on top.

    Stores nothing; `open_run` records the result in the manifest. A folder that is not a run
    folder yet has no stored settings.
    """
    stored = (run.read_manifest().get("config_layers") if run.exists() else None) or {}
    layers = layers or {}
    explicit = explicit_settings(
        base=stored.get("explicit"),
        file=layers.get("file"),
        values=layers.get("values"),
        overrides=layers.get("overrides") or (),
    )
    profile = layers.get("profile") or explicit.pop("profile", None) or stored.get("profile") or "offline"
    explicit.pop("profile", None)
    return profile, explicit, load_config(profile, explicit)


def open_run(
    root: str,
    *,
    create: bool = False,
    sources: list[SourceLocation] | None = None,
    layers: dict[str, Any] | None = None,
) -> tuple[RunDir, Config]:
    """Open (or create) a run folder and resolve its configuration.

    `layers` holds the user's explicit settings from this command (`file`, `profile`, `values`,
    `overrides`). They are stored in the manifest and layered over the ones stored before, so a
    later command on the same run keeps earlier choices unless it overrides them.
    """
    run = RunDir(root)
    if not create:
        run.read_manifest()  # a clear error when `root` is not a run folder
    # Settings are checked before the folder is created, so a typo in them leaves nothing behind.
    profile, explicit, config = resolve_config(run, layers)
    if create:
        run.create()
    with run.update_manifest() as manifest:
        manifest["config_layers"] = {"profile": profile, "explicit": explicit}
        manifest["config"] = config.model_dump(mode="json")
        if sources:
            manifest["sources"] = [{"kind": source.kind, "location": source.location} for source in sources]
    atomic_write_text(
        run.root / "config.toml",
        "# The resolved configuration of this run, for reading. manifest.json is authoritative.\n"
        + config_to_toml(config),
    )
    return run, config


def build_stage(name: str, run: RunDir, config: Config) -> Stage:
    cls = stage_class(name)
    if cls is None:
        raise ValueError(f"stage {name!r} is not part of this version")
    return cls(run, config)


def run_stages(names: list[str], run: RunDir, config: Config, *, force: bool = False) -> dict[str, StageResult]:
    """Run the named stages in order with the configured executor."""
    executor: Executor = make_executor(config.executor, config.workers)
    results = {}
    try:
        for name in names:
            results[name] = run_stage(build_stage(name, run, config), executor, force=force)
    finally:
        executor.close()
    return results


def finish_build(run: RunDir, config: Config) -> None:
    """Write the data-set report after the stages of a build, when this version has it."""
    try:
        report = importlib.import_module("microvqa_pp.release.report")
    except ModuleNotFoundError as error:
        if error.name is not None and "microvqa_pp.release.report".startswith(error.name):
            return
        raise
    report.write_report(run, config)
