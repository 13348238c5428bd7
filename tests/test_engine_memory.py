"""What keeps the engine's peak memory down: forests sized by the bytes their
trees take, fold forests that predict while they grow and hold only the trees
their bag keeps, final forests (refit or bagged) sharing one budget by weight,
the bags never loaded whole once the search is over, no configuration fitted twice, xgboost's
trees never copied whole through a JSON document or a pickle (nor held
serialized all at once by the pickler's memo, nor sliced before they are
stored, and predicting in row blocks, since a booster keeps its last
predictions), HistGradientBoosting's trees packed into shared arrays, forests
packed into flat arrays (a refit one chunk by chunk), the other bags keeping
the folds their weight's share holds, and the linear flavour's one-hot columns
kept sparse (k-NN alone takes a dense copy)."""

import copy
import math
import os
import pickle
import time
import tracemalloc
import weakref

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from scipy import sparse as scipy_sparse
from sklearn.metrics import roc_auc_score

from automl import AutoML
from automl.engine import core, malloc, models, persistence, search
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
    grown = forest.n_trees
    assert 50 <= grown < 400  # more than the first step, fewer than asked
    assert models.tree_bytes([forest], ctx) * grown <= 1.1 * 30e6


def stream_forest(monkeypatch, kind, task, kept_memory):
    """A fold forest of 120 trees, with every chunk it predicts with recorded."""
    monkeypatch.setattr(models, "KEPT_FOREST_MEMORY", kept_memory)
    X, y = noisy(600, 4)
    X, y = X.to_numpy(), y.to_numpy().astype(float if task == "regression" else int)
    ctx = Context(task, 0 if task == "regression" else 2, 0, 1, n_folds=10)
    grown, alive, chunks = [], [], []
    predict_matrix = models.predict_matrix

    def spy(model, X, ctx):
        grown.extend(weakref.ref(tree) for tree in model.estimators_)
        alive.append(sum(tree() is not None for tree in grown))
        chunks.append((len(model.estimators_), predict_matrix(model, X, ctx)))
        return chunks[-1][1]

    monkeypatch.setattr(models, "predict_matrix", spy)
    model, prediction, seconds = models.FAMILIES[kind].fit_fold({"n_estimators": 120}, ctx, X[:500], y[:500], X[500:], y[500:])
    monkeypatch.setattr(models, "predict_matrix", predict_matrix)
    return model, prediction, seconds, len(grown), max(alive), chunks, X[500:], ctx


@pytest.mark.parametrize("kind, task", [("extra_trees", "regression"), ("random_forest", "binary")])
def test_a_fold_forest_predicts_with_every_tree_it_grows_but_holds_only_what_its_bag_keeps(monkeypatch, kind, task):
    """Growing all the trees to keep a few held them all at the peak of the fit;
    so did a floor of 30 kept trees a fold, however large the trees."""
    model, prediction, seconds, grown, most_alive, chunks, X_val, ctx = stream_forest(monkeypatch, kind, task, 2e6)
    keep = model.n_trees
    assert grown == 120 and 1 <= keep < 15
    assert keep * models.tree_bytes([model], ctx) * 10 <= 1.2 * 2e6  # its fold's share of KEPT_FOREST_MEMORY
    assert most_alive <= max(15, keep + 4) < grown  # the first chunk (15 trees), then the kept ones and 4 more
    expected = sum(size * chunk for size, chunk in chunks) / grown
    np.testing.assert_allclose(prediction, expected)
    assert not np.allclose(prediction, models.predict_matrix(model, X_val, ctx))  # not the kept trees' alone
    assert seconds > 0


def test_a_fold_forest_that_keeps_all_its_trees_predicts_as_one_forest(monkeypatch):
    model, prediction, _, grown, _, chunks, X_val, ctx = stream_forest(monkeypatch, "extra_trees", "binary", 1e12)
    assert grown == model.n_trees == 120 and len(chunks) > 1
    np.testing.assert_allclose(prediction, models.predict_matrix(model, X_val, ctx), rtol=1e-6)  # packed: float32 leaves


