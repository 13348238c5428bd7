"""Fitting, predicting, fitted outputs, control and reproducibility."""

import os
import pickle
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from automl import AutoML
from automl.engine import cuda_status, search
from automl.errors import DataError, NotFittedError, ParameterError


@pytest.fixture(scope="module")
def binary_model(binary_df):
    return AutoML(time_budget=None, max_trials=4, seed=0).fit(binary_df, target="bought")


@pytest.fixture(scope="module")
def regression_model(regression_df):
    return AutoML(time_budget=None, max_trials=3, seed=0).fit(regression_df, target="price")


def test_binary_fit_gives_defaults_and_a_useful_model(binary_model, binary_df):
    m = binary_model
    assert (m.task_, m.metric_) == ("binary", "roc_auc")
    assert list(m.classes_) == ["no", "yes"]
    assert m.best_score_ > 0.75
    proba = m.predict_proba(binary_df)
    assert proba.shape == (len(binary_df), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(m.predict(binary_df)) <= {"no", "yes"}
    assert (m.predict(binary_df) == binary_df["bought"]).mean() > 0.7


def test_multiclass_defaults_to_log_loss(multiclass_df):
    m = AutoML(time_budget=None, max_trials=2).fit(multiclass_df, target="segment")
    assert (m.task_, m.metric_) == ("multiclass", "log_loss")
    assert m.predict_proba(multiclass_df).shape == (len(multiclass_df), 3)
    assert m.validation_scores_["accuracy"] > 0.8


def test_regression_defaults_to_r2(regression_model, regression_df):
    assert (regression_model.task_, regression_model.metric_) == ("regression", "r2")
    assert regression_model.best_score_ > 0.8
    prediction = regression_model.predict(regression_df)
    assert prediction.dtype.kind == "f"
    with pytest.raises(ParameterError) as error:
        regression_model.predict_proba(regression_df)
    assert error.value.code == "no_proba"


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "f1", "log_loss"])
def test_classification_metrics_can_be_chosen(binary_df, metric):
    m = AutoML(time_budget=None, max_trials=1, metric=metric).fit(binary_df, target="bought")
    assert m.metric_ == metric
    assert m.leaderboard_.columns[3] == "score"


@pytest.mark.parametrize("metric", ["rmse", "mae"])
def test_regression_errors_rank_lowest_first(regression_df, metric):
    m = AutoML(time_budget=None, max_trials=2, metric=metric).fit(regression_df, target="price")
    scores = m.leaderboard_["score"].to_numpy()
    assert np.all(np.diff(scores) >= 0)


def test_fit_with_x_and_y(binary_df):
    X, y = binary_df.drop(columns="bought"), binary_df["bought"]
    m = AutoML(time_budget=None, max_trials=1).fit(X, y)
    assert m.target_ == "bought"
    assert len(m.predict(X)) == len(X)


def test_leaderboard_is_best_first_with_times_and_params(binary_model):
    board = binary_model.leaderboard_
    assert list(board.columns) == ["rank", "model", "family", "score", "fit_time", "predict_time", "weight", "params"]
    assert np.all(np.diff(board["score"].to_numpy()) <= 0)
    assert board["rank"].tolist() == list(range(1, len(board) + 1))
    assert "baseline" in set(board["model"])
    assert (board["fit_time"] >= 0).all() and (board["predict_time"] >= 0).all()
    assert isinstance(board.loc[board["model"] == "xgboost_1", "params"].iloc[0], dict)


def test_ensemble_composition_is_reported(binary_model):
    weights = [member["weight"] for member in binary_model.ensemble_]
    assert pytest.approx(sum(weights)) == 1.0
    assert all(member["family"] != "baseline" for member in binary_model.ensemble_)
    in_board = set(binary_model.leaderboard_.query("weight > 0 and model != 'ensemble'")["model"])
    assert in_board == {member["model"] for member in binary_model.ensemble_}


