"""Every code block in docs/ and the README runs.

Each page runs top to bottom in a fresh directory, its Python blocks sharing one namespace like a notebook:

- ```python blocks are executed; hub ids they name load tiny stand-ins built from configs (offline);
- a ```text block marked ``<!-- test: output -->`` must equal what the Python block before it printed;
- ```yaml blocks must parse, as a spec or a run config when they look like one;
- ```bash blocks run their ``layerwise-trainer`` commands in-process (``train`` on a shrunk budget), write
  their heredoc files, and skip ``pip install``;
- a block marked ``<!-- test: parse-only (why) -->`` is only compiled, ``<!-- test: skip (why) -->`` not run.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
import yaml

from layerwise_trainer import parse_spec
from layerwise_trainer.app.cli import main as cli_main
from layerwise_trainer.app.ja.sentiment_data import generate_reviews, japanese_sentiment_dataset
from layerwise_trainer.app.ja.tokenizer import build_japanese_tokenizer
from layerwise_trainer.app.run_config import parse_run_config

REPO = Path(__file__).resolve().parent.parent
PAGES = [*sorted(path.relative_to(REPO).as_posix() for path in (REPO / "docs").rglob("*.md")), "README.md"]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- test: (output|parse-only|skip)\b.*-->$")
# `train` commands in the docs run on this budget: the same code, a few steps.
SHRINK = [
    "data.max_train_examples=48",
    "data.max_eval_examples=16",
    "training.num_train_epochs=1",
    "training.save_strategy=no",
    "training.load_best_model_at_end=false",
    "training.report_to=none",
    "training.disable_tqdm=true",
]


@dataclass
class Block:
    language: str
    code: str
    marker: str | None
    line: int


def blocks_of(page: str) -> list[Block]:
    lines = (REPO / page).read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(position for position in range(index + 1, len(lines)) if lines[position].startswith("```"))
        previous = next((lines[position] for position in range(index - 1, -1, -1) if lines[position].strip()), "")
        marker = MARKER.match(previous.strip())
        found.append(Block(fence.group(1), "\n".join(lines[index + 1 : end]), marker and marker.group(1), index + 1))
        index = end + 1
    return found


# ---- Offline stand-ins for the hub ids the docs name -------------------------------------------------

STAND_INS = {
    "cl-tohoku/bert-base-japanese-whole-word-masking": ("bert", "japanese"),
    "bert-base-uncased": ("bert", "english"),
    "roberta-base": ("roberta", "english"),
    "microsoft/deberta-v3-base": ("deberta-v2", "english"),
    "Qwen/Qwen2.5-0.5B": ("qwen2", None),
    "google/vit-base-patch16-224-in21k": ("vit", None),
}
_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def stand_in_config(model_id: str, vocab_size: int, **labels) -> transformers.PretrainedConfig:
    family = STAND_INS[model_id][0]
    if family == "bert":
        config = transformers.BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **_SMALL, **labels)
        config.architectures = ["BertForMaskedLM"]
    elif family == "roberta":
        config = transformers.RobertaConfig(vocab_size=vocab_size, max_position_embeddings=514, **_SMALL, **labels)
        config.architectures = ["RobertaForMaskedLM"]
    elif family == "deberta-v2":
        config = transformers.DebertaV2Config(
            vocab_size=vocab_size, max_position_embeddings=512, relative_attention=True, position_buckets=8,
            norm_rel_ebd="layer_norm", pos_att_type=["p2c", "c2p"], **_SMALL, **labels,
        )  # fmt: skip
        config.architectures = ["DebertaV2ForMaskedLM"]
    elif family == "qwen2":
        config = transformers.Qwen2Config(
            vocab_size=vocab_size, num_key_value_heads=1, tie_word_embeddings=True, **_SMALL, **labels
        )
        config.architectures = ["Qwen2ForCausalLM"]
    else:
        config = transformers.ViTConfig(image_size=32, patch_size=8, **_SMALL, **labels)
        config.architectures = ["ViTModel"]
    return config


@pytest.fixture(scope="module")
def stand_in_tokenizers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizers")
    texts = [row["text"] for row in generate_reviews(300)]
    japanese = build_japanese_tokenizer(texts, directory / "ja", vocab_size=900)
    words = ["the", "a", "movie", "was", "great", "bad", "good", "film", "not", "##s", "##ed", "##ing"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz"]
    vocab += [f"##{letter}" for letter in "abcdefghijklmnopqrstuvwxyz"]
    (directory / "en").mkdir()
    (directory / "en" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    english = transformers.BertTokenizer(str(directory / "en" / "vocab.txt"))
    return {"japanese": japanese, "english": english}


@pytest.fixture
def offline_hub(monkeypatch, stand_in_tokenizers):
    """Hub ids named in the docs load tiny stand-ins; any other name goes to the real loaders.

    The Trainer's console printers are silenced too: an output block shows what the code prints.
    """
    for printer in (transformers.trainer_callback.ProgressCallback, transformers.trainer_callback.PrinterCallback):
        monkeypatch.setattr(printer, "on_log", lambda self, *args, **kwargs: None)

    def vocab_size(model_id: str) -> int:
        tokenizer = STAND_INS[model_id][1]
        return max(1024, len(stand_in_tokenizers[tokenizer])) if tokenizer else 1024

    def patch_model_loader(auto_class):
        original = auto_class.from_pretrained

        def from_pretrained(name, *args, **kwargs):
            if name not in STAND_INS:
                return original(name, *args, **kwargs)
            labels = {key: kwargs[key] for key in ("num_labels", "id2label", "label2id") if key in kwargs}
            torch.manual_seed(0)
            return auto_class.from_config(stand_in_config(name, vocab_size(name), **labels))

        monkeypatch.setattr(auto_class, "from_pretrained", from_pretrained)

    for auto_class in (
        transformers.AutoModelForSequenceClassification,
        transformers.AutoModelForCausalLM,
        transformers.AutoModelForImageClassification,
    ):
        patch_model_loader(auto_class)

    original_config = transformers.AutoConfig.from_pretrained
    monkeypatch.setattr(
        transformers.AutoConfig,
        "from_pretrained",
        lambda name, *args, **kwargs: (
            stand_in_config(name, vocab_size(name)) if name in STAND_INS else original_config(name, *args, **kwargs)
        ),
    )
    original_tokenizer = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(
        transformers.AutoTokenizer,
        "from_pretrained",
        lambda name, *args, **kwargs: (
            stand_in_tokenizers[STAND_INS[name][1]] if name in STAND_INS else original_tokenizer(name, *args, **kwargs)
        ),
    )
    import datasets

    original_load = datasets.load_dataset

    def load_dataset(path, *args, **kwargs):
        if path == "tyqiangz/multilingual-sentiments":
            return japanese_sentiment_dataset(200)
        return original_load(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


# ---- Running the blocks --------------------------------------------------------------------------------


def run_python(block: Block, page: str, namespace: dict) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)
    return output.getvalue()


def check_yaml(block: Block) -> None:
    data = yaml.safe_load(block.code)
    if isinstance(data, dict) and "model" in data:
        parse_run_config(data)
    elif isinstance(data, list) or (isinstance(data, dict) and {"groups", "layer_decay"} & set(data)):
        parse_spec(data)


def run_layerwise_trainer(command: str) -> int:
    tolerant = "||" in command
    argv = shlex.split(command.split("||")[0])[1:]
    if argv[:1] == ["train"]:
        if "--config" in argv:
            position = argv.index("--config") + 1
            if not Path(argv[position]).exists():
                argv[position] = str(REPO / argv[position])
        argv += [part for override in SHRINK for part in ("--set", override)]
    try:
        status = cli_main(argv)
    except SystemExit as exit_:
        status = exit_.code or 0
    assert status == 0 or tolerant, f"`{command}` exited with {status}"
    return status


def run_bash(block: Block) -> None:
    lines = block.code.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].split(" #")[0].strip()
        index += 1
        heredoc = re.fullmatch(r"cat > (\S+) <<'(\w+)'", line)
        if heredoc:
            end = lines.index(heredoc.group(2), index)
            Path(heredoc.group(1)).write_text("\n".join(lines[index:end]) + "\n")
            index = end + 1
            continue
        for command in filter(None, (part.strip() for part in line.split("&&"))):
            if command.startswith("pip install"):
                continue
            assert command.startswith("layerwise-trainer"), f"the docs test cannot run `{command}`"
            run_layerwise_trainer(command)


@pytest.mark.parametrize("page", PAGES)
def test_every_code_block_runs(page, offline_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    printed = None
    for block in blocks_of(page):
        where = f"{page}:{block.line}"
        if block.marker == "skip":
            continue
        if block.marker == "parse-only":
            if block.language == "python":
                compile(block.code, where, "exec")
            continue
        if block.language == "python":
            printed = run_python(block, page, namespace)
        elif block.language == "text" and block.marker == "output":
            assert printed is not None, f"{where}: an output block needs a Python block before it"
            assert printed.rstrip("\n") == block.code, f"{where}: the block before printed:\n{printed}"
        elif block.language == "yaml":
            check_yaml(block)
        elif block.language == "bash":
            run_bash(block)


def test_the_docs_have_code_to_run():
    counts = {page: sum(block.language == "python" for block in blocks_of(page)) for page in PAGES}
    assert counts["docs/index.md"] >= 3 and counts["docs/spec.md"] >= 4 and counts["README.md"] >= 1
    outputs = sum(block.marker == "output" for page in PAGES for block in blocks_of(page))
    assert outputs >= 10


# ---- What the pages say agrees with the code and with each other ----------------------------------------

EXAMPLE_FILES = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "examples").glob("*.yaml"))
# "the top block learns at the base rate", "gives the top of an encoder the full rate": the code gives the
# top block (id L) `layer_decay` times the group's rate; only what sits after the last block keeps the full rate.
TOP_AT_FULL_RATE = re.compile(r"\btop\b[^.;,]{0,50}?(?<!x )(?<!times )\bthe (?:full|base) rate", re.IGNORECASE)


def prose_of(path: str) -> str:
    """The text of a page or example with its line breaks (and YAML comment marks) joined into spaces."""
    return re.sub(r"\s*\n\s*#?\s*", " ", (REPO / path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [*PAGES, *EXAMPLE_FILES])
def test_no_page_says_the_top_block_learns_at_the_full_rate(path):
    claims = TOP_AT_FULL_RATE.findall(prose_of(path))
    assert not claims, f"{path} says the top block learns at the full rate (it gets layer_decay x the rate): {claims}"


# A measured ratio: "3.59x", or a whole number that says faster or slower ("37x faster"). Rate factors in specs
# ("10x the base rate", "16x") are settings, not measurements.
MEASURED_RATIO = re.compile(r"\b\d+\.\d+x\b|\b\d+x(?=\** (?:faster|slower)\b)")
BENCHMARKS_PAGE = "docs/benchmarks.md"


@pytest.mark.parametrize("path", [page for page in [*PAGES, *EXAMPLE_FILES] if page != BENCHMARKS_PAGE])
def test_measured_ratios_are_quoted_from_the_benchmarks_page(path):
    measured = set(MEASURED_RATIO.findall((REPO / BENCHMARKS_PAGE).read_text(encoding="utf-8")))
    quoted = MEASURED_RATIO.findall((REPO / path).read_text(encoding="utf-8"))
    unmeasured = sorted(set(quoted) - measured)
    assert not unmeasured, f"{path} quotes {unmeasured}, not on {BENCHMARKS_PAGE} (it has {sorted(measured)})"


# ---- The Japanese page --------------------------------------------------------------------------------------

JAPANESE_PAGE = "docs/ja/index.md"
JAPANESE = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]")
# A line that starts a new Markdown block instead of continuing the paragraph above it.
BLOCK_START = re.compile(r"^(?:[-*] |\d+\. |#|```|\||<!--|!\[)")


def wrapped_japanese_lines(page: str) -> list[int]:
    """Line numbers of the lines of a Japanese paragraph that go on in the next source line.

    A line break inside a paragraph renders as a space, which Japanese text does not have between words.
    """
    lines = (REPO / page).read_text(encoding="utf-8").splitlines()
    wrapped, in_code = [], False
    for number, (line, following) in enumerate(zip(lines, [*lines[1:], ""], strict=True), start=1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or line.startswith("```") or not following.strip() or BLOCK_START.match(following.lstrip()):
            continue
        if JAPANESE.search(line):
            wrapped.append(number)
    return wrapped


def test_japanese_paragraphs_are_not_wrapped_in_the_source():
    assert wrapped_japanese_lines(JAPANESE_PAGE) == []


# ---- The built site, as a reader sees it ---------------------------------------------------------------------

SPHINX_ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|obj|exc):`?[~\w.]*")
RETURNS_TABLE = re.compile(r'doc-section-title">Returns:</span>.*?</table>', re.DOTALL)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The documentation site, built strict as CI builds it."""
    pytest.importorskip("mkdocstrings", reason="the docs extra builds the site")
    pytest.importorskip("material", reason="the docs extra builds the site")
    directory = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)]
    build = subprocess.run(
        command, cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr}"
    return directory


