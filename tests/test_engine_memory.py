"""What keeps the engine's peak memory down: forests sized by the bytes their
trees take, refit forests sharing one budget, the bags never loaded whole once
the search is over, and no configuration fitted twice."""

import numpy as np
import pandas as pd
import pytest

from automl import AutoML
from automl.engine import core, models, search
from automl.engine.models import Candidate, Context


def noisy(n, width, seed=0):
    """Labels unrelated to the inputs: fully grown trees, as big as they get."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, width)), columns=[f"x{i}" for i in range(width)])
    return X, pd.Series(rng.integers(0, 2, n), name="y")


def only_forests(monkeypatch):
    monkeypatch.setattr(search, "portfolio", lambda task, n_rows: [
        Candidate("extra_trees", "extra_trees", {}), Candidate("random_forest", "random_forest", {})])


def test_a_forest_stops_growing_at_its_memory_share(monkeypatch):
    monkeypatch.setattr(models, "FOLD_FOREST_MEMORY", 30e6)
    X, y = noisy(3000, 5)
    ctx = Context("binary", 2, 0, 1)
    forest = models.FAMILIES["extra_trees"].fit({"n_estimators": 400}, ctx, X.to_numpy(), y.to_numpy(), None, None)
    grown = len(forest.estimators_)
    assert 50 <= grown < 400  # more than the first step, fewer than asked
    assert models.tree_bytes([forest], ctx) * grown <= 1.1 * 30e6


@pytest.mark.parametrize("budget, expected", [(1.0, lambda bag: core.MIN_REFIT_TREES), (1e12, lambda bag: bag)])
def test_refit_forests_share_the_final_forest_memory(monkeypatch, budget, expected):
    only_forests(monkeypatch)
    monkeypatch.setattr(core, "FINAL_FOREST_MEMORY", budget)
    X, y = noisy(200, 4)
    m = AutoML(time_budget=None, max_trials=2, seed=0, refit=True).fit(X, y)
    assert m._full, "the forests were refit"
    bag_trees = 8 * models._forest_size(175, 8)  # 8 folds of 175 rows, none compacted at this size
    assert [len(forest.estimators_) for forest in m._full.values()] == [expected(bag_trees)] * len(m._full)


def test_the_end_of_the_fit_never_loads_a_refit_members_bag(monkeypatch, binary_df):
    loads = []
    real_get = search.ModelStore.get

    def spy(path, fold=None):
        loads.append(fold)
        return real_get(path, fold)

    monkeypatch.setattr(search.ModelStore, "get", staticmethod(spy))
    m = AutoML(time_budget=None, max_trials=4, seed=0, refit=True).fit(binary_df, target="bought")
    assert len(m._full) == len(m._members)
    assert loads and None not in loads  # one fold's model at a time, for the importance only
    assert m.feature_importance_["feature"].iloc[0] in ("income", "city")


def test_the_search_never_fits_one_configuration_twice(monkeypatch):
    """Two columns: every max_features share gives one or two columns, so the
    optimizer proposes the same forests again and again."""
    only_forests(monkeypatch)
    X, y = noisy(300, 2)
    y = pd.Series(np.where(X["x0"] + 0.3 * X["x1"] > 0, "a", "b"), name="y")
    m = AutoML(time_budget=None, max_trials=30, seed=0).fit(X, y)
    tuned = m.leaderboard_[m.leaderboard_["model"].str.contains("_tuned_")]
    keys = [(r.family, max(1, int(r.params["max_features"] * 2)), r.params["min_samples_leaf"])
            for r in tuned.itertuples()]
    assert len(keys) == len(set(keys))
    assert len(tuned) < 28  # the repeats were not fitted, yet counted as tried: the fit ends
