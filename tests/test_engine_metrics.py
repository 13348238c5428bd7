"""The metrics the search computes hundreds of times, and the selection that does."""

import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from automl.engine.ensemble import greedy_selection
from automl.engine.metrics import METRICS


@pytest.mark.parametrize("decimals", [1, 3, 8])  # many ties, some, none
def test_binary_roc_auc_is_sklearns_ties_included(decimals):
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.2).astype(int)
    score = np.round(rng.random(3000) + 0.4 * y, decimals)
    pred = np.column_stack([1 - score, score])
    assert METRICS["roc_auc"].score(y, pred) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_binary_roc_auc_of_one_class_is_an_error_the_report_can_skip():
    with pytest.raises(ValueError):
        METRICS["roc_auc"].score(np.zeros(10, dtype=int), np.full((10, 2), 0.5))


def test_greedy_selection_past_its_deadline_keeps_the_best_model_alone():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.5).astype(int)
    candidates = [np.column_stack([1 - p, p]) for p in (rng.random(500), 0.3 * y + 0.7 * rng.random(500),
                                                        0.25 * y + 0.75 * rng.random(500))]
    metric = METRICS["roc_auc"]
    assert list(greedy_selection(candidates, y, metric, deadline=time.monotonic())) == [0.0, 1.0, 0.0]
    blended = greedy_selection(candidates, y, metric)
    assert blended[2] > 0  # with time, the blend takes the third model too