def test_a_fold_forest_stops_growing_at_the_deadline_with_the_trees_it_has():
    X, y = noisy(600, 4)
    X, y = X.to_numpy(), y.to_numpy()
    ctx = Context("binary", 2, 0, 1, should_stop=lambda: True, n_folds=5)
    model, prediction, _ = models.FAMILIES["extra_trees"].fit_fold({"n_estimators": 400}, ctx, X[:500], y[:500], X[500:], y[500:])
    assert model.n_trees == 50  # the first chunk, an eighth
    assert prediction.shape == (100, 2) and np.isfinite(prediction).all()


def test_under_a_deadline_a_fold_forest_grows_one_tree_per_thread_before_it_knows_their_cost():
    X, y = noisy(600, 4)
    X, y = X.to_numpy(), y.to_numpy()
    ctx = Context("binary", 2, 0, 2, should_stop=lambda: True, n_folds=5, deadline=time.monotonic() + 60)
    model, prediction, _ = models.FAMILIES["extra_trees"].fit_fold({"n_estimators": 400}, ctx, X[:500], y[:500], X[500:], y[500:])
    assert model.n_trees == 2
    assert prediction.shape == (100, 2) and np.isfinite(prediction).all()


def linear_and_forest(monkeypatch, final_forest_memory):
    """A portfolio of a linear model and extra trees, on data where both earn a
    weight in the ensemble."""
    monkeypatch.setattr(search, "portfolio", lambda task, n_rows: [
        Candidate("linear", "linear", {}), Candidate("extra_trees", "extra_trees", {})])
    monkeypatch.setattr(core, "FINAL_FOREST_MEMORY", final_forest_memory)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=[f"x{i}" for i in range(4)])
    return X, pd.Series((X.x0 + X.x1 + X.x2 + np.sin(3 * X.x3) + rng.normal(size=300) > 0).astype(int), name="y")


@pytest.mark.parametrize("budget", [1.0, 4e6, 1e12])
def test_a_refit_forest_gets_its_weights_share_of_the_final_forest_memory(monkeypatch, budget):
    X, y = linear_and_forest(monkeypatch, budget)
    m = AutoML(time_budget=None, max_trials=2, seed=0, refit=True).fit(X, y)
    (forest_index, (_, _, weight)), = [(i, member) for i, member in enumerate(m._members) if member[0].family == "extra_trees"]
    assert 0 < weight < 1, "the linear model shares the ensemble"
    trees = m._full[forest_index].n_trees
    bag_trees = 8 * models._forest_size(262, 8)  # 8 folds of 262 rows, all trees kept at this size
    if budget == 1.0:
        assert trees == math.ceil(core.FOREST_ALONE_TREES * weight**2) < core.FOREST_ALONE_TREES
    elif budget == 1e12:
        assert trees == bag_trees
    else:  # sized from the fold trees, which are a little smaller than the refit's
        forest_bytes = trees * models.tree_bytes([m._full[forest_index]], Context("binary", 2, 0, 1))
        assert 0.8 * weight * budget <= forest_bytes <= 1.2 * weight * budget


