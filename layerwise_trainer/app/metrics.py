"""Classification metrics for a run, computed with scikit-learn."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _metric(name: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    from sklearn import metrics

    if name == "accuracy":
        return float(metrics.accuracy_score(labels, predictions))
    kind, average = name.split("_")
    function = {"f1": metrics.f1_score, "precision": metrics.precision_score, "recall": metrics.recall_score}[kind]
    return float(function(labels, predictions, average=average, zero_division=0))


def classification_metrics(names: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` function for the Trainer.

    Args:
        names: Metric names: ``accuracy``, ``f1_weighted``, ``f1_macro``, ``precision_weighted``,
            ``recall_weighted``.

    Returns:
        A function from ``EvalPrediction`` to ``{name: value}``.
    """

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predictions = np.asarray(logits).argmax(axis=-1)
        labels = np.asarray(prediction.label_ids)
        return {name: _metric(name, labels, predictions) for name in names}

    return compute
