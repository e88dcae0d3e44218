"""Property-based tests: any spec, any YAML/JSON text, any parameter names end as an optimizer or a SpecError.

Never another exception, never a hang (each example runs under a deadline), YAML only ever loaded safely,
and no spec value evaluated as code.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from layerwise_trainer import LayerwiseSpec, SpecError, parse_spec, resolve_groups
from layerwise_trainer.core.spec import GROUP_KEYS, MAX_SPEC_BYTES, TOP_LEVEL_KEYS

# LAYERWISE_HYPOTHESIS_EXAMPLES raises the number of examples for a longer local search.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("LAYERWISE_HYPOTHESIS_EXAMPLES", "150")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SEGMENTS = ["bert", "encoder", "layer", "layers", "h", "blocks", "block", "0", "1", "2", "11", "embeddings",
            "embed_tokens", "LayerNorm", "norm", "attention", "classifier", "lm_head", "pooler", "dense",
            "_orig_mod", "_fsdp_wrapped_module", "lora_A", "lora_B", "default", "x"]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["1e-3", "2e-5", "0", "-1", "nan", "inf", "0.5", "true", "*", "re:.*", "re:(", "default"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
patterns = st.one_of(
    st.text(alphabet="ab.*?[]!^$()|+\\{}0123456789re:_", max_size=14),
    st.builds(lambda parts: ".".join(parts) + ".*", st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3)),
    st.builds(
        lambda parts: "re:" + r"\.".join(parts) + r"\..*", st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3)
    ),
    st.just("*"),
)
group_values = {
    "name": st.one_of(st.text(alphabet="abcxyz_.-/ ", min_size=0, max_size=8), json_values),
    "match": st.one_of(patterns, st.lists(patterns, max_size=3), json_values),
    "lr": st.one_of(scalars, st.floats(min_value=0, max_value=1)),
    "lr_scale": st.one_of(scalars, st.floats(min_value=0, max_value=10)),
    "weight_decay": st.one_of(scalars, st.floats(min_value=0, max_value=1)),
    "freeze": st.one_of(st.booleans(), scalars),
    "layer_decay": st.one_of(scalars, st.floats(min_value=0, max_value=1.5)),
    "num_layers": st.one_of(scalars, st.integers(min_value=-2, max_value=10**6)),
    # Optimizer hyperparameters, real and made up.
    "betas": st.one_of(json_values, st.tuples(st.floats(), st.floats()).map(list)),
    "eps": st.one_of(scalars, st.floats(min_value=0, max_value=1)),
    "amsgrad": st.one_of(st.booleans(), scalars),
    "foreach": st.one_of(st.booleans(), scalars),
    "capturable": st.one_of(st.booleans(), scalars),
    "momentum": scalars,
    "lr_sclae": scalars,
}


@st.composite
def group_dicts(draw):
    keys = draw(st.lists(st.sampled_from(sorted(group_values)), unique=True, max_size=6))
    keys = list(dict.fromkeys(["name", "match", *keys])) if draw(st.booleans()) else keys
    group = {key: draw(group_values[key]) for key in keys}
    if draw(st.booleans()):
        group["name"] = draw(st.sampled_from(["body", "head", "a", "b", "c"]))
    return group


specs = st.one_of(
    st.lists(group_dicts(), max_size=4),
    st.fixed_dictionaries(
        {"groups": st.lists(group_dicts(), max_size=4)},
        optional={
            "layer_decay": st.one_of(scalars, st.floats(min_value=0.01, max_value=1)),
            "unmatched": st.sampled_from(["default", "error", "ignore", ""]),
            "lr": scalars,
            "grups": json_values,
        },
    ),
    json_values,
)


@st.composite
def parameter_names(draw):
    """Dotted names that form a valid module tree: no name is a prefix of another at a dot."""
    names = draw(st.lists(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5).map(".".join), min_size=1,
                          max_size=12, unique=True))  # fmt: skip
    kept: list[str] = []
    for name in names:
        if not any(other.startswith(name + ".") or name.startswith(other + ".") for other in kept):
            kept.append(name)
    return kept


def model_with(names):
    root = nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        module = root
        for segment in path:
            child = module._modules.get(segment)
            if child is None:
                child = nn.Module()
                module.add_module(segment, child)
            module = child
        module.register_parameter(leaf, nn.Parameter(torch.randn(2)))
    return root


def accept_spec_or_error(source):
    try:
        spec = parse_spec(source)
    except SpecError:
        return None
    assert isinstance(spec, LayerwiseSpec)
    return spec


def check_optimizer_from(plan):
    groups = plan.optimizer_param_groups()
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    for group in groups:
        for parameter in group["params"]:
            parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    for group in optimizer.param_groups:
        assert math.isfinite(group["lr"]) and group["lr"] >= 0
        assert all(torch.isfinite(parameter).all() for parameter in group["params"])


@PROPERTY_SETTINGS
@given(specs)
def test_any_spec_data_parses_or_raises_spec_error(source):
    accept_spec_or_error(source)


@PROPERTY_SETTINGS
@given(st.one_of(st.text(max_size=200), specs.map(lambda spec: json.dumps(spec, default=str, allow_nan=True))))
def test_any_json_string_parses_or_raises_spec_error(text):
    accept_spec_or_error("[" + text if not text.lstrip().startswith(("[", "{")) else text)


yaml_texts = st.one_of(
    st.text(max_size=200),
    specs.map(lambda spec: yaml.safe_dump(spec, allow_unicode=True) if _dumpable(spec) else "x: 1"),
    st.builds(
        lambda tag, body: f"- name: head\n  match: {tag} {body}\n",
        st.sampled_from(
            [
                "!!python/object/apply:os.system",
                "!!python/name:os.system",
                "!!binary",
                "!!set",
                "!!timestamp",
                "&a",
                "*a",
                "!!str",
                "!custom",
            ]
        ),
        st.sampled_from(["['echo pwned']", "x", "{a: 1}", "2020-01-01", "[*a]"]),
    ),
    st.builds(lambda depth: "[" * depth + "]" * depth, st.integers(min_value=1, max_value=3000)),
)


def _dumpable(spec):
    try:
        yaml.safe_dump(spec)
    except (yaml.YAMLError, ValueError, TypeError):
        return False
    return True


@PROPERTY_SETTINGS
@given(yaml_texts)
def test_any_yaml_file_parses_or_raises_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    accept_spec_or_error(path)


@PROPERTY_SETTINGS
@given(parameter_names(), specs)
def test_any_spec_on_any_model_gives_an_optimizer_or_spec_error(names, source):
    spec = accept_spec_or_error(source)
    if spec is None:
        return
    model = model_with(names)
    try:
        plan = resolve_groups(
            model, spec, learning_rate=1e-3, weight_decay=0.01, optimizer_cls=torch.optim.AdamW,
            optimizer_kwargs={"lr": 1e-3},
        )  # fmt: skip
    except SpecError:
        return
    placed = [name for group in plan.groups for name in group.parameter_names] + list(plan.frozen_before_training)
    assert sorted(placed) == sorted(plan.parameters)  # every tensor placed exactly once
    assert len(plan.parameters) == len(list(model.parameters()))
    check_optimizer_from(plan)


@PROPERTY_SETTINGS
@given(parameter_names())
def test_layer_decay_on_any_names(names):
    model = model_with(names)
    try:
        plan = resolve_groups(model, {"layer_decay": 0.5}, learning_rate=1e-3, weight_decay=0.0)
    except SpecError as error:
        assert "layer_decay needs transformer blocks" in str(error)
        return
    for group in plan.groups:
        assert 0 <= group.layer_id <= plan.num_layers + 1
        assert group.lr == 1e-3 * 0.5 ** (plan.num_layers + 1 - group.layer_id)
    check_optimizer_from(plan)


def test_a_catastrophic_regex_times_out_as_a_spec_error():
    model = nn.Module()
    model.register_parameter("a" * 40, nn.Parameter(torch.zeros(1)))
    with pytest.raises(SpecError) as caught:
        resolve_groups(model, [{"name": "slow", "match": "re:(a|aa)+b"}], learning_rate=1e-3, weight_decay=0.0)
    assert str(caught.value).startswith(
        "groups[0].match[0] (group 'slow'): regular expression 're:(a|aa)+b' took more than 1 s to match one name"
    )


def test_no_spec_value_is_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    hostile = [
        {"name": "head", "match": f"__import__('os').system('touch {marker}')", "lr": "__import__('os')"},
        {"name": "x", "match": "*", "eps": f"{{{{os.system('touch {marker}')}}}}"},
    ]
    for source in (hostile, json.dumps(hostile)):
        with pytest.raises(SpecError):
            resolve_groups(model_with(["a.weight"]), source, learning_rate=1e-3, weight_decay=0.0)
    assert not marker.exists()


def test_spec_keys_are_the_documented_ones():
    assert GROUP_KEYS == (
        "name",
        "match",
        "lr",
        "lr_scale",
        "weight_decay",
        "freeze",
        "layer_decay",
        "num_layers",
        "start",
        "warmup",
        "schedule",
        "min_lr_ratio",
        "gradual_unfreeze",
        "layer_stacks",
        "optimizer",
        "adamw_lr",
        "adamw_lr_scale",
    )
    assert TOP_LEVEL_KEYS == (
        "groups",
        "layer_decay",
        "unmatched",
        "gradual_unfreeze",
        "no_weight_decay",
        "layer_stacks",
        "muon",
    )


# ---- Special files: refused at once, never read whole, never waited on (issue 19, B6) ----------------

# Reads a spec in a fresh process whose address space is capped at 1 GiB: a reader that reads /dev/zero whole
# fails with MemoryError there, instead of taking the test run's memory (23.7 GB was seen before the OOM killer).
READ_SPEC = """
import resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from layerwise_trainer import SpecError, parse_spec
tracemalloc.start()
started = time.perf_counter()
try:
    parse_spec(sys.argv[1])