@pytest.mark.parametrize("budget", [1.0, 4e6, 1e12])
def test_a_bagged_forest_gets_its_weights_share_of_the_final_forest_memory(monkeypatch, budget):
    X, y = linear_and_forest(monkeypatch, budget)
    m = AutoML(time_budget=None, max_trials=2, seed=0, refit=False).fit(X, y)
    (_, bag, weight), = [member for member in m._members if member[0].family == "extra_trees"]
    assert 0 < weight < 1, "the linear model shares the ensemble"
    per_fold = [forest.n_trees for forest in bag]
    assert len(bag) == 8
    if budget == 1.0:
        assert per_fold == [-(-math.ceil(core.FOREST_ALONE_TREES * weight**2) // 8)] * 8
    elif budget == 1e12:
        assert per_fold == [models._forest_size(262, 8)] * 8  # all the trees the search kept
    else:
        forest_bytes = sum(f.n_trees * models.tree_bytes([f], Context("binary", 2, 0, 1)) for f in bag)
        assert 0.8 * weight * budget <= forest_bytes <= 1.2 * weight * budget
    proba = m.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1) and roc_auc_score(y, proba[:, 1]) > 0.8


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


@pytest.mark.parametrize("validation", [True, False])
def test_an_xgboost_fit_never_resets_its_booster(monkeypatch, validation):
    """xgboost.train ends with Booster.reset, a JSON round trip of the whole
    model; the fold model copies its trees out instead."""
    resets = []
    monkeypatch.setattr(xgb.Booster, "reset", lambda booster: resets.append(booster) or booster)
    X, y = noisy(400, 4)
    X, y = X.to_numpy(), y.to_numpy()
    ctx = Context("binary", 2, 0, 1)
    val = (X[300:], y[300:]) if validation else (None, None)
    model = models.FAMILIES["xgboost"].fit({"n_estimators": 80}, ctx, X[:300], y[:300], *val)
    assert resets == []
    kept = pickle.loads(pickle.dumps(model)) if validation else model  # a fold model is kept once stored
    assert all(type(part.get_booster()) is xgb.Booster for part in kept.parts)
    assert model.predict_proba(X).shape == kept.predict_proba(X).shape == (400, 2)


def fit_xgboost(task, slice_bytes, monkeypatch, validation=False):
    monkeypatch.setattr(models, "SLICE_BYTES", slice_bytes)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    X[:, 0] = rng.integers(0, 4, 400)  # a categorical column, split natively
    y = {"binary": X[:, 1] > 0, "multiclass": (X[:, 1] > 0) + 2 * (X[:, 2] > 0.5),
         "regression": 3 * X[:, 1] + X[:, 0] + rng.normal(size=400)}[task].astype(float)
    ctx = Context(task, {"binary": 2, "multiclass": 4, "regression": 0}[task], 0, 1,
                  categorical=np.array([True, False, False, False, False]))
    val = (X[300:], y[300:]) if validation else (None, None)
    model = models.FAMILIES["xgboost"].fit({"n_estimators": 150, "learning_rate": 0.1}, ctx, X[:300], y[:300], *val)
    return model, X, ctx


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_an_xgboost_model_is_kept_in_slices_that_predict_as_one(monkeypatch, task):
    """xgboost writes and reads a model through a JSON document of the whole
    model, several times its size: slices bound it."""
    whole, X, ctx = fit_xgboost(task, 1 << 30, monkeypatch)
    sliced, _, _ = fit_xgboost(task, 20_000, monkeypatch)
    assert len(whole.parts) == 1
    assert len(sliced.parts) >= 5 and sliced.n_rounds == whole.n_rounds == 150
    largest_round = max(len(p.get_booster()[i:i + 1].save_raw()) for p in sliced.parts
                        for i in range(p.get_booster().num_boosted_rounds()))
    assert all(len(p.get_booster().save_raw()) <= 20_000 + largest_round for p in sliced.parts)
    expected = models.predict_matrix(whole, X, ctx)
    np.testing.assert_allclose(models.predict_matrix(sliced, X, ctx), expected, rtol=1e-5, atol=1e-6)
    store = search.ModelStore()
    try:
        path = store.new()
        store.put(path, 0, sliced)
        loaded = store.get(path, 0)
        np.testing.assert_array_equal(models.predict_matrix(loaded, X, ctx), models.predict_matrix(sliced, X, ctx))
    finally:
        store.close()


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_sliced_model_predicts_in_blocks_that_bound_what_its_boosters_keep(monkeypatch, task):
    """A booster keeps its last predictions for as long as it lives: one batch's per part."""
    sliced, X, ctx = fit_xgboost(task, 20_000, monkeypatch)
    expected = models.predict_matrix(sliced, X, ctx)
    width = ctx.n_classes if task == "multiclass" else 1
    monkeypatch.setattr(models, "SLICE_OUTPUT_BYTES", 4 * width * 70)  # 70 rows a block
    seen = []
    for part in sliced.parts:
        booster = part.get_booster()
        real = booster.inplace_predict
        monkeypatch.setattr(booster, "inplace_predict", lambda data, *a, real=real, **k: seen.append(data.shape[0]) or real(data, *a, **k))
    np.testing.assert_allclose(models.predict_matrix(sliced, X, ctx), expected, rtol=1e-6)
    assert len(seen) == len(sliced.parts) * -(-len(X) // 70) and max(seen) == 70


def test_an_early_stopped_xgboost_model_keeps_its_best_rounds_in_slices(monkeypatch):
    trained, X, ctx = fit_xgboost("binary", 20_000, monkeypatch, validation=True)
    assert isinstance(trained, models.XGBTrained) and 1 < trained.n_rounds < 150
    assert trained.model.get_booster().num_boosted_rounds() > trained.n_rounds  # the patience rounds
    sliced = pickle.loads(pickle.dumps(trained))
    assert len(sliced.parts) > 1 and sliced.n_rounds == trained.n_rounds
    np.testing.assert_allclose(models.predict_matrix(sliced, X, ctx), models.predict_matrix(trained, X, ctx),
                               rtol=1e-5, atol=1e-6)


def test_a_fold_model_is_sliced_one_part_at_a_time_while_it_is_stored(monkeypatch, tmp_path):
    """Slicing at the end of training held the training booster and every
    slice at once: twice the trees."""
    slices, most_alive = [], []
    getitem = xgb.Booster.__getitem__

    def spy(booster, index):
        most_alive.append(sum(s() is not None for s in slices))
        part = getitem(booster, index)
        slices.append(weakref.ref(part))
        return part

    monkeypatch.setattr(xgb.Booster, "__getitem__", spy)
    trained, X, ctx = fit_xgboost("multiclass", 20_000, monkeypatch, validation=True)
    assert slices == []  # nothing sliced until it is stored
    store = search.ModelStore()
    try:
        path = store.new()
        store.put(path, 0, trained)
        monkeypatch.setattr(xgb.Booster, "__getitem__", getitem)
        loaded = store.get(path, 0)
    finally:
        store.close()
    assert len(loaded.parts) >= 5 and max(most_alive) <= 1
    np.testing.assert_allclose(models.predict_matrix(loaded, X, ctx), models.predict_matrix(trained, X, ctx),
                               rtol=1e-5, atol=1e-6)


def test_the_store_writes_a_sliced_model_one_slice_at_a_time(monkeypatch, tmp_path):
    """A pickler's memo keeps every object it wrote until the end: all the
    serialized slices at once."""
    sliced, X, ctx = fit_xgboost("multiclass", 20_000, monkeypatch)
    assert len(sliced.parts) >= 5
    peaks = {}
    for name, dump in (("memo", lambda m, h: pickle.dump(m, h, protocol=pickle.HIGHEST_PROTOCOL)),
                       ("without", persistence.dump_without_memo)):
        with open(tmp_path / name, "wb") as handle:
            tracemalloc.start()
            try:
                dump(sliced, handle)
                peaks[name] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert peaks["without"] < 0.5 * peaks["memo"]
    with open(tmp_path / "without", "rb") as handle:
        np.testing.assert_array_equal(models.predict_matrix(pickle.load(handle), X, ctx),
                                      models.predict_matrix(sliced, X, ctx))


def test_pickling_a_sliced_model_never_serializes_its_own_boosters(monkeypatch):
    """xgboost keeps what it serialized in a buffer of the booster, for as long
    as the booster lives: the parts are serialized from throwaway copies."""
    sliced, X, ctx = fit_xgboost("binary", 20_000, monkeypatch)
    serialized = []
    getstate = xgb.Booster.__getstate__
    monkeypatch.setattr(xgb.Booster, "__getstate__", lambda self: serialized.append(self) or getstate(self))
    loaded = pickle.loads(pickle.dumps(sliced))
    assert len(serialized) == len(sliced.parts) == len(loaded.parts)
    assert not {id(b) for b in serialized} & {id(part.get_booster()) for part in sliced.parts}
    np.testing.assert_array_equal(models.predict_matrix(loaded, X, ctx), models.predict_matrix(sliced, X, ctx))


def test_the_store_still_writes_an_object_with_a_cycle():
    cyclic = {"weights": [0.5, 0.5]}
    cyclic["itself"] = cyclic
    store = search.ModelStore()
    try:
        path = store.new()
        store.put(path, 0, cyclic)
        loaded = store.get(path, 0)
        assert loaded["itself"] is loaded and loaded["weights"] == [0.5, 0.5]
    finally:
        store.close()


def fit_hist_gb(task, validation=True, **params):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    X[:, 0] = rng.integers(0, 6, 400)  # a categorical column: its splits carry bitsets
    y = {"binary": X[:, 1] > 0, "multiclass": (X[:, 1] > 0) + 2 * (X[:, 0] > 2),
         "regression": 3 * X[:, 1] + X[:, 0] + rng.normal(size=400)}[task].astype(float)
    ctx = Context(task, {"binary": 2, "multiclass": 4, "regression": 0}[task], 0, 1,
                  categorical=np.array([True, False, False, False, False]))
    val = (X[300:], y[300:]) if validation else (None, None)
    model = models.FAMILIES["hist_gb"].fit({"max_iter": 60, **params}, ctx, X[:300], y[:300], *val)
    return model, X, ctx


def unpacked(model):
    """The same model with the trees as scikit-learn makes them: three arrays each."""
    model = copy.deepcopy(model)
    model._predictors = [[models.TreePredictor(t.nodes.copy(), t.binned_left_cat_bitsets.copy(),
                                               t.raw_left_cat_bitsets.copy()) for t in iteration]
                         for iteration in model._predictors]
    return model


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_hist_gb_model_keeps_its_trees_packed_and_predicts_the_same(task):
    model, X, ctx = fit_hist_gb(task)
    expected = models.predict_matrix(unpacked(model), X, ctx)
    for packed in (model, pickle.loads(pickle.dumps(model))):
        trees = [tree for iteration in packed._predictors for tree in iteration]
        assert isinstance(packed._predictors, models.PackedTrees) and packed.n_iter_ == model.n_iter_
        assert len({id(t.nodes.base) for t in trees}) == 1  # views of one array
        assert any(len(t.raw_left_cat_bitsets) for t in trees)  # categorical splits came through
        np.testing.assert_array_equal(models.predict_matrix(packed, X, ctx), expected)


def test_a_packed_hist_gb_model_loads_in_a_fraction_of_the_memory():
    """Many small trees, as boosting makes on small data. tracemalloc sees the
    objects and the arrays, not the allocator's slack: the resident gain is
    larger (glass's bag: 20 MB unpacked, 5.4 MB packed)."""
    model, X, ctx = fit_hist_gb("multiclass", validation=False, max_iter=200, max_leaf_nodes=4)
    loaded = {}
    for name, m in (("packed", model), ("unpacked", unpacked(model))):
        blob = pickle.dumps(m)
        tracemalloc.start()
        try:
            m = pickle.loads(blob)
            loaded[name] = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert model.n_iter_ == 200 and loaded["packed"] < 0.6 * loaded["unpacked"]


class FakeGlibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, parameter, value):
        self.calls.append(("mallopt", parameter, value))

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))


