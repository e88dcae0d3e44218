"""diagnostics.png: per group, gradient norm and update ratio on log scales (0s as gaps) and relative weight norm."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from helpers import RandomClassificationData, tiny_bert, training_args

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments
from layerwise_trainer.app.diagnostics_plot import diagnostics_figure, has_group_diagnostics, plot_diagnostics
from layerwise_trainer.app.lr_plot import learning_rate_figure
from layerwise_trainer.app.pipeline import _write_outputs
from layerwise_trainer.app.run_config import load_run_config

matplotlib = pytest.importorskip("matplotlib", reason="the [app] extra draws the picture")
from matplotlib.colors import to_hex  # noqa: E402

PANELS = ("grad_norm", "update_ratio", "param_norm")


def entry(step, head, body, grad_norm=None):
    """A logged step: (rate, grad_norm, update_ratio, param_norm) for each group."""
    logged = {"loss": 1.0, "step": step}
    for name, (rate, gradient, update, weight) in (("head", head), ("body", body)):
        logged |= {f"learning_rate/{name}": rate, f"grad_norm/{name}": gradient,
                   f"update_ratio/{name}": update, f"param_norm/{name}": weight}  # fmt: skip
    if grad_norm is not None:
        logged["grad_norm"] = grad_norm
    return logged


# The Trainer's warm-up holds every rate at 0 at step 1 (no update anywhere); the body waits alone until step 3.
STAGED_LOG = [
    entry(1, (0.0, 0.5, 0.0, 2.0), (0.0, 0.0, 0.0, 8.0), grad_norm=0.5),
    entry(2, (1e-3, 0.25, 0.01, 2.5), (0.0, 0.0, 0.0, 8.0), grad_norm=0.25),
    entry(3, (1e-3, 0.125, 0.02, 3.0), (0.0, 0.0, 0.0, 8.0), grad_norm=0.125),
    {"eval_loss": 0.9, "step": 3},
    entry(4, (1e-3, 0.75, 0.04, 3.5), (1e-4, 1.0, 1e-4, 6.0), grad_norm=1.25),
]
RATES_ONLY_LOG = [{"loss": 1.0, "step": 1, "learning_rate/head": 1e-3, "grad_norm": 0.5}]


def artists_by_gid(figure):
    return {
        artist.get_gid(): (panel, artist)
        for panel, axes in zip(PANELS, figure.axes, strict=True)
        for artist in axes.get_lines()
        if artist.get_gid()
    }


def gaps_as_none(values):
    return [None if math.isnan(value) else float(value) for value in values]


def test_a_log_has_diagnostics_only_with_per_group_diagnostic_keys():
    assert has_group_diagnostics(STAGED_LOG) is True
    assert has_group_diagnostics(RATES_ONLY_LOG) is False


def test_each_group_has_one_line_per_panel_and_the_guides_are_drawn():
    artists = artists_by_gid(diagnostics_figure(STAGED_LOG))
    assert set(artists) == {
        *(f"{panel}:{name}" for panel in PANELS for name in ("head", "body")),
        *(f"start-{panel}:body" for panel in PANELS),
        "total:grad_norm", "guide:update_ratio",
    }  # fmt: skip
    assert {gid: panel for gid, (panel, _) in artists.items() if ":" in gid and gid.endswith(":head")} == {
        f"{panel}:head": panel for panel in PANELS
    }


def test_norms_and_ratios_are_drawn_on_log_scales_with_each_0_a_gap():
    artists = artists_by_gid(diagnostics_figure(STAGED_LOG))
    lines = {gid: (list(line.get_xdata()), gaps_as_none(line.get_ydata())) for gid, (_, line) in artists.items()}
    assert lines["grad_norm:head"] == ([1, 2, 3, 4], [0.5, 0.25, 0.125, 0.75])
    assert lines["grad_norm:body"] == ([1, 2, 3, 4], [None, None, None, 1.0])
    assert lines["update_ratio:head"] == ([1, 2, 3, 4], [None, 0.01, 0.02, 0.04])
    assert lines["update_ratio:body"] == ([1, 2, 3, 4], [None, None, None, 1e-4])
    assert lines["total:grad_norm"] == ([1, 2, 3, 4], [0.5, 0.25, 0.125, 1.25])
    assert lines["guide:update_ratio"][1] == [1e-3, 1e-3]
    figure = diagnostics_figure(STAGED_LOG)
    assert [axes.get_yscale() for axes in figure.axes] == ["log", "log", "linear"]


def test_the_legend_below_the_panels_names_each_group_once_and_the_total():
    figure = diagnostics_figure(STAGED_LOG)
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["head", "body (starts after step 3)",
                                                               "all groups (grad_norm)"]  # fmt: skip


def test_the_weight_norm_is_drawn_relative_to_its_first_logged_value():
    artists = artists_by_gid(diagnostics_figure(STAGED_LOG))
    _, head = artists["param_norm:head"]
    _, body = artists["param_norm:body"]
    assert gaps_as_none(head.get_ydata()) == [1.0, 1.25, 1.5, 1.75]
    assert gaps_as_none(body.get_ydata()) == [1.0, 1.0, 1.0, 0.75]


def test_a_later_group_is_marked_at_its_start_on_every_panel_in_its_colour():
    artists = artists_by_gid(diagnostics_figure(STAGED_LOG))
    _, line = artists["grad_norm:body"]
    assert line.get_label() == "body (starts after step 3)"
    for panel in PANELS:
        where, start = artists[f"start-{panel}:body"]
        assert (where, list(start.get_xdata()), start.get_linestyle(), start.get_color()) == (
            panel, [3, 3], ":", line.get_color(),
        )  # fmt: skip


def test_given_starts_win_over_the_log():
    artists = artists_by_gid(diagnostics_figure(STAGED_LOG, starts={"body": 2, "head": 0}))
    _, start = artists["start-update_ratio:body"]
    assert list(start.get_xdata()) == [2, 2]
    assert "start-grad_norm:head" not in artists


def test_each_group_has_its_colour_from_learning_rates_png():
    rates = {line.get_gid(): to_hex(line.get_color()) for line in learning_rate_figure(STAGED_LOG).axes[0].get_lines()}
    artists = artists_by_gid(diagnostics_figure(STAGED_LOG))
    for name in ("head", "body"):
        for panel in PANELS:
            _, line = artists[f"{panel}:{name}"]
            assert to_hex(line.get_color()) == rates[f"rate:{name}"]
    assert rates["rate:head"] != rates["rate:body"]


def test_a_group_without_a_rate_in_the_log_takes_the_next_colour():
    log = [{**item, "grad_norm/extra": 1.0} for item in STAGED_LOG if "loss" in item]
    artists = artists_by_gid(diagnostics_figure(log))
    _, extra = artists["grad_norm:extra"]
    assert (to_hex(extra.get_color()), extra.get_label()) == (to_hex("C2"), "extra")


def test_a_group_whose_gradient_is_0_all_run_says_so():
    log = [{**item, "grad_norm/body": 0.0} for item in STAGED_LOG if "loss" in item]
    _, line = artists_by_gid(diagnostics_figure(log, starts={}))["grad_norm:body"]
    assert (gaps_as_none(line.get_ydata()), line.get_label()) == ([None] * 4, "body (0 throughout)")


def outputs(output_dir, log_history):
    trainer = SimpleNamespace(group_plan=None, state=SimpleNamespace(log_history=log_history),
                              lr_scheduler=None, optimizer=None)  # fmt: skip
    return _write_outputs(output_dir, load_run_config(None, []), trainer, {})


def test_the_run_writes_diagnostics_png_beside_learning_rates_png_when_it_logged_diagnostics(tmp_path):
    files = outputs(tmp_path, STAGED_LOG)
    assert files["diagnostics"] == tmp_path / "diagnostics.png"
    assert files["diagnostics"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["learning_rates"].parent == files["diagnostics"].parent


def test_a_run_without_diagnostics_writes_no_diagnostics_png(tmp_path):
    files = outputs(tmp_path, RATES_ONLY_LOG)
    assert "diagnostics" not in files and not (tmp_path / "diagnostics.png").exists()
    assert (tmp_path / "learning_rates.png").exists()


def test_the_default_run_turns_the_diagnostics_on():
    assert load_run_config(None, []).training["group_diagnostics"] is True


def test_a_run_whose_body_starts_at_step_4_has_a_gap_until_then(tmp_path):
    spec = [
        {"name": "head", "match": "classifier.*", "lr": 1e-3},
        {"name": "body", "match": "bert.*", "lr": 1e-4, "start": 4, "warmup": 0, "schedule": "constant"},
    ]
    args = training_args(tmp_path, LayerwiseTrainingArguments, max_steps=6, lr_scheduler_type="constant",
                         group_diagnostics=True)  # fmt: skip
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=RandomClassificationData(),
                               param_groups=spec)  # fmt: skip
    trainer.train()
    history = trainer.state.log_history
    artists = artists_by_gid(diagnostics_figure(history))
    logged = [item for item in history if "grad_norm/body" in item]
    for panel in ("grad_norm", "update_ratio"):
        _, line = artists[f"{panel}:body"]
        assert gaps_as_none(line.get_ydata()) == [None] * 4 + [item[f"{panel}/body"] for item in logged[4:]]
        assert all(item[f"{panel}/body"] > 0 for item in logged[4:])
    _, start = artists["start-grad_norm:body"]
    assert list(start.get_xdata()) == [4, 4]
    path = plot_diagnostics(history, tmp_path / "diagnostics.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
