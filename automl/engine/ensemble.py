"""Greedy ensemble selection (Caruana et al., 2004) over out-of-fold predictions.

Selection with replacement from the best single model: each step adds the
candidate that most improves the metric of the averaged predictions. About 25
steps suffice at small budgets (AutoGluon, TabRepo), and the result is a
weighted average that is never worse on the validation rows than the best
single model.
"""

from __future__ import annotations

import time

import numpy as np

from .metrics import Metric


def greedy_selection(
    predictions: list[np.ndarray], y: np.ndarray, metric: Metric, steps: int = 25, deadline: float | None = None
) -> np.ndarray:
    """One weight per candidate (summing to 1), from its predictions as
    `metric.compact` gives them. Steps stop at `deadline` (time.monotonic())
    with the best blend so far."""
    gains = [metric.gain(metric.score_compact(y, p)) for p in predictions]
    counts = np.zeros(len(predictions))
    counts[int(np.argmax(gains))] = 1
    total = predictions[int(np.argmax(gains))].astype(float).copy()
    best, best_counts = max(gains), counts.copy()
    for step in range(1, steps):
        if deadline is not None and time.monotonic() >= deadline:
            break
        scores = [metric.gain(metric.score_compact(y, (total + p) / (step + 1))) for p in predictions]
        choice = int(np.argmax(scores))
        counts[choice] += 1
        total += predictions[choice]
        if scores[choice] > best + 1e-12:
            best, best_counts = scores[choice], counts.copy()
    return best_counts / best_counts.sum()