def test_a_fit_caps_glibcs_malloc_arenas_at_two(monkeypatch, binary_df):
    libc = FakeGlibc()
    monkeypatch.setattr(malloc, "_glibc", lambda: libc)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    AutoML(time_budget=None, max_trials=1, seed=0).fit(binary_df, target="bought")
    assert libc.calls[0] == ("mallopt", malloc.M_ARENA_MAX, 2)


def test_malloc_arena_max_set_by_the_operator_wins(monkeypatch, binary_df):
    libc = FakeGlibc()
    monkeypatch.setattr(malloc, "_glibc", lambda: libc)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    AutoML(time_budget=None, max_trials=1, seed=0).fit(binary_df, target="bought")
    assert not any(call[0] == "mallopt" for call in libc.calls)
    assert ("malloc_trim", 0) in libc.calls


def test_a_trial_out_of_the_ensemble_candidates_keeps_neither_models_nor_predictions(monkeypatch):
    from automl.engine import metrics

    monkeypatch.setattr(search, "KEEP_MODELS", 2)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(160, 3)), columns=["a", "b", "c"])
    y = (X.a + 0.5 * X.b > 0).to_numpy().astype(int)
    folds = search.Folds(X, y, search.make_splits(y, "binary", 0), {c: "numeric" for c in X}, "binary", 0)
    run = search.Search(folds, metrics.METRICS["roc_auc"], Context("binary", 2, 0, 1))
    # one family: the best of another family would stay (_keep_best_models)
    for candidate in [search.baseline(), Candidate("linear", "linear", {}),
                      Candidate("linear_2", "linear", {"C": 0.01}), Candidate("linear_3", "linear", {"C": 0.001})]:
        run.evaluate(candidate)
    try:
        ranked = sorted(run.trials, key=lambda t: -t.gain)
        assert all(t.oof is not None and os.path.isdir(t.models_path) for t in ranked[:2])
        assert all(t.oof is None and t.models_path is None for t in ranked[2:])
        assert len(os.listdir(run.store.directory)) == 2
    finally:
        run.store.close()


