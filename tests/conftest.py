"""Shared fixtures: small, deterministic tables that exercise every column kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _signal_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n).round(1)
    age = rng.integers(18, 80, n).astype(float)
    age[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["paris", "lyon", "lille", "nice"], n)
    signup = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    noise = rng.normal(size=n)
    return pd.DataFrame({"income": income, "age": age, "city": city, "signup": signup, "noise": noise})


@pytest.fixture(scope="session")
def binary_df() -> pd.DataFrame:
    df = _signal_frame(400, 0)
    rng = np.random.default_rng(1)
    logit = 0.12 * (df["income"] - 50) + (df["city"] == "lyon") * 1.5 - 0.5
    df["bought"] = np.where(rng.random(len(df)) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return df


@pytest.fixture(scope="session")
def multiclass_df() -> pd.DataFrame:
    df = _signal_frame(450, 2)
    df["segment"] = np.select([df["income"] < 40, df["income"] < 60], ["low", "mid"], "high")
    return df


@pytest.fixture(scope="session")
def regression_df() -> pd.DataFrame:
    df = _signal_frame(300, 3)
    rng = np.random.default_rng(4)
    df["price"] = 3 * df["income"] + (df["city"] == "nice") * 40 + rng.normal(0, 5, len(df))
    return df
