"""Data checks: clear, specific errors, and guardrails returned as data."""

import numpy as np
import pandas as pd
import pytest

from automl import AutoML
from automl.engine.checks import detect_task
from automl.errors import DataError, ParameterError


def fast(**kw):
    return AutoML(time_budget=None, max_trials=1, **kw)


@pytest.mark.parametrize(
    "values, task",
    [
        (["a", "b"] * 10, "binary"),
        ([0, 1] * 10, "binary"),
        (list(range(5)) * 10, "multiclass"),
        (["x", "y", "z"] * 10, "multiclass"),
        (np.linspace(0, 1, 30), "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_task_is_detected_from_the_target(values, task):
    assert detect_task(pd.Series(values)) == task


def test_task_override_is_respected(multiclass_df):
    df = multiclass_df.assign(level=multiclass_df["segment"].map({"low": 0, "mid": 1, "high": 2}))
    model = fast(task="regression").fit(df.drop(columns="segment"), target="level")
    assert model.task_ == "regression"
    assert model.metric_ == "r2"


def test_task_that_does_not_fit_the_target_is_refused(multiclass_df):
    with pytest.raises(DataError) as error:
        fast(task="binary").fit(multiclass_df, target="segment")
    assert error.value.code == "task_mismatch"


def test_regression_on_text_target_is_refused(binary_df):
    with pytest.raises(DataError) as error:
        fast(task="regression").fit(binary_df, target="bought")
    assert error.value.code == "target_not_numeric"
    assert "yes" in error.value.message("en") or "no" in error.value.message("en")


def test_empty_data_is_refused():
    with pytest.raises(DataError) as error:
        fast().fit(pd.DataFrame({"a": [], "y": []}), target="y")
    assert error.value.code == "empty_data"


def test_missing_target_column_names_the_columns(binary_df):
    with pytest.raises(DataError) as error:
        fast().fit(binary_df, target="churn")
    assert error.value.code == "target_missing"
    assert "income" in error.value.message("en")


def test_constant_target_is_refused(binary_df):
    with pytest.raises(DataError) as error:
        fast().fit(binary_df.assign(bought="yes"), target="bought")
    assert error.value.code == "target_constant"


def test_target_without_values_is_refused(binary_df):
    with pytest.raises(DataError) as error:
        fast().fit(binary_df.assign(bought=np.nan), target="bought")
    assert error.value.code == "target_all_missing"


def test_class_with_a_single_row_is_refused(binary_df):
    df = binary_df.copy()
    df.loc[0, "bought"] = "maybe"
    with pytest.raises(DataError) as error:
        fast().fit(df, target="bought")
    assert error.value.code == "class_too_small"
    assert error.value.params["label"] == "maybe"


def test_column_copying_the_target_is_refused(binary_df):
    df = binary_df.assign(bought_flag=binary_df["bought"].map({"yes": 1, "no": 0}))
    with pytest.raises(DataError) as error:
        fast().fit(df, target="bought")
    assert error.value.code == "target_duplicated"
    assert error.value.params["column"] == "bought_flag"


def test_columns_sharing_a_name_are_refused_at_fit_and_at_predict(binary_df):
    X = binary_df.drop(columns="bought")
    twice = pd.concat([X, X[["income"]]], axis=1)
    with pytest.raises(DataError) as error:
        fast().fit(twice, binary_df["bought"])
    assert error.value.code == "duplicate_columns" and error.value.params["columns"] == "income"
    model = fast().fit(X, binary_df["bought"])
    with pytest.raises(DataError) as error:
        model.predict(twice)
    assert error.value.code == "duplicate_columns"
    assert model.predict(X.assign(other=X["income"])).shape == (len(X),)


def test_a_target_of_numbers_and_text_is_read_as_text_labels(binary_df):
    y = pd.Series([1 if b == "yes" else "no" for b in binary_df["bought"]], dtype=object)
    model = fast().fit(binary_df.drop(columns="bought"), y)
    assert list(model.classes_) == ["1", "no"]
    guard = next(g for g in model.guardrails_ if g["code"] == "guard_target_as_text")
    assert "1" in guard["params"]["example"] and "'no'" in guard["params"]["example"]


def test_a_target_of_python_ints_and_floats_stays_numeric(regression_df):
    y = pd.Series([int(v) if i % 2 else float(v) for i, v in enumerate(regression_df["price"].round())], dtype=object)
    model = fast().fit(regression_df.drop(columns="price"), y)
    assert model.task_ == "regression"
    assert not any(g["code"] == "guard_target_as_text" for g in model.guardrails_)


def test_cells_holding_lists_are_read_as_text(binary_df):
    rng = np.random.default_rng(0)
    df = binary_df.assign(tags=[[str(t)] * int(t % 2 + 1) for t in rng.integers(0, 4, len(binary_df))])
    model = fast().fit(df, target="bought")
    assert model.feature_kinds_["tags"] == "categorical"
    assert model.predict(df.head(5)).shape == (5,)


def test_y_of_another_length_is_refused(binary_df):
    with pytest.raises(DataError) as error:
        fast().fit(binary_df.drop(columns="bought"), binary_df["bought"].iloc[:10])
    assert error.value.code == "y_length_mismatch"


def test_y_and_target_together_are_refused(binary_df):
    with pytest.raises(ParameterError):
        fast().fit(binary_df, binary_df["bought"], target="bought")


def test_only_the_target_is_refused(binary_df):
    with pytest.raises(DataError) as error:
        fast().fit(binary_df[["bought"]], target="bought")
    assert error.value.code == "no_features"


def test_too_few_rows_are_refused():
    df = pd.DataFrame({"x": range(6), "y": [0, 1] * 3})
    with pytest.raises(DataError) as error:
        fast().fit(df, target="y")
    assert error.value.code == "too_few_rows"


def test_errors_speak_french_and_english(binary_df):
    with pytest.raises(DataError) as error:
        fast().fit(binary_df, target="churn")
    assert "n'existe pas" in error.value.message("fr")
    assert "is not in the data" in error.value.message("en")


def test_rows_without_target_are_dropped_with_a_guardrail(binary_df):
    df = binary_df.copy()
    df.loc[:9, "bought"] = np.nan
    model = fast().fit(df, target="bought")
    guard = next(g for g in model.guardrails_ if g["code"] == "guard_target_missing_rows")
    assert guard["params"]["count"] == 10


def test_rows_with_an_infinite_target_are_dropped_with_a_guardrail(regression_df):
    df = regression_df.copy()
    df.loc[:4, "price"] = np.inf
    df.loc[5:6, "price"] = -np.inf
    model = fast().fit(df, target="price")
    guard = next(g for g in model.guardrails_ if g["code"] == "guard_target_missing_rows")
    assert guard["params"]["count"] == 7 and np.isfinite(model.predict(df.head())).all()


def test_guardrails_are_returned_as_data(binary_df):
    rng = np.random.default_rng(0)
    df = binary_df.copy()
    n = len(df)
    df["customer_id"] = np.arange(1000, 1000 + n)
    df["code"] = [f"C{i:05d}" for i in rng.permutation(n)]
    df["zip"] = ["Z" + str(v) for v in rng.integers(0, 150, n)]
    df["constant"] = "same"
    df["bought"] = np.where(np.arange(n) % 9 == 0, "yes", "no")
    df["leak"] = (df["bought"] == "yes").astype(float) * 10 + rng.random(n)
    model = fast().fit(df, target="bought")
    by_code = {}
    for guard in model.guardrails_:
        by_code.setdefault(guard["code"], set()).add(guard["column"])
        assert set(guard) >= {"code", "severity", "column", "params", "message"}
    assert by_code["guard_missing_values"] == {"age"}
    assert by_code["guard_class_imbalance"] == {None}
    assert {"customer_id", "code"} <= by_code["guard_id_like"]
    assert by_code["guard_high_cardinality"] == {"zip"}
    assert by_code["guard_constant_column"] == {"constant"}
    assert by_code["guard_leakage"] == {"leak"}
    assert model.feature_kinds_["customer_id"] == "ignored"
    assert model.feature_kinds_["signup"] == "datetime"


@pytest.mark.parametrize("budget", [0, -1, 10**9, "60", True])
def test_bad_budget_is_refused_before_any_work(binary_df, budget):
    with pytest.raises(ParameterError) as error:
        AutoML(time_budget=budget).fit(binary_df, target="bought")
    assert error.value.code == "bad_budget"


@pytest.mark.parametrize("value", [0, -3, 2.5])
def test_bad_trial_limit_is_refused(binary_df, value):
    with pytest.raises(ParameterError):
        AutoML(time_budget=None, max_trials=value).fit(binary_df, target="bought")


def test_bad_task_and_metric_are_refused(binary_df):
    with pytest.raises(ParameterError) as error:
        fast(task="ranking").fit(binary_df, target="bought")
    assert error.value.code == "bad_task"
    with pytest.raises(ParameterError) as error:
        fast(metric="r2").fit(binary_df, target="bought")
    assert error.value.code == "bad_metric"
    assert "roc_auc" in error.value.message("en")
