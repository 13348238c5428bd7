"""Data shapes that cost more than their rows: many columns, many classes.

Each of these made a 60 s fit overrun or run out of memory before the work
it did was bounded by the data's shape (benchmarks/make_stress_datasets.py)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from automl import AutoML
from automl.engine import checks, core, models, search
from automl.engine.ensemble import greedy_selection
from automl.engine.metrics import METRICS
from automl.engine.models import Candidate, Context


def wide(n_rows, n_noise, seed=0):
    """Two informative columns among many columns of noise."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n_rows, n_noise)), columns=[f"noise{i}" for i in range(n_noise)])
    X.insert(0, "signal_a", rng.normal(size=n_rows))
    X.insert(1, "signal_b", rng.normal(size=n_rows))
    y = pd.Series(np.where(X.signal_a + X.signal_b + 0.3 * rng.normal(size=n_rows) > 0, "yes", "no"), name="y")
    return X, y


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_leakage_screen_tells_a_leak_from_noise(task):
    rng = np.random.default_rng(0)
    n = 2000
    y = {"binary": (rng.random(n) < 0.1).astype(int), "multiclass": rng.integers(0, 5, n),
         "regression": rng.normal(size=n)}[task]
    leak = y + 0.3 * rng.random(n)
    assert checks._binned_score(leak, y, task) > checks.LEAKAGE_SCREEN
    for noise in (rng.normal(size=n), rng.integers(0, 30, n).astype(float), rng.normal(size=40)):
        assert checks._binned_score(noise, y[:len(noise)], task) < 0.6


def test_the_exact_leakage_check_runs_on_the_screened_columns_only(monkeypatch):
    import sklearn.model_selection

    calls = []
    real = sklearn.model_selection.cross_val_score
    monkeypatch.setattr(sklearn.model_selection, "cross_val_score", lambda *a, **k: calls.append(1) or real(*a, **k))
    X, y = wide(600, 300)
    y = (y == "yes").to_numpy().astype(int)
    X["leak"] = y * 10 + np.random.default_rng(1).random(len(y))
    X["city"] = np.where(y == 1, "Lyon", "Paris")  # a categorical leak
    kinds = {c: "numeric" for c in X} | {"city": "categorical"}
    guards = checks.leakage_guards(X, y, kinds, "binary", 0)
    assert {g["column"] for g in guards} == {"leak", "city"}
    assert 2 <= len(calls) <= checks.LEAKAGE_MOST_CHECKED


def test_the_leakage_check_still_runs_when_some_classes_are_too_rare_for_it():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.integers(0, 20, 1000), [20, 21]])  # two classes of one row each
    X = pd.DataFrame({"noise": rng.normal(size=len(y)), "leak": y + 0.3 * rng.random(len(y))})
    guards = checks.leakage_guards(X, y, {"noise": "numeric", "leak": "numeric"}, "multiclass", 0)
    assert [g["column"] for g in guards] == ["leak"]


def test_importance_on_wide_data_measures_the_columns_that_predict_best_in_bounded_blocks(monkeypatch):
    X, y = wide(400, 60)
    width = X.shape[1]
    monkeypatch.setattr(core, "IMPORTANCE_CELLS", 10 * core.IMPORTANCE_MIN_ROWS * width)  # room for 10 columns
    monkeypatch.setattr(core, "IMPORTANCE_BLOCK_CELLS", 5000)
    blocks = []
    real = core.AutoML._predict_bagged

    def spy(self, models, preprocessors, X_block):
        blocks.append(X_block.shape)
        return real(self, models, preprocessors, X_block)

    monkeypatch.setattr(core.AutoML, "_predict_bagged", spy)
    model = AutoML(time_budget=None, max_trials=1, seed=0).fit(X, y)
    table = model.feature_importance_
    assert len(table) == 10
    assert set(table.feature[:2]) == {"signal_a", "signal_b"}
    assert table.importance.iloc[1] > 0.05
    # every block holds at most IMPORTANCE_BLOCK_CELLS cells, data and predicted classes,
    # so a fold's repeat takes several blocks
    assert all(rows * (width + 2) <= 5000 for rows, _ in blocks)
    n_folds = 8
    assert len(blocks) > n_folds * (1 + 3)


def test_importance_on_narrow_data_measures_every_column(binary_df):
    model = AutoML(time_budget=None, max_trials=1, seed=0).fit(binary_df, target="bought")
    measured = {c for c, kind in model.feature_kinds_.items() if kind != "ignored"}
    assert set(model.feature_importance_.feature) == measured


