"""Which optional packages a command needs, checked before it starts, with the extra that installs them.

The library (`LayerwiseTrainer` and the core) needs torch, transformers, accelerate, PyYAML and regex. The
`layerwise-trainer train` application needs more, behind extras: `[app]` for data, metrics and plots, and
`[ja]` (which includes `[app]`) for the built-in Japanese run's MeCab tokenizer. As sentence-transformers does
for its `[train]` extra, a missing package is named with the command that installs it, in one line.
"""

from __future__ import annotations

import importlib

# Extra -> the top-level modules it provides.
EXTRA_MODULES = {
    "app": ("datasets", "sklearn", "matplotlib"),
    "ja": ("fugashi", "ipadic"),
    "peft": ("peft",),
}


class MissingExtraError(RuntimeError):
    """A command needs packages of an extra that is not installed; the message says how to install it."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here.

    They are imported, not only looked up: a package that is installed but broken is missing too, and the
    command that asks is about to import them anyway.
    """
    missing = []
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def require_extra(extra: str, needed_for: str) -> None:
    """Raise `MissingExtraError` naming ``extra`` when any of its modules is missing.

    Args:
        extra: A key of `EXTRA_MODULES`.
        needed_for: What needs it, for the message (``"layerwise-trainer train"``).

    Raises:
        MissingExtraError: Some module of the extra cannot be imported.

    Example:
        ```python
        require_extra("app", "layerwise-trainer train")
        ```
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(
            f"{needed_for} needs the [{extra}] extra, which is not installed (missing: {', '.join(missing)}); "
            f'install it in the clone with: pip install -e ".[{extra}]" (or install the wheel with [{extra}])'
        )
