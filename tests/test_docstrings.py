"""The package's docstrings are Google-style Markdown, as mkdocstrings renders them: no Sphinx roles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "layerwise_trainer"
MODULES = sorted(PACKAGE.rglob("*.py"))
SPHINX_ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|obj):`")


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_no_sphinx_role_in_the_docstrings(path):
    roles = [line for line in path.read_text(encoding="utf-8").splitlines() if SPHINX_ROLE.search(line)]
    assert not roles, f"{path.name}: {roles}"