def test_importance_without_time_for_its_first_repeat_predicts_its_fewest_rows(monkeypatch, binary_df):
    """On 355 classes a repeat of 2,000 rows took 6 s, past the fit's budget."""
    predicted = []
    real = core.AutoML._predict_bagged
    monkeypatch.setattr(core.AutoML, "_predict_bagged",
                        lambda self, models, pre, X: predicted.append(len(X)) or real(self, models, pre, X))
    AutoML(time_budget=None, max_trials=1, seed=0).fit(binary_df, target="bought")
    unhurried, predicted[:] = sum(predicted), []
    monkeypatch.setattr(core, "REFIT_SHARE", 1e-9)  # the first repeat's deadline has passed when it starts
    model = AutoML(time_budget=600, max_trials=1, seed=0).fit(binary_df, target="bought")
    n_columns = len(model.feature_importance_)
    assert unhurried == 400 * (1 + 3 * n_columns)  # every validation row, three repeats
    assert sum(predicted) <= core.IMPORTANCE_MIN_ROWS * (1 + 3 * n_columns)


def test_importance_samples_every_class_of_each_fold_however_rare(monkeypatch):
    """ROC AUC needs both classes: 100 rows of 0.2 % positives held none."""
    monkeypatch.setattr(core, "IMPORTANCE_ROWS", 16)  # two rows a fold
    X, y = wide(1000, 3, seed=1)
    y = pd.Series(np.where(np.arange(1000) % 50 == 0, "yes", "no"), name="y")  # 2 % positives
    model = AutoML(time_budget=None, max_trials=1, seed=0).fit(X, y)
    assert np.isfinite(model.feature_importance_.importance).all()


def test_greedy_selection_on_log_loss_reads_only_the_true_class_and_chooses_the_same():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 40, 3000)
    predictions = []
    for sharpness in (1.8, 2.0, 2.2, 1.9, 2.1):  # alike, with independent errors: a blend beats each
        logits = rng.normal(size=(3000, 40))
        logits[np.arange(3000), y] += sharpness
        predictions.append((np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32))
    log_loss = METRICS["log_loss"]
    compact = log_loss.compact(y, predictions[0])
    assert compact.shape == (3000, 2)
    assert log_loss.score_compact(y, compact) == pytest.approx(log_loss.score(y, predictions[0]), rel=1e-6)
    weights = greedy_selection([log_loss.compact(y, p) for p in predictions], y, log_loss)
    whole_matrices = dataclasses.replace(log_loss, name="log_loss, whole")  # the same function, not compacted
    assert whole_matrices.compact(y, predictions[0]) is predictions[0]
    np.testing.assert_allclose(weights, greedy_selection(predictions, y, whole_matrices))
    assert (weights > 0).sum() > 1


def test_temperature_is_fitted_on_a_sample_of_rows_when_the_classes_are_many(monkeypatch):
    rng = np.random.default_rng(0)
    n, k = 20_000, 50
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0  # then softmax(logits) is the true posterior
    overconfident = core.scale_temperature(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 0.5)
    whole = core.fit_temperature(overconfident, y)
    monkeypatch.setattr(core, "TEMPERATURE_CELLS", 100_000)
    scaled_rows = []
    real = core.scale_temperature
    monkeypatch.setattr(core, "scale_temperature", lambda p, t: scaled_rows.append(len(p)) or real(p, t))
    sampled = core.fit_temperature(overconfident, y)
    assert set(scaled_rows) == {100_000 // k}
    assert 1.6 < whole < 2.4
    assert sampled == pytest.approx(whole, rel=0.1)


def four_class_search(metric):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = rng.integers(0, 4, 300)
    folds = search.Folds(X, y, search.make_splits(y, "multiclass", 0), {c: "numeric" for c in X}, "multiclass", 0)
    run = search.Search(folds, METRICS[metric], Context("multiclass", 4, 0, 1))
    for candidate in [search.baseline(), Candidate("linear", "linear", {}), Candidate("knn", "knn", {}),
                      Candidate("linear_2", "linear", {"C": 0.1})]:
        run.evaluate(candidate)
    return run


def test_candidates_keep_as_many_whole_predictions_as_their_memory_allows(monkeypatch):
    oof_bytes = 300 * 4 * 4  # four classes in single precision
    monkeypatch.setattr(search, "KEPT_OOF_MEMORY", 2.5 * oof_bytes)
    monkeypatch.setattr(search, "MIN_KEEP_MODELS", 2)
    run = four_class_search("accuracy")  # reads every class of a row
    try:
        kept = [t for t in run.trials if t.oof is not None]
        assert len(kept) == 2
        assert all(t.oof.dtype == np.float32 and t.oof.nbytes == oof_bytes for t in kept)
    finally:
        run.store.close()


def test_log_loss_candidates_hold_two_columns_and_the_store_the_whole_predictions(monkeypatch):
    monkeypatch.setattr(search, "KEPT_OOF_MEMORY", 2.5 * 300 * 4 * 4)
    run = four_class_search("log_loss")
    try:
        assert all(t.oof.shape == (300, 2) for t in run.trials)  # all kept: two columns are small
        whole = run.store.get_predictions(run.trials[1].models_path)
        assert whole.shape == (300, 4) and whole.dtype == np.float32
        np.testing.assert_allclose(run.trials[1].oof, METRICS["log_loss"].compact(run.folds.y_val, whole))
    finally:
        run.store.close()


def test_regression_keeps_its_out_of_fold_predictions_in_double_precision():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    y = 1e9 + X.a.to_numpy()  # single precision would round every value to a multiple of 64
    folds = search.Folds(X, y, search.make_splits(y, "regression", 0), {c: "numeric" for c in X}, "regression", 0)
    run = search.Search(folds, METRICS["r2"], Context("regression", 0, 0, 1))
    try:
        trial = run.evaluate(Candidate("linear", "linear", {}))
        assert trial.oof.dtype == np.float64
        assert trial.score > 0.9
    finally:
        run.store.close()


@pytest.mark.parametrize("n_rows, n_columns, n_splits", [
    (600, 10, 8), (600, 10_000, 3), (3000, 20, 5), (3000, 2000, 3), (30_000, 100, 3), (100_000, 50, 1),
])
def test_folds_are_fewer_on_wide_data(n_rows, n_columns, n_splits):
    y = np.arange(n_rows) % 2
    assert len(search.make_splits(y, "binary", 0, n_columns=n_columns)) == n_splits


@pytest.mark.parametrize("n_rows, n_columns, max_bin, cached", [(400, 2000, 50, 80), (4000, 2000, 256, 15), (400, 100, None, None)])
def test_xgboost_bounds_its_histograms_on_wide_data_only(n_rows, n_columns, max_bin, cached):
    from automl.engine import models

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n_rows, n_columns)), rng.integers(0, 2, n_rows)
    ctx = Context("binary", 2, 0, 1)
    model = models.fit_model(Candidate("xgboost", "xgboost", {"n_estimators": 2}), ctx, X, y, None, None)
    params = model.parts[0].get_params()
    assert (params.get("max_bin"), params.get("max_cached_hist_node")) == (max_bin, cached)


