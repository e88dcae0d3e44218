"""What `layerwise-trainer train` checks about the machine before any data is prepared.

The run config is checked when it is read (`run_config`): values, types, the spec. What it asks of the
machine is checked here, once the config is known good and before the 6 to 20 s of data preparation, the
tokenizer and the training: a failure found later costs the run, and at save time the trained model too.

- The output directory can be written: a write probe (a file created and deleted), since permission bits
  say nothing for root, nor for a read-only mount or an immutable directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import describe_value
from .run_config import ConfigError, RunConfig


def check_before_data(config: RunConfig, args: Any) -> None:
    """Refuse a run that would fail for want of something on this machine, before any data is prepared.

    Args:
        config: The checked run config.
        args: The run's `TrainingArguments`.

    Raises:
        ConfigError: The output directory cannot be written; named by its key.
    """
    check_output_dir(args.output_dir)


def check_output_dir(output_dir: str | os.PathLike[str]) -> None:
    """Refuse an output directory that cannot be created or written.

    Args:
        output_dir: `training.output_dir`.

    Raises:
        ConfigError: An existing file, a path under a file, or a directory (the nearest existing one, for a
            directory to be created) where a file cannot be created.
    """
    path = Path(output_dir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        under = "" if existing == path else f", under {str(existing)!r}"
        raise ConfigError(f"training.output_dir: expected a directory to write the run to, got "
                          f"{describe_value(str(output_dir))}{under}, which is a file")  # fmt: skip
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".layerwise-trainer-write-check-"):
            pass
    except OSError as error:
        made = "" if existing == path else f" (to create {str(output_dir)!r} in)"
        raise ConfigError(f"training.output_dir: cannot write to the directory {str(existing)!r}{made}: "
                          f"{error.strerror}; expected a directory the run can write to") from None  # fmt: skip
