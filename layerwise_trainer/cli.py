"""The ``layerwise-trainer`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``layerwise-trainer``."""
    parser = argparse.ArgumentParser(
        prog="layerwise-trainer",
        description="Fine-tune Hugging Face models with per-group learning rates and layer-wise LR decay.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
