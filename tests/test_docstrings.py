"""The core modules' docstrings are Google-style Markdown, as mkdocstrings renders them: no Sphinx roles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "layerwise_trainer"
CORE_MODULES = ["spec", "documents", "patterns", "grouping", "layers", "decay", "module_tree", "training_args",
                "group_table"]  # fmt: skip
SPHINX_ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|obj):`")


@pytest.mark.parametrize("module", CORE_MODULES)
def test_no_sphinx_role_in_the_docstrings(module):
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    roles = [line for line in source.splitlines() if SPHINX_ROLE.search(line)]
    assert not roles, f"{module}.py: {roles}"