def test_an_xgboost_fold_stopped_by_the_clock_at_its_first_round_keeps_that_round():
    X, y = noisy(300, 4)
    X, y = X.to_numpy(), y.to_numpy()
    ctx = Context("binary", 2, 0, 2, should_stop=lambda: True)
    model, prediction, _ = models.fit_fold(Candidate("x", "xgboost", {}), ctx, X[:200], y[:200], X[200:], y[200:])
    assert model.n_rounds == 1
    assert prediction.shape == (100, 2) and np.isfinite(prediction).all()


def one_hot_frame(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.normal(size=n), "city": rng.choice([f"c{i}" for i in range(25)], n),
                      "kind": rng.choice(list("abcdef"), n)})
    return X, pd.Series((X["x"] > 0).astype(int), name="y")


def test_the_linear_flavour_keeps_its_one_hot_columns_sparse():
    from automl.engine.preprocessing import build_preprocessor

    X, y = one_hot_frame()
    kinds = {"x": "numeric", "city": "categorical", "kind": "categorical"}
    matrix = build_preprocessor("linear", kinds, "binary", 0).fit_transform(X, y)
    assert scipy_sparse.issparse(matrix) and matrix.shape[1] > 25
    assert matrix.nnz <= 4 * len(X)  # the number, its two categories, no zeros stored
    assert np.allclose(matrix[:, 1:].sum(axis=1), 2)  # one column per categorical set