def rendered_text(page_html: str) -> str:
    """What a reader sees of a page: its text without tags or entities."""
    return html.unescape(re.sub(r"<[^>]+>", "", page_html))


def in_context(text: str, found: re.Match[str]) -> str:
    return " ".join(text[max(0, found.start() - 40) : found.end() + 20].split())


def api_page(site: Path) -> str:
    return (site / "api" / "index.html").read_text(encoding="utf-8")


def test_the_api_page_shows_no_sphinx_role(site):
    text = rendered_text(api_page(site))
    roles = [in_context(text, found) for found in SPHINX_ROLE.finditer(text)]
    assert roles == [], f"raw Sphinx roles on the API page (write `Name` in backticks): {roles}"


def test_the_api_page_names_no_returned_value(site):
    """A "Returns:" line such as "The plan." is a description, not a value named "The"."""
    tables = RETURNS_TABLE.findall(api_page(site))
    assert tables, "the API page has no Returns section"
    named = [" ".join(rendered_text(table).split())[:120] for table in tables if "<th>Name</th>" in table]
    assert named == []


def test_the_api_page_shows_each_returned_value_in_one_row(site):
    """A description that wraps onto a second line stays one row."""
    tables = RETURNS_TABLE.findall(api_page(site))
    split = [" ".join(rendered_text(table).split())[:120] for table in tables if table.count("doc-section-item") != 1]
    assert split == []


