"""The layers of docs/architecture.md hold: core <- adapter <- app, and each imports only what it may."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "layerwise_trainer"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
# Modules at the root that every layer may use.
SHARED = {f"{PACKAGE}.errors", f"{PACKAGE}._version"}
# Third-party packages each layer must not import, anywhere in its code (lazily inside a function too).
FORBIDDEN_THIRD_PARTY = {
    "core": {"transformers", "accelerate", "datasets", "sklearn", "matplotlib", "fugashi", "ipadic"},
    "adapter": {"datasets", "sklearn", "matplotlib", "fugashi", "ipadic", "sentence_transformers", "trl"},
    "downstream": {"datasets", "sklearn", "matplotlib", "fugashi", "ipadic"},
    "app": set(),
}
MAY_IMPORT = {
    "core": {"core"},
    "adapter": {"core", "adapter"},
    "downstream": {"core", "adapter", "downstream"},
    "app": {"core", "adapter", "downstream", "app"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    """The layer of a package module; None for the entry points (`__init__`, `__main__`) and shared modules."""
    if module in (PACKAGE, f"{PACKAGE}.__main__") or module in SHARED:
        return None
    if module.startswith(f"{PACKAGE}.core"):
        return "core"
    if module.startswith(f"{PACKAGE}.app"):
        return "app"
    if module.startswith(f"{PACKAGE}.downstream"):
        return "downstream"
    return "adapter"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports (absolute names), with its line, lazy imports included."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from . import x` imports the module `x`.
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if (PACKAGE_DIR.parent / submodule.replace(".", "/")).with_suffix(".py").exists():
                    found.append((node.lineno, submodule))
    return found


def _package_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_the_package_has_the_three_rooms():
    layers = {_layer(_module_name(path)) for path in _package_files()}
    assert layers == {None, "core", "adapter", "downstream", "app"}
    assert (PACKAGE_DIR / "core" / "spec.py").is_file()
    assert (PACKAGE_DIR / "app" / "cli.py").is_file()


@pytest.mark.parametrize("path", _package_files(), ids=lambda path: str(path.relative_to(PACKAGE_DIR)))
def test_imports_only_go_down_the_layers(path):
    module = _module_name(path)
    layer = _layer(module)
    wrong = []
    for line, target in _imports(path):
        if not target.startswith(PACKAGE):
            if layer is not None and target.split(".")[0] in FORBIDDEN_THIRD_PARTY[layer]:
                wrong.append(f"line {line}: {layer} imports {target}")
            continue
        target_layer = _layer(target)
        if layer is None:
            # The shared modules import nothing of the package; the root only names modules lazily.
            if module in SHARED and target not in SHARED:
                wrong.append(f"line {line}: shared module imports {target}")
            continue
        if target_layer is not None and target_layer not in MAY_IMPORT[layer]:
            wrong.append(f"line {line}: {layer} imports {target} ({target_layer})")
    assert not wrong, f"{module}: " + "; ".join(wrong)


def test_the_public_api_is_one_table():
    """`__all__` is the `_EXPORTS` table; the imports for type checkers name exactly its entries."""
    import layerwise_trainer

    assert layerwise_trainer.__all__ == ["__version__", *layerwise_trainer._EXPORTS]
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8"))
    for_type_checkers = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                for alias in statement.names:
                    for_type_checkers[alias.name] = statement.module
    assert for_type_checkers == layerwise_trainer._EXPORTS
    for name in layerwise_trainer.__all__:
        assert getattr(layerwise_trainer, name) is not None, name


def _run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)


def test_the_downstream_trainers_import_their_project_only_when_used():
    code = (
        "import layerwise_trainer, layerwise_trainer.downstream\n"
        "print(sorted(name for name in ('sentence_transformers', 'trl') if sys.modules.get(name) is not None))\n"
    )
    result = _run_without([], code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_parsing_a_spec_needs_neither_transformers_nor_torch():
    code = (
        "from layerwise_trainer.core.spec import parse_spec\n"
        'spec = parse_spec(\'[{"name": "head", "match": "classifier.*", "lr": 1e-3}]\')\n'
        "assert spec.groups[0].lr == 1e-3\n"
        "print(sorted(name for name in ('torch', 'transformers') if sys.modules.get(name) is not None))\n"
    )
    result = _run_without(["transformers"], code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_core_resolves_groups_without_transformers():
    code = (
        "import torch\n"
        "from layerwise_trainer.core.grouping import resolve_groups\n"
        "model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))\n"
        "plan = resolve_groups(model, [{'name': 'first', 'match': '0.*', 'lr': 0.1}], learning_rate=1.0,"
        " weight_decay=0.0)\n"
        "print([(group.name, group.lr) for group in plan.trainable_groups if not group.no_decay])\n"
    )
    result = _run_without(["transformers"], code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('first', 0.1), ('default', 1.0)]"


APP_MODULES = ["datasets", "sklearn", "matplotlib", "fugashi", "ipadic"]


def test_the_library_trains_without_the_application_extras():
    code = (
        "import tempfile, torch\n"
        "from transformers import BertConfig, BertForSequenceClassification, TrainingArguments\n"
        "from layerwise_trainer import LayerwiseTrainer\n"
        "torch.manual_seed(0)\n"
        "model = BertForSequenceClassification(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1,"
        " num_attention_heads=2, intermediate_size=8, max_position_embeddings=8))\n"
        "data = [{'input_ids': torch.tensor([1, 2, 3]), 'labels': torch.tensor(1)}] * 4\n"
        "args = TrainingArguments(tempfile.mkdtemp(), max_steps=2, per_device_train_batch_size=2, report_to=[],"
        " use_cpu=True, save_strategy='no', disable_tqdm=True, learning_rate=0.1)\n"
        "before = model.bert.embeddings.word_embeddings.weight.clone()\n"
        "trainer = LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=["
        "{'name': 'body', 'match': 'bert.*', 'lr': 0}, {'name': 'head', 'match': 'classifier.*'}])\n"
        "trainer.train()\n"
        "assert torch.equal(before, model.bert.embeddings.word_embeddings.weight)\n"
        "print(sorted(name for name in " + repr(APP_MODULES) + " if sys.modules.get(name) is not None))\n"
    )
    result = _run_without(APP_MODULES, code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_train_without_the_app_extra_exits_2_naming_it():
    code = "from layerwise_trainer.app.cli import main\nsys.exit(main(['train']))\n"
    result = _run_without(["datasets"], code)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("layerwise-trainer train: error: layerwise-trainer train needs the [app] extra")
    assert 'pip install -e ".[app]"' in lines[0]
    assert "missing: datasets" in lines[0]


def test_the_api_page_documents_exactly_the_public_api():
    import layerwise_trainer

    page = (PACKAGE_DIR.parent / "docs" / "api.md").read_text(encoding="utf-8")
    documented = re.findall(r"^::: layerwise_trainer\.(\w+)$", page, flags=re.MULTILINE)
    documented += re.findall(r"^\| `(MAX_\w+)` \|", page, flags=re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(layerwise_trainer.__all__) - {"__version__"}


def test_plan_needs_only_the_library(tmp_path):
    code = (
        "from transformers import BertConfig\n"
        "config = BertConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2, intermediate_size=8)\n"
        f"config.save_pretrained({str(tmp_path)!r})\n"
        "from layerwise_trainer.app.cli import main\n"
        f"sys.exit(main(['plan', '--model', {str(tmp_path)!r}, '--task', 'sequence-classification', '--spec',"
        ' \'[{"name": "head", "match": "classifier.*", "lr": 0.001}]\']))\n'
    )
    result = _run_without(APP_MODULES, code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "head" in result.stdout and "0.001" in result.stdout