def test_permutation_importance_finds_the_signal(binary_model):
    table = binary_model.feature_importance_
    assert set(table.columns) == {"feature", "importance", "std"}
    ranked = table["feature"].tolist()
    assert ranked.index("income") < ranked.index("noise")
    assert table.loc[table.feature == "income", "importance"].iloc[0] > 0.05


def test_plot_data_for_classification(binary_model):
    data = binary_model.plot_data_
    matrix = np.asarray(data["confusion_matrix"]["matrix"])
    assert data["confusion_matrix"]["labels"] == ["no", "yes"]
    assert matrix.shape == (2, 2) and matrix.sum() == 400
    roc = data["roc"]["yes"]
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1


def test_plot_data_for_regression(regression_model):
    residuals = regression_model.plot_data_["residuals"]
    assert len(residuals["actual"]) == len(residuals["predicted"]) == 300
    np.testing.assert_allclose(
        np.subtract(residuals["actual"], residuals["predicted"]), residuals["residual"]
    )


def test_predict_handles_unseen_categories_order_and_extra_columns(binary_model, binary_df):
    X = binary_df.drop(columns="bought").head(20)
    shuffled = X[X.columns[::-1]].assign(extra=1)
    np.testing.assert_allclose(binary_model.predict_proba(shuffled), binary_model.predict_proba(X))
    unseen = X.assign(city="marseille", income=X["income"].astype(str))
    assert np.isfinite(binary_model.predict_proba(unseen)).all()
    garbled = X.assign(income="n/a")  # unparsable numbers become missing
    assert np.isfinite(binary_model.predict_proba(garbled)).all()


def test_infinite_values_count_as_missing_at_fit_and_predict(binary_df):
    df = binary_df.copy()
    df.loc[::7, "income"] = np.inf
    df.loc[::11, "noise"] = -np.inf
    model = AutoML(time_budget=None, max_trials=2).fit(df, target="bought")
    X = df.drop(columns="bought").head(30)
    np.testing.assert_allclose(model.predict_proba(X), model.predict_proba(X.replace([np.inf, -np.inf], np.nan)))


def test_predict_without_a_trained_column_is_a_clear_error(binary_model, binary_df):
    with pytest.raises(DataError) as error:
        binary_model.predict(binary_df.drop(columns=["income", "city"]))
    assert error.value.code == "missing_columns"
    assert "income" in error.value.message("en") and "city" in error.value.message("en")


def test_text_columns_are_used(binary_df):
    rng = np.random.default_rng(0)
    words = {"yes": "great service fast delivery", "no": "late parcel broken item"}
    df = binary_df.assign(review=[words[b] + " " + str(rng.integers(1000)) for b in binary_df["bought"]])
    m = AutoML(time_budget=None, max_trials=2).fit(df.drop(columns=["income", "city"]), target="bought")
    assert m.feature_kinds_["review"] == "text"
    assert m.best_score_ > 0.95


def test_unfitted_model_says_so(binary_df):
    with pytest.raises(NotFittedError) as error:
        AutoML().predict(binary_df)
    assert error.value.code == "not_fitted"


def test_estimator_api(binary_df):
    model = AutoML(time_budget=30, seed=3)
    assert clone(model).get_params() == model.get_params()
    assert model.get_params()["time_budget"] == 30


def test_events_carry_progress_for_an_eta(binary_df):
    events = []
    AutoML(time_budget=None, max_trials=3, callback=events.append).fit(binary_df, target="bought")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "ensemble" in kinds
    trials = [e for e in events if e["event"] == "trial"]
    assert [e["n_trials"] for e in trials] == list(range(1, len(trials) + 1))
    assert len(trials) == 4  # the baseline plus max_trials
    elapsed = [e["elapsed"] for e in events]
    assert elapsed == sorted(elapsed)
    assert all({"model", "score", "best_score", "best_model", "remaining"} <= set(e) for e in trials)


def test_time_budget_is_reported_in_events(binary_df):
    events = []
    AutoML(time_budget=4, callback=events.append).fit(binary_df, target="bought")
    trials = [e for e in events if e["event"] == "trial"]
    assert all(0 <= e["remaining"] <= 4 for e in trials)
    last = trials[-1]
    assert last["remaining"] == pytest.approx(max(0.0, 4 - last["elapsed"]), abs=1e-6)