def knn_on_one_hot(task):
    """k-NN fitted on 400 rows of a sparse one-hot matrix; the other 200 rows to predict."""
    X, y = one_hot_frame()
    matrix = scipy_sparse.csr_matrix(pd.get_dummies(X, dtype=float).to_numpy())
    ctx = Context(task, 2 if task == "binary" else 0, 0, 1)
    knn = models.FAMILIES["knn"].fit({"n_neighbors": 10}, ctx, matrix[:400], y[:400].to_numpy(), None, None)
    return knn, matrix, y, ctx


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_knn_searches_its_own_dense_copy_of_narrow_sparse_input(task):
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    knn, matrix, y, ctx = knn_on_one_hot(task)
    assert isinstance(knn._fit_X, np.ndarray)  # not scikit-learn's sparse brute-force path
    plain = (KNeighborsClassifier if task == "binary" else KNeighborsRegressor)(n_neighbors=10, weights="distance")
    plain.fit(matrix[:400].toarray(), y[:400])
    np.testing.assert_allclose(models.predict_matrix(knn, matrix[400:], ctx),
                               models.predict_matrix(plain, matrix[400:].toarray(), ctx))


def test_knn_leaves_wide_sparse_input_sparse(monkeypatch):
    """Free text's TF-IDF columns: thousands wide, a dense copy would cost more than the search."""
    monkeypatch.setattr(models, "KNN_DENSE_COLUMNS", 10)
    knn, matrix, _, ctx = knn_on_one_hot("binary")
    assert scipy_sparse.issparse(knn._fit_X)
    assert models.predict_matrix(knn, matrix[400:], ctx).shape == (200, 2)


def forest_on(kind, task, X, y, **params):
    cls = {("extra_trees", True): models.ExtraTreesClassifier, ("extra_trees", False): models.ExtraTreesRegressor,
           ("random_forest", True): models.RandomForestClassifier,
           ("random_forest", False): models.RandomForestRegressor}[kind, task != "regression"]
    return cls(n_estimators=20, random_state=0, **params).fit(X, y)


