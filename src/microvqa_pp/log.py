"""Logging setup: diagnostics to standard error and to the run's log file; data goes to standard output."""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "filelock", "huggingface_hub", "sentence_transformers", "PIL")


class _ProgressAwareHandler(logging.StreamHandler):
    """Writes log lines to standard error above any tqdm progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise; this is logging's own policy
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> None:
    """Log INFO and above to standard error (DEBUG with verbosity >= 1, WARNING with verbosity < 0)."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    root = logging.getLogger("microvqa_pp")
    root.setLevel(logging.DEBUG)
    if not any(getattr(handler, "_microvqa_console", False) for handler in root.handlers):
        handler = _ProgressAwareHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
        handler._microvqa_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for handler in root.handlers:
        if getattr(handler, "_microvqa_console", False):
            handler.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # A library that logs through the logging module's functions (`logging.info(...)`) makes
    # logging call basicConfig when the root logger has no handler; that handler would then print
    # every record of this package a second time, debug tracebacks included.
    top = logging.getLogger()
    if not top.handlers:
        top.addHandler(logging.NullHandler())


def log_to_file(path: Path) -> None:
    """Also append every DEBUG-and-above message of this process to `path`."""
    root = logging.getLogger("microvqa_pp")
    target = str(path.resolve())
    if any(getattr(handler, "baseFilename", None) == target for handler in root.handlers):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