def test_fit_stops_on_its_budget_with_a_model(binary_df):
    big = pd.concat([binary_df] * 10, ignore_index=True)
    started = time.monotonic()
    model = AutoML(time_budget=3).fit(big, target="bought")
    # Loose bound: the precise +10 % target is measured by benchmarks/, not here.
    assert time.monotonic() - started < 3 * 2
    assert model.stopped_by_ == "budget"
    assert model.best_model_ != "baseline"


def test_cancel_from_another_thread_keeps_the_best_model(binary_df):
    first_trial = threading.Event()
    events = []

    def on_event(event):
        events.append(event)
        if event["event"] == "trial" and event["model"] != "baseline":
            first_trial.set()

    model = AutoML(time_budget=600, callback=on_event)
    worker = threading.Thread(target=model.fit, args=(binary_df,), kwargs={"target": "bought"})
    worker.start()
    assert first_trial.wait(timeout=120)
    model.cancel()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert model.stopped_by_ == "cancelled"
    assert events[-2]["event"] == "cancelled" and events[-1]["event"] == "done"
    assert len(model.predict(binary_df)) == len(binary_df)


def test_same_seed_and_trial_limit_give_identical_results(binary_df):
    fits = [AutoML(time_budget=None, max_trials=5, seed=7).fit(binary_df, target="bought") for _ in range(2)]
    timing = ["fit_time", "predict_time"]
    pd.testing.assert_frame_equal(fits[0].leaderboard_.drop(columns=timing), fits[1].leaderboard_.drop(columns=timing))
    np.testing.assert_array_equal(fits[0].predict_proba(binary_df), fits[1].predict_proba(binary_df))
    other = AutoML(time_budget=None, max_trials=5, seed=8).fit(binary_df, target="bought")
    assert not np.array_equal(other.predict_proba(binary_df), fits[0].predict_proba(binary_df))


def test_device_cuda_without_gpu_is_a_clear_error(binary_df):
    if cuda_status()[0]:
        pytest.skip("a GPU is present")
    with pytest.raises(ParameterError) as error:
        AutoML(time_budget=None, max_trials=1, device="cuda").fit(binary_df, target="bought")
    assert error.value.code == "cuda_unavailable"


def test_device_auto_picks_what_is_there(binary_model):
    assert binary_model.device_ == ("cuda" if cuda_status()[0] else "cpu")


def test_unknown_device_is_refused(binary_df):
    with pytest.raises(ParameterError) as error:
        AutoML(device="tpu").fit(binary_df, target="bought")
    assert error.value.code == "bad_device"


def _xgboost_devices(monkeypatch) -> list:
    """The device each xgboost fit is asked for: what the engine sends xgboost."""
    import xgboost

    devices = []

    def recording(fit):
        def recording_fit(self, *args, **kwargs):
            devices.append(self.get_params()["device"])
            return fit(self, *args, **kwargs)
        return recording_fit

    for cls in (xgboost.XGBClassifier, xgboost.XGBRegressor):
        monkeypatch.setattr(cls, "fit", recording(cls.fit))  # each class' own fit: the classifier's encodes labels
    return devices


