"""The one console line per evaluation that replaces the stock log dicts."""

from __future__ import annotations

from transformers import PrinterCallback, ProgressCallback, Trainer

from layerwise_trainer.app.epoch_summary import EpochSummaryCallback, EpochSummaryProgressCallback, epoch_summary_line


def test_the_line_has_the_mean_training_loss_then_the_evaluation_without_timings():
    metrics = {"eval_loss": 0.12, "eval_accuracy": 0.97, "eval_runtime": 1.5, "eval_samples_per_second": 400.0,
               "eval_steps_per_second": 7.0, "epoch": 2.0}  # fmt: skip
    line = epoch_summary_line(2.0, 5, [0.5, 0.32], metrics)
    assert line == "epoch 2/5: train loss 0.4100, eval loss 0.1200, eval accuracy 0.9700"


def test_a_fractional_epoch_and_no_evaluation():
    assert epoch_summary_line(1.3333333, 3, [1.0], {}) == "epoch 1.33/3: train loss 1.0000"


def test_the_printer_prints_one_line_per_evaluation_and_no_dicts(bert, data, make_args, capsys):
    trainer = Trainer(model=bert, args=make_args(max_steps=4, eval_strategy="steps", eval_steps=2), train_dataset=data,
                      eval_dataset=data)  # fmt: skip
    assert trainer.pop_callback(PrinterCallback) is not None
    trainer.add_callback(EpochSummaryCallback())
    trainer.train()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 0.5/1", "epoch 1/1"]
    assert all(", eval loss " in line and "{" not in line for line in lines)


def test_the_progress_variant_keeps_the_stock_bar_methods():
    callback = EpochSummaryProgressCallback()
    assert isinstance(callback, ProgressCallback)
    assert type(callback).on_step_end is ProgressCallback.on_step_end
    assert type(callback).on_log is EpochSummaryCallback.on_log
