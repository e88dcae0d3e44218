"""What `layerwise-trainer train` checks about the machine before any data is prepared.

The run config is checked when it is read (`run_config`): values, types, the spec. What it asks of the
machine is checked here, once the config is known good and before the 6 to 20 s of data preparation, the
tokenizer and the training: a failure found later costs the run, and at save time the trained model too.

- The output directory can be written: a write probe (a file created and deleted), since permission bits
  say nothing for root, nor for a read-only mount or an immutable directory.
- The model exists, is built on the meta device (its layer counts were checked with the config), and its
  weights fit in the memory available; LoRA settings fit it (peft refuses `r: 0` only when it wraps a model).
- `tokenizer.max_length` fits the model's positions.
- The reporting integrations `training.report_to` names are installed.

The command line also makes sure, before this, that the hub can be reached when the run reads from it (or
switches the process to the cache, see `hub_access`); a library call leaves the process's settings alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import describe_value
from .run_config import ConfigError, RunConfig

# The pip package of each reporting integration, for the message when one is missing.
_INTEGRATION_PACKAGES = {"azure_ml": "azureml-core", "tensorboard": "tensorboard (the [tensorboard] extra)"}


def check_before_data(config: RunConfig, args: Any) -> None:
    """Refuse a run that would fail for want of something on this machine, before any data is prepared.

    Args:
        config: The checked run config.
        args: The run's `TrainingArguments`.

    Raises:
        ConfigError: The output directory cannot be written, the model cannot be read or does not fit in
            memory, peft refuses the LoRA settings, `tokenizer.max_length` is past the model's positions, or a
            reporting integration is not installed; named by its key.
    """
    check_output_dir(args.output_dir)
    check_reporting_integrations(args.report_to)
    model = _meta_model_of(config)
    check_fits_in_memory(model, "model.from_config" if config.model.from_config is not None else "model.name_or_path")
    check_max_length(config.tokenizer.max_length, model.config)


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


def check_reporting_integrations(report_to: Any) -> None:
    """Refuse a reporting integration that is not installed (the Trainer raised only when it was built).

    Args:
        report_to: `TrainingArguments.report_to`, as the arguments normalised it (a list of names).

    Raises:
        ConfigError: A name whose package is missing.
    """
    from transformers.integrations import get_available_reporting_integrations

    available = get_available_reporting_integrations()
    for name in report_to or []:
        if name not in available and name not in ("flyte", "kubeflow"):  # these two are not in the list
            package = _INTEGRATION_PACKAGES.get(name, name)
            installed = ", ".join(available) or "none"
            raise ConfigError(f"training.report_to: {name!r} is not installed (pip install {package}); expected "
                              f"one of the installed integrations ({installed}) or 'none'")  # fmt: skip


def hub_ids(config: RunConfig) -> list[str]:
    """The names the run reads from the hub (or its cache): everything that is not a local directory."""
    names = [config.model.name_or_path, config.tokenizer.name_or_path, (config.data.hub or {}).get("path")]
    return [name for name in names if isinstance(name, str) and not Path(name).expanduser().is_dir()]


def _meta_model_of(config: RunConfig) -> Any:
    """The run's model on the meta device: its config, the labels and the LoRA adapter as `train` builds them."""
    from .plan_command import meta_model, model_of_run_config

    num_labels = config.model.num_labels or (len(config.data.label_names) if config.data.label_names else 3)
    model = model_of_run_config(config)
    return meta_model(model, num_labels, "sequence-classification", config.peft, where="model.name_or_path")


def memory_available() -> int | None:
    """Bytes of memory this process may still take: `MemAvailable`, under a cgroup's limit; None if unknown."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="ascii").strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text(encoding="ascii").strip()
        if limit != "max":
            limits.append(max(int(limit) - int(used), 0))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_fits_in_memory(model: Any, where: str) -> None:
    """Refuse a model whose weights alone exceed the memory available, before it is allocated.

    A model built from a config with huge sizes ended in torch's allocation traceback (or the OOM killer).
    Only the weights are counted, in the dtype they are built in: gradients and optimizer state depend on what
    the spec freezes.

    Args:
        model: The model on the meta device.
        where: The config key that describes the model.

    Raises:
        ConfigError: The weights need more than `memory_available()`.
    """
    available = memory_available()
    if available is None:
        return
    count = sum(parameter.numel() for parameter in model.parameters())
    dtype = _weights_dtype(model.config)
    needed = count * dtype.itemsize
    if needed > available:
        raise ConfigError(f"{where}: the model has {count:,} parameters, {_size(needed)} in "
                          f"{str(dtype).removeprefix('torch.')}, more than the {_size(available)} of memory available; "
                          "expected a model whose weights fit")  # fmt: skip


def _weights_dtype(model_config: Any) -> Any:
    import torch

    dtype = getattr(model_config, "dtype", None)
    if isinstance(dtype, str):  # "bfloat16" in a config.json
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.get_default_dtype()


def _size(size: int) -> str:
    unit, scale = next((unit, scale) for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("bytes", 1))
                       if size >= scale or scale == 1)  # fmt: skip
    return f"{size / scale:,.1f} {unit}" if scale > 1 else f"{size} bytes"


def check_max_length(max_length: int, model_config: Any) -> None:
    """Refuse a `tokenizer.max_length` past the model's positions (a saved tokenizer would promise more).

    Args:
        max_length: `tokenizer.max_length`.
        model_config: The model's config.

    Raises:
        ConfigError: `max_length` is larger than `max_position_embeddings`.
    """
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ConfigError(
            f"tokenizer.max_length: {max_length}, but the model takes at most {positions} tokens "
            f"(max_position_embeddings); expected a max_length of at most {positions}"
        )
