import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from automl.datasets import make_churn, write_sample
from automl.tables import read_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def churn():
    return make_churn(2000, seed=0)


def test_columns_of_every_kind(churn):
    assert len(churn) == 2000
    assert churn["customer_id"].is_unique
    assert pd.api.types.is_datetime64_any_dtype(churn["signup_date"])
    for column in ("age", "monthly_charges", "total_charges", "support_calls"):
        assert pd.api.types.is_numeric_dtype(churn[column]), column
    assert churn["contract"].nunique() == 3
    assert churn["city"].nunique() > 50  # high cardinality
    subjects = churn["last_ticket_subject"].dropna()
    assert subjects.str.split().str.len().mean() >= 3  # free text, not a category
    assert subjects.nunique() > 0.3 * len(subjects)
    assert set(churn["churned"]) == {"yes", "no"}


def test_missing_values_where_real_data_has_them(churn):
    for column in ("age", "payment_method", "total_charges", "last_ticket_subject"):
        assert churn[column].isna().any(), column
    assert churn["customer_id"].notna().all() and churn["churned"].notna().all()


def test_positive_rate_near_a_quarter(churn):
    assert 0.2 < (churn["churned"] == "yes").mean() < 0.3


def test_signal_is_learnable_but_not_trivial(churn):
    X = pd.get_dummies(churn[["contract", "payment_method", "internet_service"]].fillna("?")).astype(float)
    X["support_calls"] = churn["support_calls"]
    X["monthly_charges"] = churn["monthly_charges"] / 100
    y = (churn["churned"] == "yes").to_numpy()
    proba = cross_val_predict(LogisticRegression(max_iter=1000), X, y, cv=5, method="predict_proba")[:, 1]
    assert 0.7 < roc_auc_score(y, proba) < 0.95


def test_same_seed_same_table_other_seed_other_table():
    assert make_churn(300, seed=3).equals(make_churn(300, seed=3))
    assert not make_churn(300, seed=3).equals(make_churn(300, seed=4))


def test_write_sample_round_trip(tmp_path):
    written = write_sample(tmp_path / "churn.parquet", n_rows=120, seed=1)
    back = read_table(tmp_path / "churn.parquet")
    pd.testing.assert_frame_equal(back, written, check_dtype=False)


def test_module_entry_point_writes_csv(tmp_path):
    out = tmp_path / "sample.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "automl.datasets", str(out), "--rows", "50", "--seed", "2"],
        check=False, capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    df = read_table(out)
    assert len(df) == 50
    assert df["customer_id"].tolist() == make_churn(50, seed=2)["customer_id"].tolist()
    assert np.allclose(df["monthly_charges"], make_churn(50, seed=2)["monthly_charges"])