@pytest.mark.parametrize("frame, target", [("multiclass_df", "segment"), ("regression_df", "price")])
def test_predictions_come_by_blocks_of_rows_and_equal_the_whole(monkeypatch, request, frame, target):
    df = request.getfixturevalue(frame)
    model = AutoML(time_budget=None, max_trials=2, seed=0).fit(df, target=target)
    X = df.drop(columns=target)
    whole = model.predict_proba(X) if target == "segment" else model.predict(X)
    labels = model.predict(X)
    sizes = []
    real = core.AutoML._ensemble_predict
    monkeypatch.setattr(core.AutoML, "_ensemble_predict", lambda self, X: sizes.append(len(X)) or real(self, X))
    outputs = 3 if target == "segment" else 1  # classes, or one value
    monkeypatch.setattr(core, "PREDICT_BLOCK_CELLS", 70 * (model.n_features_in_ + outputs))
    blocked = model.predict_proba(X) if target == "segment" else model.predict(X)
    np.testing.assert_allclose(blocked, whole)
    np.testing.assert_array_equal(model.predict(X.to_numpy()), labels)
    assert max(sizes) <= 70 and sum(sizes) == 2 * len(X)


@pytest.mark.parametrize("n_classes, first", [(2, 10), (3, 10), (30, 1)])
def test_a_boosted_models_first_step_is_sized_by_its_trees_per_iteration(monkeypatch, n_classes, first):
    """One tree per class an iteration: with hundreds of classes, a first step
    of ten iterations ran tens of seconds past its share of the budget."""
    monkeypatch.setattr(models, "HGB_FIRST_ROW_TREES", 6000)  # 200 rows x 30 trees = 10 iterations
    steps = []
    real = models._grow
    monkeypatch.setattr(models, "_grow", lambda model, attribute, size, *a, **k: steps.append(size) or real(model, attribute, size, *a, **k))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), np.arange(200) % n_classes
    task = "binary" if n_classes == 2 else "multiclass"
    models.fit_model(Candidate("h", "hist_gb", {"max_iter": 12}), Context(task, n_classes, 0, 2), X, y, None, None)
    assert steps == [first]


@pytest.mark.parametrize("params, l2", [({}, 1.0), ({"l2_regularization": 0.1}, 0.1)])
def test_boosting_over_many_classes_is_regularized_unless_told_otherwise(monkeypatch, params, l2):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 3)), np.arange(120) % 3
    ctx = Context("multiclass", 3, 0, 2)
    monkeypatch.setattr(models, "HGB_MANY_CLASSES", 2)
    assert models.fit_model(Candidate("h", "hist_gb", {"max_iter": 3, **params}), ctx, X, y, None, None).l2_regularization == l2
    monkeypatch.setattr(models, "HGB_MANY_CLASSES", 3)
    assert models.fit_model(Candidate("h", "hist_gb", {"max_iter": 3}), ctx, X, y, None, None).l2_regularization == 0.0