except SpecError as error:
    print(error)
print(f"{time.perf_counter() - started:.3f} s, {tracemalloc.get_traced_memory()[1]} bytes")
"""


def special_file(kind, directory):
    path = directory / "spec.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(f"/dev/{kind}")
    return path


@pytest.mark.skipif(not os.path.exists("/dev/zero") or not hasattr(os, "mkfifo"), reason="needs /dev/zero and FIFOs")
@pytest.mark.parametrize(
    ("kind", "what"),
    [("zero", "a character device"), ("urandom", "a character device"), ("fifo", "a FIFO (named pipe)")],
)
def test_a_special_file_as_a_spec_is_refused_at_once_without_reading_it(tmp_path, kind, what):
    path = special_file(kind, tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", READ_SPEC, str(path)], capture_output=True, text=True, timeout=60
    )  # a reader that waits on the FIFO is stopped by the timeout, and the test fails
    message, measured = result.stdout.splitlines()
    assert message == f"{path}: is {what}, expected a regular file", result.stderr
    seconds, peak = float(measured.split()[0]), int(measured.split()[2])
    assert seconds < 0.1
    assert peak < 100_000  # bytes allocated at the peak of the call: nothing of the file was read


def test_a_file_that_says_size_0_but_holds_more_is_read_only_to_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "spec.yaml"
    path.write_text("#" * (MAX_SPEC_BYTES + 10), encoding="utf-8")
    real_fstat = os.fstat

    def fstat_saying_0(descriptor):  # as /proc files do
        status = real_fstat(descriptor)
        return os.stat_result((*status[:6], 0, *status[7:]))

    monkeypatch.setattr(os, "fstat", fstat_saying_0)
    with pytest.raises(SpecError) as caught:
        parse_spec(path)
    assert (
        str(caught.value) == f"{path}: the spec holds more than the {MAX_SPEC_BYTES:,} bytes allowed (MAX_SPEC_BYTES)"
    )
