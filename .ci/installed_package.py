"""Checks an installed (not editable) layerwise_trainer: run by .ci/check_wheel from outside the checkout.

Usage: python installed_package.py CHECKOUT
"""

from __future__ import annotations

import sys
import tempfile
from importlib import resources
from pathlib import Path

PACKAGE_DATA = ("py.typed", "app/configs/default.yaml")


def main(checkout: Path) -> None:
    import layerwise_trainer
    from layerwise_trainer.app.ja.tokenizer import build_japanese_tokenizer
    from layerwise_trainer.app.run_config import load_run_config

    installed = Path(layerwise_trainer.__file__).resolve()
    assert checkout.resolve() not in installed.parents, f"imported from the checkout, not the wheel: {installed}"
    package = resources.files("layerwise_trainer")
    missing = [name for name in PACKAGE_DATA if not package.joinpath(name).is_file()]
    assert not missing, f"package data not installed: {missing}"
    load_run_config()  # the built-in default run config, read from the package data
    with tempfile.TemporaryDirectory() as directory:  # the [ja] extra: MeCab through fugashi + ipadic
        tokenizer = build_japanese_tokenizer(["この映画は本当に最高でした。"] * 4, directory, vocab_size=100)
        assert tokenizer.tokenize("この映画は最高でした。"), "the Japanese tokenizer returned no tokens"
    print(f"layerwise_trainer {layerwise_trainer.__version__} from {installed.parent}: package data and [ja] work")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
