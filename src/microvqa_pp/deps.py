"""Imports of optional heavy packages, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from microvqa_pp.errors import MissingDependencyError


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingDependencyError naming the `microvqa-pp[extra]` to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        what = feature or module
        raise MissingDependencyError(
            f"{what} needs the Python package {module!r}, which is not installed or failed to "
            f"import ({error}). Install it with: pip install 'microvqa-pp[{extra}]'"
        ) from error
