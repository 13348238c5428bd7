"""The model portfolio: families, their strong default configurations, their
search spaces, and fitting that honours a deadline.

Every family fits on a fold's preprocessed matrix and predicts a matrix of
class probabilities (classes 0..k-1) or a vector of values. Iterative families
grow in steps and stop at the deadline or on cancellation, so that a single
slow model cannot break the time budget.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import xgboost as xgb
from scipy import sparse
from sklearn.base import clone
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from .malloc import release_memory

SLICE_BYTES = 1 << 20  # of xgboost trees per XGBSlices part
SLICE_OUTPUT_BYTES = 1 << 16  # of one part's predictions at a time (xgboost keeps the last ones)
XGB_MAX_BIN = 256  # xgboost's default
XGB_WIDE_NODE_BYTES = 1 << 20  # a node's histogram past which xgboost's bins and cached nodes are bounded
XGB_HIST_MEMORY = 128e6  # bytes of node histograms xgboost may cache, on wide data
MIN_ROWS_PER_BIN = 8


def _never() -> bool:
    return False


@dataclass
class Context:
    """What every fit needs besides the data."""

    task: str
    n_classes: int
    seed: int
    n_jobs: int
    device: str = "cpu"
    should_stop: Callable[[], bool] = _never
    deadline: float | None = None  # time.monotonic() by which this fit should end
    n_folds: int = 1
    categorical: np.ndarray | None = None  # mask of ordinal-coded columns (tree flavour)

    @property
    def classification(self) -> bool:
        return self.task != "regression"


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    params: dict = field(default_factory=dict)

    @property
    def flavour(self) -> str:
        return FAMILIES[self.family].flavour


# --- families ---------------------------------------------------------------------


def _fit_dummy(params, ctx, X, y, X_val, y_val):
    model = DummyClassifier(strategy="prior") if ctx.classification else DummyRegressor()
    return model.fit(X, y)


def _fit_linear(params, ctx, X, y, X_val, y_val):
    if ctx.classification:
        model = LogisticRegression(C=params.get("C", 1.0), max_iter=1000, random_state=ctx.seed)
    else:
        model = Ridge(alpha=params.get("alpha", 1.0), random_state=ctx.seed)
    return model.fit(X, y)


KNN_DENSE_COLUMNS = 1000  # k-NN densifies its sparse input up to this width


def _dense_if_narrow(X):
    return X.toarray() if sparse.issparse(X) and X.shape[1] <= KNN_DENSE_COLUMNS else X


class _DenseWhenNarrow:
    """k-NN on its own dense copy of a narrow sparse matrix (the linear
    flavour's one-hot columns). On sparse input scikit-learn's neighbour
    search takes its older brute-force path, which fills a gigabyte of
    distances a chunk: 2.2 GB and 15 s on adult's folds. Wide matrices
    (TF-IDF of free text) stay sparse, where a dense copy would cost more."""

    def fit(self, X, y):
        return super().fit(_dense_if_narrow(X), y)

    def predict(self, X):
        return super().predict(_dense_if_narrow(X))


class DenseKNeighborsClassifier(_DenseWhenNarrow, KNeighborsClassifier):
    def predict_proba(self, X):
        return super().predict_proba(_dense_if_narrow(X))


class DenseKNeighborsRegressor(_DenseWhenNarrow, KNeighborsRegressor):
    pass


def _fit_knn(params, ctx, X, y, X_val, y_val):
    cls = DenseKNeighborsClassifier if ctx.classification else DenseKNeighborsRegressor
    n_neighbors = min(params.get("n_neighbors", 10), X.shape[0] - 1)
    model = cls(n_neighbors=n_neighbors, weights=params.get("weights", "distance"), n_jobs=ctx.n_jobs)
    return model.fit(X, y)


class _KeptBooster(xgb.Booster):
    """A booster whose `reset` keeps it as it is. `xgboost.train` ends with
    `reset()`, which releases the training caches by writing the whole model to
    JSON and reading it back: ~7 KB per tree at its peak, so +65 MB for a
    multiclass model of 1,600 rounds whose trees take 5 MB. XGBSlices copies
    the trees out, which drops the caches as well."""

    def reset(self):
        return self


class _StopWhen(xgb.callback.TrainingCallback):
    def __init__(self, should_stop):
        super().__init__()
        self.should_stop = should_stop

    def after_iteration(self, model, epoch, evals_log):
        return self.should_stop()

    def after_training(self, model):
        model.__class__ = _KeptBooster  # see _KeptBooster; _fit_xgboost copies the trees out
        return model


def _fit_xgboost(params, ctx, X, y, X_val, y_val):
    params = dict(params)
    if ctx.task == "binary":
        cls, eval_metric = xgb.XGBClassifier, "logloss"
    elif ctx.task == "multiclass":
        cls, eval_metric = xgb.XGBClassifier, "mlogloss"
    else:
        cls, eval_metric = xgb.XGBRegressor, "rmse"
    if ctx.categorical is not None and ctx.categorical.any():
        # Native categorical splits on the ordinal codes, rather than treating codes as numbers.
        params.update(enable_categorical=True, feature_types=["c" if c else "q" for c in ctx.categorical])
    refit = X_val is None  # a refit on all rows: the size comes from the fold models
    params.update({k: v for k, v in _histogram_bounds(*X.shape).items() if k not in params})
    model = cls(
        n_estimators=params.pop("n_estimators", 3000),
        early_stopping_rounds=None if refit else 50,
        eval_metric=eval_metric,
        tree_method="hist",
        device=ctx.device,
        n_jobs=ctx.n_jobs,
        random_state=ctx.seed,
        callbacks=[_StopWhen(ctx.should_stop)],
        **params,
    )
    model.fit(X, y, eval_set=None if refit else [(X_val, y_val)], verbose=False)
    model.set_params(callbacks=None)  # the callback holds the search's clock: not for pickling
    # Early stopping's patience, the rounds after the best one, is left out: those
    # rounds are never used to predict.
    rounds = model.get_booster().num_boosted_rounds()
    if refit:
        return XGBSlices.of(model, rounds)
    # No best round when the clock stopped the first one: xgboost asks its
    # callbacks in turn and stops at the first that says stop, so early
    # stopping never saw that round. A 10 s fit lost one xgboost trial in ten so.
    best = model.get_booster().attr("best_iteration")
    return XGBTrained(model, rounds if best is None else int(best) + 1)


def _histogram_bounds(n_rows: int, n_columns: int) -> dict:
    """xgboost's hist method keeps one histogram of every column's bins per tree
    node it has grown, up to 65,536 nodes: on 533 rows of 10,000 columns, 20
    rounds peaked at +2 GB and took 15 s. Past XGB_WIDE_NODE_BYTES a node, the
    bins are fewer, at least MIN_ROWS_PER_BIN rows each, and the nodes cached
    are as many as XGB_HIST_MEMORY holds: +300 MB and 4 s there. Narrower data
    keeps xgboost's defaults."""
    node_bytes = n_columns * XGB_MAX_BIN * 16  # a gradient and a hessian in double precision per bin
    if node_bytes <= XGB_WIDE_NODE_BYTES:
        return {}
    max_bin = int(np.clip(n_rows // MIN_ROWS_PER_BIN, 32, XGB_MAX_BIN))
    return {"max_bin": max_bin, "max_cached_hist_node": max(4, int(XGB_HIST_MEMORY // (n_columns * max_bin * 16)))}


def in_row_blocks(X, rows: int, predict) -> np.ndarray:
    """`predict` on blocks of at most `rows` rows (a frame's by position), end to end."""
    if X.shape[0] <= rows:
        return predict(X)
    block = getattr(X, "iloc", X)
    return np.concatenate([predict(block[i:i + rows]) for i in range(0, X.shape[0], rows)])


class XGBSlices:
    """A fitted xgboost model kept as consecutive slices of its rounds, each a
    fitted XGBModel of about SLICE_BYTES, that predict in a chain: each slice's
    margin is the next one's base margin, and the last applies the link.

    Why: xgboost writes and reads a model (pickle, save_model, load) through a
    JSON document of the whole model, 3-7 times the size of the trees: a
    6,000-tree multiclass model of glass costs +28 MB each time a fold model is
    stored, loaded or saved. A slice bounds that to a few MB, for ~0.15 ms per
    extra slice at predict time. Slicing also copies the trees out of the
    training booster, without the caches that _KeptBooster kept."""

    def __init__(self, parts: list):
        self.parts = parts

    @classmethod
    def of(cls, model, rounds: int) -> "XGBSlices":
        return cls(list(_slices(model, rounds)))

    def __reduce__(self):
        """The parts one at a time, each serialized from a throwaway copy of its
        trees: xgboost keeps a booster's serialized form in a buffer of that
        booster for as long as it lives, so pickling a model of ten parts held
        ten serialized parts, and went on holding them. Under a pickler without
        memo (persistence.dump_without_memo), one part is serialized at a time."""
        return (XGBSlices, ([],), None, map(_throwaway_copy, self.parts))

    def append(self, part):
        """How unpickling puts the parts back."""
        self.parts.append(part)

    @property
    def classes_(self):
        return self.parts[-1].classes_

    @property
    def n_rounds(self) -> int:
        return sum(part.get_booster().num_boosted_rounds() for part in self.parts)

    def _margin(self, X):
        margin = None
        for part in self.parts[:-1]:
            margin = part.predict(X, output_margin=True, base_margin=margin)
        return margin

    def _in_blocks(self, X, predict):
        """Rows in blocks of SLICE_OUTPUT_BYTES of predictions. A booster keeps its
        last predictions in a buffer of its own, as large as the largest it made,
        for as long as it lives: letter's final model (41 parts, 26 classes) held
        +24 MB after predicting its 5,000 test rows, and a model serving large
        batches would hold a batch's predictions per part."""
        width = getattr(self.parts[-1], "n_classes_", 1)
        return in_row_blocks(X, max(1, SLICE_OUTPUT_BYTES // (4 * (width if width > 2 else 1))), predict)

    def predict(self, X):
        return self._in_blocks(X, lambda rows: self.parts[-1].predict(rows, base_margin=self._margin(rows)))

    def predict_proba(self, X):
        return self._in_blocks(X, lambda rows: self.parts[-1].predict_proba(rows, base_margin=self._margin(rows)))


def _throwaway_copy(part):
    copied = copy.copy(part)
    copied._Booster = part.get_booster()[:]  # a copy of the trees, without serializing them
    return copied


def _slices(model, rounds: int):
    """The first `rounds` rounds of a fitted XGBModel, as XGBModels of about
    SLICE_BYTES of trees each, made one at a time."""
    booster = model.get_booster()
    # A round's size, read off the larger of the first and the last.
    round_bytes = max(len(booster[i:i + 1].save_raw()) for i in {0, rounds - 1})
    step = max(1, SLICE_BYTES // round_bytes)
    for start in range(0, rounds, step):
        part = copy.copy(model)
        part._Booster = booster[start:min(start + step, rounds)]
        # A kept model predicts on the CPU wherever it was trained: the hub and
        # the dashboards that serve it have no GPU, and a booster set for CUDA
        # warns at every prediction there (on a GPU, data in host memory makes
        # xgboost fall back to a slower path, with a warning too).
        part.set_params(device="cpu")
        yield part


class XGBTrained:
    """A fold model as xgboost trained it, whole, for its out-of-fold
    predictions; it pickles as XGBSlices, sliced one part at a time while it is
    written. Slicing at the end of training instead held the training booster
    and all its slices at once, twice the trees: a 4-class fold of 367 rounds
    at depth 8 peaked at +37 MB that way, +34 MB this way."""

    def __init__(self, model, rounds: int):
        self.model, self.n_rounds = model, rounds

    def __reduce__(self):
        return (XGBSlices, ([],), None, _slices(self.model, self.n_rounds))

    @property
    def classes_(self):
        return self.model.classes_

    def predict(self, X):
        return self.model.predict(X, iteration_range=(0, self.n_rounds))

    def predict_proba(self, X):
        return self.model.predict_proba(X, iteration_range=(0, self.n_rounds))


def _units_before_deadline(ctx: Context, started: float, done: int) -> float:
    """How many more units (trees, iterations) fit before the deadline, at the
    pace of the `done` units since `started`."""
    if ctx.deadline is None:
        return float("inf")
    per_unit = (time.monotonic() - started) / done
    return int((ctx.deadline - time.monotonic()) / max(per_unit, 1e-9))


def _grow(model, attribute, first, limit, X, y, ctx, **fit_params):
    """Fit with warm_start in doubling steps (few refits) until `limit`, the
    estimator's own early stop, or the deadline: each step is sized from the
    time per unit so far, so the last one does not overshoot."""
    size = min(first, limit)
    started = time.monotonic()
    while True:
        model.set_params(**{attribute: size}, warm_start=True)
        model.fit(X, y, **fit_params)
        if getattr(model, "n_iter_", size) < size or size >= limit or ctx.should_stop():
            break  # early stopped (boosting), complete, or out of time
        step = min(size, _units_before_deadline(ctx, started, size))
        if step < 1:
            break
        size = min(size + step, limit)
    model.set_params(warm_start=False)
    return model


HGB_FIRST_ITERATIONS = 10  # of a boosted model's first growth step, at most, before its pace is known
HGB_FIRST_ROW_TREES = 4_000_000  # rows x trees of that first step, at most (about a second)
HGB_MANY_CLASSES = 50  # past this, an unregularized boosted leaf can overshoot (see _fit_hist_gb)


def _fit_hist_gb(params, ctx, X, y, X_val, y_val):
    """Grown in steps (_grow) whose first is sized by HGB_FIRST_ROW_TREES: an
    iteration grows one tree per class, and 355 classes took 5 s an iteration
    on 96,000 rows, so a first step of ten iterations ran 40 s past its share.
    Past HGB_MANY_CLASSES classes the default gets xgboost's l2 of 1: a leaf's
    step is its gradients over its hessians, a rare class's hessians are about
    1/classes of its rows, and without l2 the first trees moved logits by tens:
    log loss went 8 -> 30 in eight iterations on 355 classes (l2 = 1: 5.4 -> 4.4)."""
    params = dict(params)
    cls = HistGradientBoostingClassifier if ctx.classification else HistGradientBoostingRegressor
    if ctx.n_classes > HGB_MANY_CLASSES:
        params.setdefault("l2_regularization", 1.0)
    trees_per_iteration = ctx.n_classes if ctx.n_classes > 2 else 1
    first = int(np.clip(HGB_FIRST_ROW_TREES // (X.shape[0] * trees_per_iteration), 1, HGB_FIRST_ITERATIONS))
    categorical = ctx.categorical if ctx.categorical is not None and ctx.categorical.any() else None
    limit = params.pop("max_iter", 1000)
    use_val = params.pop("early_stopping", True) if X_val is not None else False
    model = cls(
        random_state=ctx.seed,
        categorical_features=categorical,
        early_stopping=use_val,
        n_iter_no_change=20 if use_val else 10,
        **params,
    )
    fit_params = {"X_val": X_val, "y_val": y_val} if use_val is True else {}
    model = _grow(model, "max_iter", first, limit, X, y, ctx, **fit_params)
    model._predictors = PackedTrees.of(model._predictors)
    return model


class PackedTrees(list):
    """A fitted HistGradientBoosting model's trees (its `_predictors`: per
    iteration, one tree per class), whose nodes and category bitsets are views
    of three shared arrays, and which pickle as those three arrays.

    Why: scikit-learn gives every tree three arrays of its own, and unpickling
    builds each anew. A boosted tree on small data has ~10 nodes (560 bytes),
    and its arrays cost ~2 KB more in objects, headers and allocator slack:
    glass's multiclass bag of 7 folds (7,350 trees, 3.8 MB of nodes) took
    20 MB once loaded. Packed, a tree costs one view and its predictor."""

    @classmethod
    def of(cls, iterations) -> "PackedTrees":
        return cls.from_arrays(*_tree_arrays(iterations)) if len(iterations) else cls()

    @classmethod
    def from_arrays(cls, nodes, node_counts, binned, raw, bitset_counts, per_iteration) -> "PackedTrees":
        node_ends, bitset_ends = np.cumsum(node_counts), np.cumsum(bitset_counts)
        no_binned, no_raw = binned[:0], raw[:0]  # shared by the trees without categorical splits
        trees = []
        for n_end, n, b_end, b in zip(node_ends.tolist(), node_counts.tolist(), bitset_ends.tolist(),
                                      bitset_counts.tolist()):
            bitsets = (binned[b_end - b:b_end], raw[b_end - b:b_end]) if b else (no_binned, no_raw)
            trees.append(TreePredictor(nodes[n_end - n:n_end], *bitsets))
        return cls(trees[i:i + per_iteration] for i in range(0, len(trees), per_iteration))

    def __reduce__(self):
        return (PackedTrees.from_arrays, _tree_arrays(self)) if len(self) else (PackedTrees, ())


def _tree_arrays(iterations) -> tuple:
    """PackedTrees.from_arrays' arguments: every tree's arrays, end to end."""
    trees = [tree for iteration in iterations for tree in iteration]
    return (
        np.concatenate([t.nodes for t in trees]),
        np.array([len(t.nodes) for t in trees]),
        np.concatenate([t.binned_left_cat_bitsets for t in trees]),
        np.concatenate([t.raw_left_cat_bitsets for t in trees]),
        np.array([len(t.raw_left_cat_bitsets) for t in trees]),
        len(iterations[0]),
    )


FOREST_WALK_NODES = 1 << 15  # (row, tree) pairs a packed forest walks at once
FOREST_LEAF_CELLS = 1 << 16  # leaf values a packed forest gathers at once


class PackedForest:
    """A fitted random forest or extra trees, its trees end to end in flat
    arrays: for each node int32 children and feature, a float32 threshold and
    where missing values go, and for each leaf its values (class fractions in
    float32, regression values in float64).

    Why: scikit-learn's node takes 64 bytes plus 8 per class, internal nodes
    included. Wine's final extra trees (7 classes) held 47 MB, the largest part
    of its fit's peak; packed, 12 MB. A threshold rounded down to float32 splits
    exactly as the float64 one does, because trees compare the input cast to
    float32: an input is at most the threshold if and only if it is at most the
    largest float32 below it. Every tree walks at once, one level per numpy
    step, in blocks of rows: with 150 trees on wine, one row took 0.2 ms
    instead of scikit-learn's 7.7 ms, 1,225 rows 0.09 s instead of 0.045 s,
    and 10,000 rows 0.71 s instead of 0.12 s (two threads)."""

    def __init__(self, node_counts, children, feature, threshold, missing_left, values, classes=None, params=None):
        self.node_counts = node_counts  # per tree
        self.children = children  # (nodes, 2): left and right; a leaf: -1 and its row of values
        self.feature = feature
        self.threshold = threshold
        self.missing_left = missing_left
        self.values = values  # (leaves, classes) or (leaves,)
        if classes is not None:
            self.classes_ = classes
        self.params = params or {}  # the forest's min_samples_leaf and max_features, which a refit copies

    @classmethod
    def of(cls, forest) -> "PackedForest":
        classes = getattr(forest, "classes_", None)
        trees = [estimator.tree_ for estimator in forest.estimators_]
        leaves = sum(int((tree.children_left < 0).sum()) for tree in trees)
        values = np.empty((leaves, len(classes)), np.float32) if classes is not None else np.empty(leaves)
        return cls._joined((cls._of_tree(tree, classes) for tree in trees), len(trees),
                           sum(tree.node_count for tree in trees), values, classes,
                           {"min_samples_leaf": forest.min_samples_leaf, "max_features": forest.max_features})

    @classmethod
    def _of_tree(cls, tree, classes) -> "PackedForest":
        children = np.stack([tree.children_left, tree.children_right], axis=1).astype(np.int32)
        leaf = children[:, 0] < 0
        children[leaf, 1] = np.arange(leaf.sum())
        values = tree.value[leaf, 0]
        if classes is not None:  # fractions, as predict_proba reads them
            values = (values / values.sum(axis=1, keepdims=True)).astype(np.float32)
        threshold = tree.threshold.astype(np.float32)
        above = threshold > tree.threshold
        threshold[above] = np.nextafter(threshold[above], np.float32(-np.inf))
        return cls(np.array([tree.node_count], dtype=np.int32), children, tree.feature.astype(np.int32), threshold,
                   tree.missing_go_to_left.astype(bool), values if classes is not None else values[:, 0], classes)

    @classmethod
    def concat(cls, forests: list["PackedForest"]) -> "PackedForest":
        """One forest of the given ones' trees, in order. The list is emptied as
        it is read, and each part's memory goes back once it is copied, so the
        whole and its parts are never all in memory: wine's refit extra trees,
        12 MB packed, held both at the end of their fit."""
        shape, dtype = forests[0].values.shape[1:], forests[0].values.dtype
        classes, params = getattr(forests[0], "classes_", None), forests[0].params
        values = np.empty((sum(len(f.values) for f in forests), *shape), dtype)

        def taken():
            while forests:
                yield forests.pop(0)
                release_memory()

        return cls._joined(taken(), sum(f.n_trees for f in forests), sum(len(f.children) for f in forests), values,
                           classes, params)

    @classmethod
    def _joined(cls, parts, n_trees: int, n_nodes: int, values: np.ndarray, classes, params=None) -> "PackedForest":
        """The parts (packed forests, read one at a time) written end to end
        into arrays allocated once: their node and leaf numbers move past those
        of the parts before them. Packing a fold's forest through copies held
        it three times over, and raised pima's peak by 5 MB."""
        node_counts = np.empty(n_trees, np.int32)
        children, feature = np.empty((n_nodes, 2), np.int32), np.empty(n_nodes, np.int32)
        threshold, missing_left = np.empty(n_nodes, np.float32), np.empty(n_nodes, bool)
        trees = nodes = leaves = 0
        for part in parts:
            end, leaf_end = nodes + len(part.children), leaves + len(part.values)
            leaf = part.children[:, 0] < 0
            children[nodes:end] = part.children + np.where(leaf, 0, nodes)[:, None]
            children[nodes:end, 1] += np.where(leaf, leaves, 0)
            feature[nodes:end], threshold[nodes:end] = part.feature, part.threshold
            missing_left[nodes:end], values[leaves:leaf_end] = part.missing_left, part.values
            node_counts[trees:trees + part.n_trees] = part.node_counts
            trees, nodes, leaves = trees + part.n_trees, end, leaf_end
            del part  # a part that was taken (concat) can go now
        return cls(node_counts, children, feature, threshold, missing_left, values, classes, params)

    def head(self, n_trees: int) -> "PackedForest":
        """The first `n_trees` trees (their nodes and leaves come first)."""
        nodes = int(self.node_counts[:n_trees].sum())
        leaves = int((self.children[:nodes, 0] < 0).sum())
        return PackedForest(self.node_counts[:n_trees].copy(), self.children[:nodes].copy(),
                            self.feature[:nodes].copy(), self.threshold[:nodes].copy(),
                            self.missing_left[:nodes].copy(), self.values[:leaves].copy(),
                            getattr(self, "classes_", None), self.params)

    @property
    def n_trees(self) -> int:
        return len(self.node_counts)

    def _leaves(self, X: np.ndarray) -> np.ndarray:
        """The leaf row each (row, tree) pair reaches, as an (rows, trees) array."""
        roots = np.concatenate([[0], np.cumsum(self.node_counts[:-1])]).astype(np.int64)
        n_rows, width = X.shape
        node = np.tile(roots, n_rows)
        cell = np.repeat(np.arange(n_rows, dtype=np.int64) * width, len(roots))
        flat = X.ravel()
        has_missing = np.isnan(flat).any()
        walking = np.flatnonzero(self.children[node, 0] >= 0)
        while walking.size:
            at = node[walking]
            x = flat[cell[walking] + self.feature[at]]
            right = x > self.threshold[at]
            if has_missing:
                right |= np.isnan(x) & ~self.missing_left[at]
            node[walking] = self.children[at, right.view(np.int8)]
            walking = walking[self.children[node[walking], 0] >= 0]
        return self.children[node, 1].reshape(n_rows, len(roots))

    def _mean_leaf_values(self, X) -> np.ndarray:
        X = X.toarray() if sparse.issparse(X) else X  # callers pass row blocks
        leaves = self._leaves(np.asarray(X, dtype=np.float32))
        total = 0.0
        step = max(1, FOREST_LEAF_CELLS // (len(X) * max(self.values[0].size, 1)))
        for first in range(0, self.n_trees, step):
            total = total + self.values[leaves[:, first:first + step]].sum(axis=1, dtype=np.float64)
        return total / self.n_trees

    def _by_rows(self, X) -> np.ndarray:
        return in_row_blocks(X, max(1, FOREST_WALK_NODES // max(self.n_trees, 1)), self._mean_leaf_values)

    def predict_proba(self, X) -> np.ndarray:
        return self._by_rows(X)

    def predict(self, X) -> np.ndarray:
        if hasattr(self, "classes_"):
            return self.classes_[self._by_rows(X).argmax(axis=1)]
        return self._by_rows(X)


def _forest_size(n_rows: int, n_folds: int) -> int:
    """Trees per fold model. The fold models are averaged at predict time, so k
    folds of 300/k trees make a forest of 300; and fewer trees on big data, where
    deep trees grow with the rows, in time and memory."""
    most = 150 if n_rows <= 5000 else max(50, 300 // n_folds)  # small data: trees are cheap
    return int(np.clip(3_000_000 / max(n_rows, 1), 50, most))


FOLD_FOREST_MEMORY = 48e6  # bytes of trees one forest may grow (a fold's holds only those its bag keeps)
KEPT_FOREST_MEMORY = 64e6  # bytes of one forest candidate's fold models kept after evaluation
FOREST_CHUNK_MEMORY = 8e6  # bytes of trees a refit forest grows at once, before it packs them
MIN_FOREST_TREES = 32  # trees that must fit in FOLD_FOREST_MEMORY: leaves grow larger otherwise


def _node_bytes(ctx: Context) -> int:
    """A fitted tree's node: 64 bytes of structure plus one float per class."""
    return 64 + 8 * max(ctx.n_classes, 1)


def tree_bytes(forests, ctx: Context) -> float:
    """Mean bytes of one fitted tree over the given forests, in scikit-learn's
    format (packed or not): the forests' memory bounds count trees this way."""
    counts = np.concatenate([forest.node_counts if isinstance(forest, PackedForest)
                             else [t.tree_.node_count for t in forest.estimators_] for forest in forests])
    return _node_bytes(ctx) * counts.sum() / max(len(counts), 1)


def _min_leaf_for_memory(n_rows: int, ctx: Context) -> int:
    """Smallest leaf size at which MIN_FOREST_TREES fully grown trees fit in
    FOLD_FOREST_MEMORY. A fully grown regression tree has about 2n nodes, a
    classification tree about n (measured on noisy labels)."""
    nodes_per_row = 1.0 if ctx.classification else 2.0
    total = nodes_per_row * n_rows * MIN_FOREST_TREES * _node_bytes(ctx)
    return max(1, int(total / FOLD_FOREST_MEMORY))


def _forest(kind: str, params: dict, ctx: Context, n_rows: int):
    """The unfitted forest for `params`, and how many trees it may grow."""
    params = dict(params)
    classes = {
        "random_forest": (RandomForestClassifier, RandomForestRegressor),
        "extra_trees": (ExtraTreesClassifier, ExtraTreesRegressor),
    }[kind]
    cls = classes[0] if ctx.classification else classes[1]
    limit = params.pop("n_estimators", _forest_size(n_rows, ctx.n_folds))
    params["min_samples_leaf"] = max(params.get("min_samples_leaf", 1), _min_leaf_for_memory(n_rows, ctx))
    if not ctx.classification and "max_features" not in params:
        params["max_features"] = 1.0 if kind == "extra_trees" else 0.6
    return cls(n_jobs=ctx.n_jobs, random_state=ctx.seed, **params), limit


def _affordable_trees(grown, ctx: Context) -> int:
    """Trees that fit in FOLD_FOREST_MEMORY, measured on the ones grown so far."""
    return int(FOLD_FOREST_MEMORY / tree_bytes([grown], ctx))


def _forest_chunk(template, n_trees: int, grown: int, ctx: Context, X, y):
    """`n_trees` fresh trees, seeded by how many were grown before them."""
    chunk = clone(template).set_params(n_estimators=n_trees, random_state=(ctx.seed * 7919 + grown) % 2**32)
    return chunk.fit(X, y)


def _fit_forest(kind):
    """A forest on all rows (a refit), until FOLD_FOREST_MEMORY, grown in
    doubling chunks of fresh trees, each packed as soon as it is grown and at
    most FOREST_CHUNK_MEMORY: the forest is never whole in scikit-learn's
    format (on wine, 47 MB of extra trees at the end of the fit)."""
    def fit(params, ctx, X, y, X_val, y_val):
        template, limit = _forest(kind, params, ctx, X.shape[0])
        parts, grown, step = [], 0, min(max(10, limit // 8), limit)
        started = time.monotonic()
        while step >= 1:
            chunk = _forest_chunk(template, step, grown, ctx, X, y)
            if not parts:
                limit = max(step, min(limit, _affordable_trees(chunk, ctx)))
                most = max(ctx.n_jobs, int(FOREST_CHUNK_MEMORY / tree_bytes([chunk], ctx)))
            parts.append(PackedForest.of(chunk))
            grown += step
            del chunk
            release_memory()  # the chunk's trees, in scikit-learn's format
            if grown >= limit or ctx.should_stop():
                break
            step = min(grown, most, limit - grown, _units_before_deadline(ctx, started, grown))
        return PackedForest.concat(parts)

    return fit


def _kept_trees(model, ctx: Context) -> int:
    """Trees per fold that a forest's bag keeps: as many as KEPT_FOREST_MEMORY
    holds over the folds. Every fold model is averaged at predict time, so k
    folds of 300/k trees still predict like a forest of 300: on the test sets of
    our benchmark ROC AUC and R2 did not move, while the bag shrank up to
    fivefold. A fold holds its kept trees while it grows, so this bounds the
    search's peak as well: a floor of 60 trees a fold had adult's extra trees
    hold all 18 they grew, 2.6 MB each, for a bag that the final model's share
    of FINAL_FOREST_MEMORY cuts to fewer trees anyway."""
    return max(1, int(KEPT_FOREST_MEMORY / (tree_bytes([model], ctx) * ctx.n_folds)))


def _fit_forest_fold(kind):
    """A fold's forest and its predictions on the fold's validation rows, grown
    in chunks of fresh trees: each chunk's predictions join a running sum, and
    only the trees the bag keeps (_kept_trees) stay, packed as their chunk
    ends (PackedForest). The out-of-fold predictions
    are those of every tree grown, while memory holds the kept trees and one
    chunk: a fold of insurance grew 150 fully grown regression trees, 20 MB at
    the peak of the fit, to keep 60 of them. Under a deadline the first chunk
    is one tree per thread, and the next are sized by its pace: with 355
    classes and every feature tried at each split, a tree took 5 s, and a
    first chunk of ten ran 10 s past the search's end."""
    def fit_fold(params, ctx, X, y, X_val, y_val):
        template, limit = _forest(kind, params, ctx, X.shape[0])
        parts, kept, keep, step = [], 0, limit, max(10, limit // 8)
        if ctx.deadline is not None:  # a tree's cost is unknown until one is grown: one per thread first
            step = min(step, max(1, ctx.n_jobs))
        total, grown, predict_s = 0.0, 0, 0.0
        started = time.monotonic()
        while step >= 1:
            chunk = _forest_chunk(template, step, grown, ctx, X, y)
            start = time.perf_counter()
            total = total + step * predict_matrix(chunk, X_val, ctx)
            predict_s += time.perf_counter() - start
            if not grown:
                limit = max(step, min(limit, _affordable_trees(chunk, ctx)))
                keep = _kept_trees(chunk, ctx)
            grown += step
            if kept < keep:
                del chunk.estimators_[keep - kept:]
                parts.append(PackedForest.of(chunk))
                kept += parts[-1].n_trees
            del chunk
            release_memory()
            if grown >= limit or ctx.should_stop():
                break
            step = min(max(4, keep // 4), limit - grown, _units_before_deadline(ctx, started, grown))
        return PackedForest.concat(parts), total / grown, predict_s

    return fit_fold


@dataclass(frozen=True)
class Family:
    flavour: str
    fit: Callable
    space: Callable | None = None  # optuna trial -> params
    # (params, ctx, X, y, X_val, y_val) -> (model, predictions on X_val, seconds spent predicting),
    # for a family that predicts its validation rows while it fits
    fit_fold: Callable | None = None


def _xgb_space(trial):
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10, log=True),
    }


def _hgb_space(trial):
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 128, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 3, 100, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 1e-3, 10, log=True),
        "max_features": trial.suggest_float("max_features", 0.3, 1.0),
    }


def _forest_space(trial):
    return {
        "max_features": trial.suggest_float("max_features", 0.1, 1.0),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 16, log=True),
    }


def _linear_space(trial):
    return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}


FAMILIES: dict[str, Family] = {
    "baseline": Family("tree", _fit_dummy),
    "linear": Family("linear", _fit_linear, _linear_space),
    "knn": Family("linear", _fit_knn),
    "xgboost": Family("tree", _fit_xgboost, _xgb_space),
    "hist_gb": Family("tree", _fit_hist_gb, _hgb_space),
    "random_forest": Family("tree", _fit_forest("random_forest"), _forest_space, _fit_forest_fold("random_forest")),
    "extra_trees": Family("tree", _fit_forest("extra_trees"), _forest_space, _fit_forest_fold("extra_trees")),
}


def portfolio(task: str, n_rows: int) -> list[Candidate]:
    """Strong default configurations, cheapest and strongest first: at small budgets
    a good portfolio plus ensembling beats search alone."""
    out = [
        Candidate("linear", "linear", {} if task != "regression" else {"alpha": 1.0}),
        Candidate("hist_gb_default", "hist_gb", {"max_iter": 100, "early_stopping": "auto"}),
        Candidate("xgboost_1", "xgboost", {"learning_rate": 0.1, "max_depth": 6}),
        Candidate("extra_trees", "extra_trees", {}),
        Candidate(
            "xgboost_2",
            "xgboost",
            {"learning_rate": 0.05, "max_depth": 4, "subsample": 0.8, "colsample_bytree": 0.7, "min_child_weight": 2.0},
        ),
        Candidate("random_forest", "random_forest", {}),
        Candidate(
            "hist_gb_2",
            "hist_gb",
            {"learning_rate": 0.05, "max_leaf_nodes": 63, "min_samples_leaf": 10, "l2_regularization": 1.0, "max_features": 0.7},
        ),
        Candidate(
            "xgboost_3",
            "xgboost",
            {"learning_rate": 0.03, "max_depth": 8, "subsample": 0.7, "colsample_bytree": 0.5, "min_child_weight": 4.0, "reg_alpha": 0.5},
        ),
    ]
    if n_rows <= 50_000:
        out.insert(1, Candidate("knn", "knn", {"n_neighbors": 10}))
    return out


@dataclass(frozen=True)
class RefitPlan:
    """How to fit a candidate once on all rows, read off its fold models while
    they are in memory, so the refit never needs the bag again."""

    params: dict
    tree_bytes: float | None = None  # forests: expected bytes of one tree grown on all rows


FORESTS = ("random_forest", "extra_trees")


def fold_summary(candidate: Candidate, model, ctx: Context) -> dict:
    """What a refit on all rows needs to know of one fold model: the size it reached."""
    if candidate.family == "xgboost":
        return {"rounds": model.n_rounds}
    if candidate.family == "hist_gb":
        return {"iterations": model.n_iter_}
    if candidate.family in FORESTS:
        return {"trees": model.n_trees, "tree_bytes": tree_bytes([model], ctx), **model.params}
    return {}


def refit_plan(candidate: Candidate, summaries: list[dict], row_ratio: float) -> RefitPlan:
    """Iterative families take the size their fold models reached (early stopping
    or the clock), the forests the trees the whole bag kept; `row_ratio` (all rows
    over a fold's training rows) scales the forests' tree size."""
    params = dict(candidate.params)
    if candidate.family == "xgboost":
        params["n_estimators"] = max(1, round(np.mean([s["rounds"] for s in summaries])))
    elif candidate.family == "hist_gb":
        params["max_iter"] = max(1, round(np.mean([s["iterations"] for s in summaries])))
    elif candidate.family in FORESTS:
        trees = sum(s["trees"] for s in summaries)
        params["n_estimators"] = trees
        params["min_samples_leaf"] = summaries[0]["min_samples_leaf"]
        params.setdefault("max_features", summaries[0]["max_features"])
        per_tree = sum(s["tree_bytes"] * s["trees"] for s in summaries) / trees
        return RefitPlan(params, per_tree * row_ratio)
    return RefitPlan(params)


def serving_threads(model, n_rows: int, n_jobs: int) -> None:
    """Few rows: one thread (starting a pool costs more than the work); many: all."""
    if hasattr(model, "n_jobs") and not hasattr(model, "get_booster"):
        model.n_jobs = 1 if n_rows < 2000 else n_jobs


def baseline() -> Candidate:
    return Candidate("baseline", "baseline", {})


def fit_model(candidate: Candidate, ctx: Context, X, y, X_val, y_val):
    return FAMILIES[candidate.family].fit(candidate.params, ctx, X, y, X_val, y_val)


def fit_fold(candidate: Candidate, ctx: Context, X, y, X_val, y_val):
    """A fold model, its predictions on the fold's validation rows, and the
    seconds they took."""
    family = FAMILIES[candidate.family]
    if family.fit_fold is not None:
        return family.fit_fold(candidate.params, ctx, X, y, X_val, y_val)
    model = family.fit(candidate.params, ctx, X, y, X_val, y_val)
    start = time.perf_counter()
    prediction = predict_matrix(model, X_val, ctx)
    return model, prediction, time.perf_counter() - start


def predict_matrix(model, X, ctx: Context) -> np.ndarray:
    """Class probabilities aligned on classes 0..k-1, or predicted values."""
    if not ctx.classification:
        return np.asarray(model.predict(X), dtype=float)
    proba = np.asarray(model.predict_proba(X), dtype=float)
    classes = np.asarray(model.classes_)
    if len(classes) == ctx.n_classes and np.array_equal(classes, np.arange(ctx.n_classes)):
        return proba
    full = np.zeros((proba.shape[0], ctx.n_classes))
    full[:, classes.astype(int)] = proba
    return full

