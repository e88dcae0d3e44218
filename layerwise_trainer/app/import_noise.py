"""Keeping what third-party packages log while they are imported off the command line's stderr.

Importing transformers imports its optional backends (peft, bitsandbytes, torchao, kernels), and several
of them log a warning from their import: prebuilt kernels for other Python or CUDA versions, enums torch
now registers natively, a hub check skipped offline. None of it is about what the command does, and each
breaks the promise of one line on stderr for a mistake. A list of known messages went stale with every
release (kernels 0.19 added one), so the command line drops the whole class instead: a record at WARNING or
below, from a logger outside this package, emitted while a module is being imported. Errors still show,
and so does everything logged after the imports, while training.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

_PACKAGE = __name__.split(".", 1)[0]
_IMPORT_MACHINERY = "<frozen importlib._bootstrap"


def importing_now() -> bool:
    """Whether the calling code runs inside an import (a module's top level, or code it calls)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_IMPORT_MACHINERY):
            return True
        frame = frame.f_back
    return False


def _is_import_noise(level: int, ours: bool) -> bool:
    return level <= logging.WARNING and not ours and importing_now()


class _ImportQuietLogger(logging.Logger):
    """A logger that drops its import-time warnings (see the module docstring)."""

    def handle(self, record: logging.LogRecord) -> None:
        if _is_import_noise(record.levelno, record.name.split(".", 1)[0] == _PACKAGE):
            return
        super().handle(record)


def drop_import_noise() -> None:
    """Drop third-party log records and Python warnings emitted during imports, from now on in this process.

    For the command line, which owns its process: loggers created after this call (every third-party
    package is imported after it) drop their records at WARNING and below while a module is imported, and
    so does ``warnings.showwarning``.
    """
    logging.setLoggerClass(_ImportQuietLogger)
    shown = warnings.showwarning
    if getattr(shown, "drops_import_noise", False):
        return

    def show_unless_import_noise(message: Any, category: type[Warning], filename: str, *args: Any) -> None:
        if _is_import_noise(logging.WARNING, f"{os.sep}{_PACKAGE}{os.sep}" in str(filename)):
            return
        shown(message, category, filename, *args)

    show_unless_import_noise.drops_import_noise = True  # type: ignore[attr-defined]
    warnings.showwarning = show_unless_import_noise
