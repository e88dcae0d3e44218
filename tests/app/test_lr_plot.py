"""learning_rates.png: one line per group, and staged groups drawn waiting at 0 with their start marked."""

from __future__ import annotations

import pytest
from helpers import RandomClassificationData, tiny_bert, training_args

from layerwise_trainer import LayerwiseTrainer, plot_learning_rates
from layerwise_trainer.app.lr_plot import group_starts_in_log, learning_rate_figure

pytest.importorskip("matplotlib", reason="the [app] extra draws the picture")


def entry(step, head, body, loss=1.0):
    return {"loss": loss, "step": step, "learning_rate/head": head, "learning_rate/body": body}


# The Trainer's warm-up holds every group at 0 at step 1; the body waits alone until step 3.
STAGED_LOG = [
    entry(1, 0.0, 0.0),
    entry(2, 1e-3, 0.0),
    entry(3, 1e-3, 0.0),
    {"eval_loss": 0.9, "step": 3},
    entry(4, 8e-4, 5e-5),
    entry(5, 6e-4, 1e-4),
]
PLAIN_LOG = [entry(1, 0.0, 0.0), entry(2, 1e-3, 1e-4), entry(3, 5e-4, 5e-5)]


def artists_by_gid(figure):
    rates, losses = figure.axes
    return {
        artist.get_gid(): (panel, artist)
        for panel, axes in (("rates", rates), ("loss", losses))
        for artist in axes.get_lines()
        if artist.get_gid()
    }


def test_the_log_gives_the_last_step_a_group_waited_at_0_while_another_trained():
    assert group_starts_in_log(STAGED_LOG) == {"body": 3}


def test_a_shared_warm_up_and_a_group_at_0_all_run_are_not_starts():
    frozen = [{**item, "learning_rate/frozen": 0.0} for item in PLAIN_LOG]
    assert group_starts_in_log(frozen) == {}


def test_a_run_without_staging_draws_one_solid_line_per_group():
    artists = artists_by_gid(learning_rate_figure(PLAIN_LOG))
    assert set(artists) == {"rate:head", "rate:body"}
    _, body = artists["rate:body"]
    assert (list(body.get_xdata()), list(body.get_ydata()), body.get_linestyle(), body.get_label()) == (
        [1, 2, 3], [0.0, 1e-4, 5e-5], "-", "body",
    )  # fmt: skip


def test_a_staged_group_waits_dashed_at_0_and_its_start_is_marked_on_both_panels():
    artists = artists_by_gid(learning_rate_figure(STAGED_LOG))
    assert set(artists) == {"rate:head", "rate:body", "waiting:body", "start:body", "start-loss:body"}
    _, rate = artists["rate:body"]
    _, waiting = artists["waiting:body"]
    assert (list(rate.get_xdata()), list(rate.get_ydata()), rate.get_label()) == (
        [3, 4, 5], [0.0, 5e-5, 1e-4], "body (starts after step 3)",
    )  # fmt: skip
    assert (list(waiting.get_xdata()), list(waiting.get_ydata()), waiting.get_linestyle()) == (
        [1, 2, 3], [0.0, 0.0, 0.0], "--",
    )  # fmt: skip
    for gid, panel in (("start:body", "rates"), ("start-loss:body", "loss")):
        where, line = artists[gid]
        assert (where, list(line.get_xdata()), line.get_linestyle(), line.get_color()) == (
            panel, [3, 3], ":", rate.get_color(),
        )  # fmt: skip


def test_given_starts_win_over_the_log():
    artists = artists_by_gid(learning_rate_figure(STAGED_LOG, starts={"body": 2, "head": 0}))
    _, start = artists["start:body"]
    _, rate = artists["rate:body"]
    _, waiting = artists["waiting:body"]
    assert (list(start.get_xdata()), list(waiting.get_xdata()), list(rate.get_xdata()), rate.get_label()) == (
        [2, 2], [1, 2], [2, 3, 4, 5], "body (starts after step 2)",
    )  # fmt: skip
    assert "start:head" not in artists


def test_a_run_whose_body_starts_at_step_4_is_marked_at_4(tmp_path):
    spec = [
        {"name": "head", "match": "classifier.*", "lr": 1e-3},
        {"name": "body", "match": "bert.*", "lr": 1e-4, "start": 4, "warmup": 0, "schedule": "constant"},
    ]
    args = training_args(tmp_path, max_steps=6, lr_scheduler_type="constant")
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=RandomClassificationData(),
                               param_groups=spec)  # fmt: skip
    trainer.train()
    assert group_starts_in_log(trainer.state.log_history) == {"body": 4}
    path = plot_learning_rates(trainer.state.log_history, tmp_path / "learning_rates.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_start_an_evaluation_decided_is_marked_at_its_event_and_says_why():
    # The body's own warm-up logs 0 at its first step, 4: from the rates alone its start reads as 4.
    log = [
        entry(1, 1e-3, 0.0),
        entry(2, 1e-3, 0.0),
        {"eval_loss": 0.9, "step": 2},
        entry(3, 1e-3, 0.0),
        {"group_started": "body", "reason": "plateau: eval_loss did not improve on its best (0.9)", "step": 3},
        entry(4, 1e-3, 0.0),
        entry(5, 1e-3, 5e-5),
    ]
    assert group_starts_in_log(log) == {"body": 3}
    artists = artists_by_gid(learning_rate_figure(log))
    _, start = artists["start:body"]
    _, rate = artists["rate:body"]
    assert (list(start.get_xdata()), rate.get_label()) == ([3, 3], "body (starts after step 3: plateau)")