def _predict_without_warnings(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a booster left on CUDA warns at each prediction on a host without one
        return model.predict_proba(X)


def test_device_cuda_sends_every_xgboost_fit_to_the_gpu(monkeypatch, binary_df, tmp_path):
    """The GPU path's contract, where no GPU is: with CUDA reported present, each
    xgboost fit asks for it (the CPU build of xgboost falls back to the CPU)."""
    from automl.engine import core

    monkeypatch.setattr(core, "cuda_status", lambda: (True, ""))
    devices = _xgboost_devices(monkeypatch)
    model = AutoML(time_budget=None, max_trials=4, device="cuda").fit(binary_df, target="bought")
    assert model.device_ == "cuda"
    assert devices and set(devices) == {"cuda"}
    model.save(tmp_path / "gpu.automl")
    _predict_without_warnings(AutoML.load(tmp_path / "gpu.automl"), binary_df)


@pytest.mark.parametrize("fold", [True, False], ids=["fold model", "refit"])
def test_an_xgboost_model_trained_for_cuda_is_kept_for_the_cpu(fold):
    """The hosts that serve a model (the hub, the dashboards) have no GPU: a
    kept xgboost model predicts on the CPU wherever it was trained."""
    from automl.engine import models

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    ctx = models.Context("binary", 2, 0, 1, device="cuda")
    val = (X[200:], y[200:]) if fold else (None, None)
    trained = models.fit_model(models.Candidate("x", "xgboost", {"n_estimators": 30}), ctx, X[:200], y[:200], *val)
    kept = pickle.loads(pickle.dumps(trained))  # how the search stores a fold model, and save a final one
    assert kept.parts and {part.get_params()["device"] for part in kept.parts} == {"cpu"}
    np.testing.assert_allclose(_predict_without_warnings(kept, X), trained.predict_proba(X), rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_status()[0], reason="no CUDA GPU here")
def test_xgboost_trains_on_the_gpu(monkeypatch, binary_df):
    devices = _xgboost_devices(monkeypatch)
    model = AutoML(time_budget=None, max_trials=4, device="cuda").fit(binary_df, target="bought")
    assert model.device_ == "cuda"
    assert devices and set(devices) == {"cuda"}
    _predict_without_warnings(model, binary_df)


def test_large_data_is_subsampled_for_the_search(monkeypatch, binary_df):
    from automl.engine import core

    monkeypatch.setattr(core, "MIN_SAMPLE_ROWS", 200)
    monkeypatch.setattr(core, "SAMPLE_ROWS_PER_SECOND", 10)
    model = AutoML(time_budget=5, max_trials=1).fit(binary_df, target="bought")
    guard = next(g for g in model.guardrails_ if g["code"] == "guard_subsampled")
    assert guard["params"] == {"rows": 400, "sample": 200}
    assert model.plot_data_["confusion_matrix"]["matrix"] and sum(map(sum, model.plot_data_["confusion_matrix"]["matrix"])) == 200


def test_a_rare_class_keeps_its_rows_in_the_sample(monkeypatch, binary_df):
    from automl.engine import core

    monkeypatch.setattr(core, "MIN_SAMPLE_ROWS", 100)
    monkeypatch.setattr(core, "SAMPLE_ROWS_PER_SECOND", 1)
    df = binary_df.copy()
    df.loc[:2, "bought"] = "maybe"  # 3 rows of 400: a stratified sample of 100 rounds them to 1
    model = AutoML(time_budget=100, max_trials=1).fit(df, target="bought")
    guard = next(g for g in model.guardrails_ if g["code"] == "guard_subsampled")
    assert guard["params"] == {"rows": 400, "sample": 102}
    labels = model.plot_data_["confusion_matrix"]["labels"]
    assert sum(model.plot_data_["confusion_matrix"]["matrix"][labels.index("maybe")]) == 3


def test_a_class_with_fewer_rows_than_folds_keeps_every_fold_and_trains_in_each():
    y = np.array([0] * 150 + [1] * 148 + [2] * 2)
    splits = search.make_splits(y, "multiclass", 0)
    assert len(splits) == 8
    assert all(set(y[train]) == {0, 1, 2} for train, _ in splits)


def test_a_failing_model_family_does_not_fail_the_fit(monkeypatch, binary_df):
    from dataclasses import replace

    from automl.engine import models

    def broken(*args):
        raise RuntimeError("simulated crash")

    monkeypatch.setitem(models.FAMILIES, "xgboost", replace(models.FAMILIES["xgboost"], fit=broken))
    model = AutoML(time_budget=None, max_trials=4).fit(binary_df, target="bought")
    assert {"model": "xgboost_1", "error": "RuntimeError: simulated crash"} in model.failures_
    assert "xgboost_1" not in set(model.leaderboard_["model"])
    assert model.best_score_ > 0.75


def test_fold_models_on_disk_are_cleaned_up(binary_df, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    AutoML(time_budget=None, max_trials=2).fit(binary_df, target="bought")

    def crash(event):
        if event["event"] == "trial":
            raise RuntimeError("the caller's callback broke")

    with pytest.raises(RuntimeError):
        AutoML(time_budget=None, max_trials=2, callback=crash).fit(binary_df, target="bought")
    assert list(tmp_path.iterdir()) == []


def test_temperature_scaling_repairs_overconfident_probabilities():
    from automl.engine.core import fit_temperature, scale_temperature
    from automl.engine.metrics import METRICS

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3))
    logits[np.arange(600), y] += 1.0
    honest = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    overconfident = scale_temperature(honest, 0.3)
    temperature = fit_temperature(overconfident, y)
    assert 2.5 < temperature < 4.5  # about 1 / 0.3: sharpened probabilities are softened back
    repaired = scale_temperature(overconfident, temperature)
    log_loss = METRICS["log_loss"]
    assert log_loss.score(y, repaired) < log_loss.score(y, overconfident)
    np.testing.assert_array_equal(repaired.argmax(axis=1), overconfident.argmax(axis=1))


