"""The options an evaluation folder is bound to, stored in `DIR/options.json`.

The first run in a folder stores the options that decide its results (`DEFINING_OPTIONS`). A
later run in the same folder resumes the same evaluation, so it must repeat them. A run with any
other value is rejected before it loads the data set or sends a request, so results of two
evaluations never mix in one results.parquet. Batch size and concurrency only change how the
requests are sent, so they may differ between runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from microvqa_pp.errors import ConfigError
from microvqa_pp.run.rundir import atomic_write_text

OPTIONS_FILE = "options.json"

DEFINING_OPTIONS: dict[str, str] = {
    "dataset": "DATASET",
    "split": "--split",
    "model": "--model",
    "agent": "--agent",
    "no_image": "--no-image",
    "limit": "--limit",
    "seed": "--seed",
    "temperature": "--temperature",
    "max_tokens": "--max-tokens",
    "max_image_side": "eval.max_image_side",
}
"""The settings that decide an evaluation's results, each with the option that sets it."""


def check_options(out_dir: Path, options: dict[str, Any]) -> None:
    """Raise ConfigError when OUT_DIR contains an evaluation made with other defining options."""
    path = Path(out_dir) / OPTIONS_FILE
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"cannot read the options of the evaluation in {out_dir} from {path}: {error}. "
            "Pass a new --out folder, or delete that file to resume with this command's options"
        ) from error

    # A JSON round trip gives the current values the types that the stored ones have.
    current = json.loads(json.dumps(options))
    differing = [name for name in DEFINING_OPTIONS if stored.get(name) != current.get(name)]
    if not differing:
        return
    changes = "; ".join(
        f"{DEFINING_OPTIONS[name]} is {_show(stored.get(name))} there but {_show(current.get(name))} now" for name in differing
    )
    raise ConfigError(
        f"{out_dir} contains an evaluation with other options ({changes}). Pass a new --out folder "
        "for these options, or repeat the earlier options to resume that evaluation"
    )


def store_options(out_dir: Path, options: dict[str, Any]) -> None:
    """Write the defining options to OUT_DIR/options.json."""
    values = {name: options.get(name) for name in DEFINING_OPTIONS}
    atomic_write_text(Path(out_dir) / OPTIONS_FILE, json.dumps(values, indent=2) + "\n")


def _show(value: Any) -> str:
    return "not set" if value is None else repr(value)