@pytest.mark.parametrize("kind, task", [("extra_trees", "multiclass"), ("random_forest", "regression"),
                                        ("random_forest", "binary")])
def test_a_packed_forest_predicts_as_the_forest_it_packs_in_a_third_of_the_memory(kind, task):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    X[rng.random(X.shape) < 0.1] = np.nan  # scikit-learn's trees send missing values one way per node
    y = {"multiclass": rng.integers(0, 5, 400), "binary": rng.integers(0, 2, 400),
         "regression": 1e6 + rng.normal(size=400)}[task]  # an offset that float32 leaves would round away
    forest = forest_on(kind, task, X, y)
    packed = models.PackedForest.of(forest)
    X_new = rng.normal(size=(300, 5))
    X_new[rng.random(X_new.shape) < 0.1] = np.nan
    if task == "regression":
        np.testing.assert_allclose(packed.predict(X_new), forest.predict(X_new), rtol=1e-12)
    else:
        np.testing.assert_allclose(packed.predict_proba(X_new), forest.predict_proba(X_new), atol=1e-6)
        assert (packed.predict(X_new) == forest.predict(X_new)).all()
        assert list(packed.classes_) == list(forest.classes_)
    one = models.PackedForest.of(pickle.loads(pickle.dumps(forest)))  # one row, as a served model predicts
    assert np.allclose(pickle.loads(pickle.dumps(one)).predict(X_new[:1]), forest.predict(X_new[:1]))
    sklearn_bytes = sum(t.tree_.node_count for t in forest.estimators_) * models._node_bytes(
        Context(task, 0 if task == "regression" else len(forest.classes_), 0, 1))
    assert len(pickle.dumps(packed)) < sklearn_bytes / 2.5


def test_a_packed_threshold_splits_float32_inputs_exactly_as_the_float64_one():
    """Trees compare inputs cast to float32 with float64 thresholds, halfway
    between two inputs. Between two adjacent float32 values with an odd last
    bit, that threshold rounds to the upper one: rounded to nearest, the upper
    value would go left."""
    low = np.nextafter(np.float32(1000), np.float32(2000))  # apart by more than the splitter's 1e-7
    assert low.view(np.uint32) & 1
    high = np.nextafter(low, np.float32(2000))
    X = np.array([[low], [high]] * 10, dtype=np.float64)
    y = np.array([0, 1] * 10)
    forest = forest_on("random_forest", "binary", X, y, bootstrap=False)
    assert (forest.estimators_[0].tree_.threshold[0] == (np.float64(low) + np.float64(high)) / 2)
    assert np.float32(forest.estimators_[0].tree_.threshold[0]) == high  # what rounding to nearest gives
    packed = models.PackedForest.of(forest)
    assert (packed.predict(X) == y).all()


def test_a_packed_forest_keeps_its_first_trees_or_joins_another():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, 300)
    first, second = forest_on("extra_trees", "multiclass", X, y), forest_on("extra_trees", "multiclass", X, y, max_depth=3)
    X_new = rng.normal(size=(50, 4))
    parts = [models.PackedForest.of(first), models.PackedForest.of(second)]
    alive = [weakref.ref(part) for part in parts]
    joined = models.PackedForest.concat(parts)
    assert parts == [] and all(ref() is None for ref in alive), "each part goes once it is copied"
    expected = (first.predict_proba(X_new) + second.predict_proba(X_new)) / 2
    np.testing.assert_allclose(joined.predict_proba(X_new), expected, atol=1e-6)
    head = joined.head(5)
    assert head.n_trees == 5 and head.params == joined.params == {"min_samples_leaf": 1, "max_features": "sqrt"}
    first.estimators_ = first.estimators_[:5]
    np.testing.assert_allclose(head.predict_proba(X_new), first.predict_proba(X_new), atol=1e-6)
    assert head.children.base is None, "a copy: the rest of the trees can go"