def test_refit_members_predict_once_each_and_agree_with_the_bag(binary_df):
    """One model per member on all rows replaces the bag of fold models: the file
    is smaller, and predictions stay close to the bag's."""
    refit = AutoML(time_budget=None, max_trials=3, seed=0, refit=True).fit(binary_df, target="bought")
    bag = AutoML(time_budget=None, max_trials=3, seed=0, refit=False).fit(binary_df, target="bought")
    assert set(refit._full) == set(range(len(refit._members)))
    assert all(models is None for _, models, _ in refit._members) and refit._preprocessors == []
    assert not bag._full and all(models for _, models, _ in bag._members)
    assert refit.leaderboard_["score"].tolist() == bag.leaderboard_["score"].tolist()
    X = binary_df.drop(columns="bought")
    p_refit, p_bag = refit.predict_proba(X)[:, 1], bag.predict_proba(X)[:, 1]
    assert np.allclose(refit.predict_proba(X).sum(axis=1), 1.0)
    assert np.corrcoef(p_refit, p_bag)[0, 1] > 0.9
    assert len(pickle.dumps(refit)) < len(pickle.dumps(bag))


def test_members_without_time_to_refit_keep_their_bag(monkeypatch, binary_df):
    from automl.engine import core

    monkeypatch.setattr(core, "REFIT_SHARE", 0.0)  # the refit deadline has passed before it starts
    model = AutoML(time_budget=5, max_trials=2, seed=0).fit(binary_df, target="bought")
    assert not model._full and all(models for _, models, _ in model._members)
    assert model.predict(binary_df.drop(columns="bought")).shape == (len(binary_df),)


def test_auto_refit_keeps_the_bag_for_log_loss_on_small_data(multiclass_df):
    model = AutoML(time_budget=None, max_trials=2, seed=0).fit(multiclass_df, target="segment")
    assert model.metric_ == "log_loss" and not model._full


def test_refit_takes_auto_true_or_false(binary_df):
    with pytest.raises(ParameterError) as caught:
        AutoML(refit="yes").fit(binary_df, target="bought")
    assert caught.value.code == "bad_refit"