def test_the_api_page_shows_no_lambda_default(site):
    text = rendered_text(api_page(site))
    assert [in_context(text, found) for found in re.finditer(r"\(lambda\b", text)] == []


def test_the_japanese_page_is_served_as_japanese(site):
    assert '<html lang="ja"' in (site / "ja" / "index.html").read_text(encoding="utf-8")
    assert '<html lang="en"' in (site / "index.html").read_text(encoding="utf-8")


# `pip install "layerwise-trainer[ja]"` fails: the package is on no index a user can reach.
INSTALL_FROM_AN_INDEX = re.compile(r"pip install [\"']?layerwise[-_]trainer\b")


@pytest.mark.parametrize("path", [*PAGES, *EXAMPLE_FILES])
def test_no_page_installs_the_package_from_an_index(path):
    commands = INSTALL_FROM_AN_INDEX.findall((REPO / path).read_text(encoding="utf-8"))
    assert commands == [], f"{path}: install from a clone (pip install '.[ja]') or a built wheel instead"


@pytest.mark.parametrize("path", ["README.md", "docs/index.md", "docs/ja/index.md"])
def test_the_install_pages_install_what_the_readme_does(path):
    text = (REPO / path).read_text(encoding="utf-8")
    # The version CI tests; a bare `pip install torch` takes the newest, and gigabytes of CUDA wheels with it.
    assert set(re.findall(r"pip install (torch\S*)", text)) == {"torch==2.13.0"}
    # A clone is installed editable, as the README and CI do; only a built wheel is installed as a file.
    assert re.findall(r"pip install [\"']?\.\[", text) == [], f"{path}: pip install -e in a clone"


@pytest.mark.parametrize("path", PAGES)
def test_every_test_file_a_page_names_exists(path):
    named = set(re.findall(r"tests/[\w/]*test_\w+\.py", (REPO / path).read_text(encoding="utf-8")))
    assert sorted(name for name in named if not (REPO / name).is_file()) == []


def test_every_test_the_reliability_page_names_exists():
    page = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)(?:\[[^\]]*\])?`", page))
    sources = "".join(path.read_text(encoding="utf-8") for path in (REPO / "tests").rglob("*.py"))
    assert len(named) > 50
    assert sorted(name for name in named if f"def {name}(" not in sources) == []
