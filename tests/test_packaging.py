"""The package as a user installs it: the wheel, built from the sdist, carries the package data.

CI goes further (`.ci/check_wheel`): it installs the wheel with `[ja]` in a fresh virtual environment and runs
it from outside the checkout. This test builds the same wheel without installing it, from a copy of the source
so that the checkout stays as it is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE = ["layerwise_trainer", "setup.cfg", "setup.py", "pyproject.toml", "README.md"]
PACKAGE_DATA = ["layerwise_trainer/py.typed", "layerwise_trainer/app/configs/default.yaml"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("build", reason="the dev extra builds the wheel")
    source = tmp_path_factory.mktemp("source")
    for name in SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check", "--outdir", str(dist)]
    built = subprocess.run([*command, str(source)], capture_output=True, text=True)
    assert built.returncode == 0, f"building the sdist and the wheel failed:\n{built.stdout[-3000:]}{built.stderr}"
    (path,) = dist.glob("layerwise_trainer-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_the_package_data(wheel):
    assert sorted(set(PACKAGE_DATA) - set(wheel.namelist())) == []


def test_the_wheel_carries_every_file_of_the_package(wheel):
    package_files = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "layerwise_trainer").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sorted(package_files - set(wheel.namelist())) == []


def test_the_wheel_declares_the_ja_extra(wheel):
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    lines = wheel.read(metadata).decode().splitlines()
    assert "Provides-Extra: ja" in lines
    assert "Provides-Extra: app" in lines
    app = {"datasets>=2.19", "scikit-learn>=1.3", "matplotlib>=3.7"}
    assert {line for line in lines if line.endswith('extra == "app"')} == {
        f'Requires-Dist: {requirement}; extra == "app"' for requirement in app
    }
    assert {line for line in lines if line.endswith('extra == "ja"')} == {
        f'Requires-Dist: {requirement}; extra == "ja"' for requirement in app | {"fugashi>=1.3", "ipadic>=1.0"}
    }


def test_the_wheel_installs_the_command(wheel):
    (entry_points,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    assert "layerwise-trainer = layerwise_trainer.app.cli:main" in wheel.read(entry_points).decode().splitlines()


def test_ci_runs_the_readme_s_install_and_test_commands_exactly(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    development = readme[readme.index("## Development") :]
    block = development[development.index("```bash\n") + len("```bash\n") :]
    commands = [line for line in block[: block.index("```")].splitlines() if line.strip()]
    ci_lines = (repo_root / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands == [
        "pip install torch==2.13.0 && pip install -c .ci/constraints.txt -e "
        '".[dev,ja,peft,minilm,optimizers,docs,downstream,deepspeed]"',
        "python -m pytest",
    ]
    assert all(command in ci_lines for command in commands)


def test_the_constraints_pin_every_extra_the_ci_installs(repo_root):
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (repo_root / ".ci" / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    for package in ("torch", "transformers", "accelerate", "deepspeed", "kernels", "bitsandbytes", "peft", "trl"):
        assert package in pinned, package