def test_a_packed_forest_predicts_sparse_input_and_many_rows_in_blocks(monkeypatch):
    monkeypatch.setattr(models, "FOREST_WALK_NODES", 200)  # 10 rows of 20 trees a block
    rng = np.random.default_rng(2)
    X = scipy_sparse.random(120, 30, density=0.1, format="csr", random_state=3)
    y = rng.integers(0, 2, 120)
    forest = forest_on("extra_trees", "binary", X, y)
    np.testing.assert_allclose(models.PackedForest.of(forest).predict_proba(X), forest.predict_proba(X), atol=1e-6)


def test_a_refit_forest_is_grown_in_packed_chunks_of_bounded_memory(monkeypatch):
    """Grown whole, the refit forest was the end of the fit's peak on wine."""
    monkeypatch.setattr(models, "FOREST_CHUNK_MEMORY", 2e6)
    chunks = []
    pack = models.PackedForest.of

    def spy(forest):
        chunks.append(len(forest.estimators_) * models.tree_bytes([forest], ctx))
        return pack(forest)

    monkeypatch.setattr(models.PackedForest, "of", staticmethod(spy))
    X, y = noisy(2000, 5)
    ctx = Context("binary", 2, 0, 1)
    forest = models.FAMILIES["extra_trees"].fit({"n_estimators": 60}, ctx, X.to_numpy(), y.to_numpy(), None, None)
    assert isinstance(forest, models.PackedForest) and forest.n_trees == 60
    assert len(chunks) > 3 and max(chunks[1:]) <= 2e6 * 1.2  # the first chunk is sized before a tree's size is known
    assert roc_auc_score(y, forest.predict_proba(X.to_numpy())[:, 1]) > 0.99  # fully grown trees, on their own rows


def linear_and_boosting(monkeypatch, kept_bag_memory):
    monkeypatch.setattr(search, "portfolio", lambda task, n_rows: [
        Candidate("linear", "linear", {}), Candidate("xgboost", "xgboost", {"max_depth": 3})])
    monkeypatch.setattr(core, "KEPT_BAG_MEMORY", kept_bag_memory)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=[f"x{i}" for i in range(4)])
    return X, pd.Series((X.x0 + X.x1 + np.sin(3 * X.x3) + rng.normal(size=300) > 0).astype(int), name="y")


@pytest.mark.parametrize("budget", [1.0, 1e12])
def test_a_bag_keeps_the_folds_its_weights_share_of_the_kept_bag_memory_holds(monkeypatch, budget):
    X, y = linear_and_boosting(monkeypatch, budget)
    m = AutoML(time_budget=None, max_trials=2, seed=0, refit=False).fit(X, y)
    assert len(m._members) == 2 and all(0 < w < 1 for _, _, w in m._members)
    kept = [len(bag) for _, bag, _ in m._members]
    if budget == 1.0:  # the floor: the noise of the whole bag, scaled by the weight
        assert kept == [math.ceil(8 * w**2) for _, _, w in m._members] and max(kept) < 8
    else:
        assert kept == [8, 8]
    assert len(m._preprocessors) == max(kept)
    expected = sum(w * np.mean([models.predict_matrix(model, core.transform_frame(m._preprocessors[f][c.flavour], X),
                                                      m._context) for f, model in enumerate(bag)], axis=0)
                   for c, bag, w in m._members)
    np.testing.assert_allclose(m.predict_proba(X), expected / expected.sum(axis=1, keepdims=True))


def test_a_bag_of_fewer_folds_keeps_more_of_them(monkeypatch):
    """Fold models of k folds share (k-2)/(k-1) of their rows: with many folds,
    a few of them hold most of what the bag knows."""
    monkeypatch.setattr(core, "KEPT_BAG_MEMORY", 56e6)
    fold = 4e6
    assert core._kept_folds(0.5, [fold] * 8) == 2  # 0.5 * 56 MB / 7 holds one; the floor, ceil(8 * 0.5^2), two
    assert core._kept_folds(0.5, [fold] * 3) == 3  # 0.5 * 56 MB / 2 holds all three
    assert core._kept_folds(0.5, [fold]) == 1  # a holdout's one model
    assert core._kept_folds(1.0, [1e12] * 5) == 5  # the whole ensemble keeps its whole bag