@pytest.mark.parametrize("flavour", ["tree", "linear"])
@pytest.mark.parametrize("n_rows", [1, 60])
def test_the_prediction_transform_matches_column_transformer(binary_df, flavour, n_rows):
    """Predictions skip ColumnTransformer.transform's own checks (transform_frame):
    the matrix must be the same, unseen and missing values included."""
    from scipy import sparse

    from automl.engine import checks
    from automl.engine.preprocessing import build_preprocessor, coerce, transform_frame

    rng = np.random.default_rng(0)
    df = binary_df.drop(columns="bought").assign(
        review=[f"word{rng.integers(30)} other{rng.integers(30)} {i}" for i in range(len(binary_df))],
        shop=[f"shop{rng.integers(120)}" for _ in range(len(binary_df))],
        customer_id=np.arange(len(binary_df)),
    )
    df.loc[::7, "income"] = np.nan
    df.loc[::11, "city"] = None
    kinds, _ = checks.infer_column_kinds(df)
    assert {"numeric", "categorical", "high_cardinality", "datetime", "text", "ignored"} <= set(kinds.values())
    X = coerce(df, kinds)
    y = (binary_df["bought"] == "yes").astype(int).to_numpy()
    pre = build_preprocessor(flavour, kinds, "binary", 0).fit(X, y)
    new = coerce(df.tail(n_rows).assign(city="marseille", shop="unknown shop").reset_index(drop=True), kinds)
    fast, slow = transform_frame(pre, new), pre.transform(new)
    assert sparse.issparse(fast) == sparse.issparse(slow)
    dense = lambda m: m.toarray() if sparse.issparse(m) else m  # noqa: E731
    np.testing.assert_array_equal(dense(fast), dense(slow))


def test_tuning_ends_when_no_family_can_finish_in_the_time_left(monkeypatch):
    """A trial cut before its last fold is thrown away: the search ends instead
    of starting one that its family's earlier fits say cannot finish."""
    from automl.engine import metrics, search
    from automl.engine.models import Candidate, Context

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    y = (X.a > 0).to_numpy().astype(int)
    folds = search.Folds(X, y, search.make_splits(y, "binary", 0), {c: "numeric" for c in X}, "binary", 0)
    run = search.Search(folds, metrics.METRICS["roc_auc"], Context("binary", 2, 0, 1),
                        deadline=time.monotonic() + 30)
    run.evaluate(Candidate("xgboost_1", "xgboost", {"n_estimators": 5}))
    run.trials[0].fit_time = 60.0  # as if it had taken twice the time left
    started = []
    monkeypatch.setattr(run, "evaluate", lambda candidate, share=1.0: started.append(candidate))
    run._optimize()
    assert started == [] and run.stopped_by == "budget"
    run.trials[0].fit_time = 1.0  # it can finish: tuning goes on until the clock or the trial limit
    run.max_trials, run.n_tried = 2, 0
    run._optimize()
    assert [c.family for c in started] == ["xgboost", "xgboost"]


def test_the_best_of_each_family_stays_an_ensemble_candidate(monkeypatch):
    """Where one family's trials outrank all others, the best of each other
    family stays as well, as far as the predictions' memory allows: the blend
    wants different models."""
    from automl.engine import metrics
    from automl.engine.models import Candidate, Context

    monkeypatch.setattr(search, "KEEP_MODELS", 4)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(240, 2)), columns=["a", "b"])
    y = ((X.a > 0) ^ (X.b > 0)).to_numpy().astype(int)  # no line separates the classes
    folds = search.Folds(X, y, search.make_splits(y, "binary", 0), {c: "numeric" for c in X}, "binary", 0)
    run = search.Search(folds, metrics.METRICS["roc_auc"], Context("binary", 2, 0, 1))
    for depth in (2, 3, 4, 5, 6):
        run.evaluate(Candidate(f"xgboost_{depth}", "xgboost", {"n_estimators": 30, "max_depth": depth}))
    run.evaluate(Candidate("linear", "linear", {}))
    try:
        ranked = sorted(run.trials, key=lambda t: -t.gain)
        assert ranked[-1].name == "linear"  # last of six: by rank alone it would go
        kept = [t.name for t in ranked if t.models_path is not None and t.oof is not None]
        assert kept == [t.name for t in ranked[:4]] + ["linear"]
        assert ranked[4].models_path is None and ranked[4].oof is None
        assert len(os.listdir(run.store.directory)) == 5
        monkeypatch.setattr(search, "KEPT_OOF_MEMORY", 4 * ranked[0].oof.nbytes)  # room for four, no more
        run._keep_best_models()
        assert [t.name for t in ranked if t.models_path is not None] == [t.name for t in ranked[:4]]
    finally:
        run.store.close()
