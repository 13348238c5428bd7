"""`AutoML`: the estimator that the CLI, the platform and users call."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import confusion_matrix, roc_curve
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from ..errors import NotFittedError, ParameterError
from . import checks
from .ensemble import greedy_selection
from .malloc import limit_malloc_arenas, release_memory
from .metrics import DEFAULT_METRIC, METRICS, metrics_for, report
from .models import (FORESTS, Candidate, Context, fit_model, in_row_blocks, predict_matrix, serving_threads,
                     tree_bytes)
from .preprocessing import build_preprocessor, categorical_mask, coerce, transform_frame
from .search import Folds, Search, make_splits

MAX_BUDGET = 7 * 24 * 3600
SEARCH_SHARE = 0.85  # of the budget; the rest ensembles, explains and refits
ENSEMBLE_SHARE = 0.92  # greedy selection's steps end by this share: late only when the search ran late
IMPORTANCE_SHARE = 0.88  # importance repeats after the first end by this share of the budget
REFIT_SHARE = 0.95  # refits, and importance's first repeat, end by this share of the budget
REFIT_MIN_ROWS_LOG_LOSS = 2000
IMPORTANCE_ROWS = 2000  # sampled validation rows that importance predicts, at most
IMPORTANCE_MIN_ROWS = 100  # ... and at least, for each column it measures
IMPORTANCE_CELLS = 16_000_000  # cells (rows x columns) one importance repeat predicts, at most
IMPORTANCE_BLOCK_CELLS = 2_000_000  # cells predicted at once
PLOT_POINTS = 1000
TEMPERATURE_CELLS = 2_000_000
PREDICT_BLOCK_CELLS = 4_000_000  # rows x (columns + classes) predicted at once
SAMPLE_ROWS_PER_SECOND = 2000  # rows the search can afford per second of budget on 2 cores
MIN_SAMPLE_ROWS = 50_000
SAMPLE_CLASS_ROWS = 20  # rows a class keeps in the sample, at least (all it has if fewer)
FINAL_FOREST_MEMORY = 64e6  # bytes of the final model's forests (refit or bags, in scikit-learn's format), shared by weight
KEPT_BAG_MEMORY = 112e6  # bytes of the final model's other bags, shared by weight, over (folds - 1)
FOREST_ALONE_TREES = 50  # trees, at least, of a forest that is the whole ensemble


class AutoML(BaseEstimator):
    """Automated machine learning for tables: give it data and a time budget.

    Parameters
    ----------
    time_budget : float or None, seconds for the whole fit (returns within it + 10 %).
        None runs without a clock: then `max_trials` (or the default portfolio) bounds
        the work, and two fits with the same seed give the same model.
    task : "auto", "binary", "multiclass" or "regression".
    metric : "auto" (ROC AUC, log loss, R2) or a name from `automl.engine.METRICS`.
    seed : int, for every random choice.
    n_jobs : threads for model fitting; -1 uses every core available.
    max_trials : int or None, models to evaluate besides the constant baseline.
    device : "auto", "cpu" or "cuda" (xgboost on the GPU).
    callback : callable receiving one dict per event (start, trial, ensemble, done,
        cancelled) with enough timing for a progress bar and an ETA.
    cv : "auto", a number of folds (int >= 2) or a holdout fraction (float < 1).
    ensemble_size : steps of greedy ensemble selection (0 keeps the best model alone).
    refit : "auto", True or False. True: after the search, fit each ensemble member
        once more on all rows (sized by its fold models), when the budget allows:
        predictions k times faster and a model k times smaller than the bag of k fold
        models. False keeps the bag. "auto" refits, except log loss on fewer than
        REFIT_MIN_ROWS_LOG_LOSS rows, where bagging's smoother probabilities were
        worth more (benchmark: glass and horse colic lost 0.04 of log loss refit,
        while wine and letter gained).
    """

    def __init__(self, time_budget=60, task="auto", metric="auto", seed=0, n_jobs=-1, max_trials=None,
                 device="auto", callback=None, cv="auto", ensemble_size=25, refit="auto"):
        self.time_budget = time_budget
        self.task = task
        self.metric = metric
        self.seed = seed
        self.n_jobs = n_jobs
        self.max_trials = max_trials
        self.device = device
        self.callback = callback
        self.cv = cv
        self.ensemble_size = ensemble_size
        self.refit = refit

    # --- control ----------------------------------------------------------------
    def cancel(self):
        """Ask a running fit to stop soon and keep the best model so far (thread-safe)."""
        self._cancel_event().set()

    def _cancel_event(self) -> threading.Event:
        if "_cancel" not in self.__dict__:
            self.__dict__["_cancel"] = threading.Event()
        return self.__dict__["_cancel"]

    def _emit(self, event: str, **data):
        if self.callback is not None:
            self.callback({"event": event, "time_budget": self.time_budget, "max_trials": self.max_trials, **data})

    # --- fit --------------------------------------------------------------------
    def _check_params(self):
        budget = self.time_budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 1 <= budget <= MAX_BUDGET
        ):
            raise ParameterError("bad_budget", value=budget, low=1, high=MAX_BUDGET)
        if self.max_trials is not None and (
            isinstance(self.max_trials, bool) or not isinstance(self.max_trials, (int, np.integer)) or self.max_trials < 1
        ):
            raise ParameterError("bad_max_trials", value=self.max_trials)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ParameterError("bad_device", value=self.device)
        if self.refit not in ("auto", True, False):
            raise ParameterError("bad_refit", value=self.refit)

    def _resolve_metric(self, task):
        if self.metric == "auto":
            return METRICS[DEFAULT_METRIC[task]]
        if self.metric not in METRICS or task not in METRICS[self.metric].tasks:
            raise ParameterError("bad_metric", value=self.metric, task=task, choices=", ".join(metrics_for(task)))
        return METRICS[self.metric]

    def fit(self, X, y=None, *, target=None):
        started = time.monotonic()
        self._check_params()
        cancel = self._cancel_event()
        device = resolve_device(self.device)
        X, y = checks.split_target(X, y, target)
        X, y, task, guards = checks.check_target(X, y, self.task)
        metric = self._resolve_metric(task)
        kinds, column_guards = checks.infer_column_kinds(X)
        checks.check_target_copies(X[[c for c, k in kinds.items() if k != "ignored"]], y, task)

        self.target_ = y.name
        self.task_, self.metric_, self.device_ = task, metric.name, device
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.feature_kinds_ = kinds
        self.input_schema_ = {c: {"kind": kinds[c], "dtype": str(X[c].dtype)} for c in X.columns}
        if task == "regression":
            self.classes_ = None
            y_encoded = y.to_numpy(dtype=float)
        else:
            self.classes_, y_encoded = np.unique(y.to_numpy(), return_inverse=True)
        X = coerce(X, kinds).reset_index(drop=True)
        guards += column_guards + checks.leakage_guards(X, y_encoded, kinds, task, self.seed)
        X, y_encoded, sample_guards = self._subsample(X, y_encoded, task)
        guards += sample_guards

        limit_malloc_arenas()  # before the fit's threads start
        n_jobs = self.n_jobs if self.n_jobs and self.n_jobs > 0 else len(os.sched_getaffinity(0))
        ctx = Context(task, 0 if self.classes_ is None else len(self.classes_), self.seed, n_jobs, device)
        budget = self.time_budget
        max_trials = self.max_trials
        if budget is None and max_trials is None:
            max_trials = 9  # the default portfolio, once
        deadline = started + SEARCH_SHARE * budget if budget is not None else None
        splits = make_splits(y_encoded, task, self.seed, self.cv, n_columns=sum(k != "ignored" for k in kinds.values()))
        folds = Folds(X, y_encoded, splits, kinds, task, self.seed)
        self._emit("start", n_trials=0, elapsed=time.monotonic() - started,
                   remaining=None if budget is None else budget - (time.monotonic() - started),
                   task=task, metric=metric.name, n_rows=len(X), n_folds=len(splits))

        def on_trial(trial, search):
            best = search.best()
            elapsed = time.monotonic() - started
            self._emit("trial", n_trials=len(search.trials), model=trial.name, score=trial.score,
                       best_score=best.score, best_model=best.name, elapsed=elapsed,
                       remaining=None if budget is None else max(0.0, budget - elapsed))

        search = Search(folds, metric, ctx, deadline=deadline, max_trials=max_trials,
                        cancelled=cancel.is_set, on_trial=on_trial)
        try:
            with threadpool_limits(n_jobs):  # OpenMP/BLAS inside sklearn follow n_jobs too
                search.run()
                folds.release()
                if search.stopped_by == "budget" and len(search.trials) < 4:
                    guards.append(checks.guardrail("guard_budget_short", count=len(search.trials)))
                self._finish(search, folds, metric, ctx, guards, started)
        finally:
            search.store.close()
        if cancel.is_set():
            self._emit("cancelled", n_trials=len(search.trials), elapsed=time.monotonic() - started,
                       remaining=0.0, best_score=self.best_score_, best_model=self.best_model_)
            cancel.clear()
        self._emit("done", n_trials=len(search.trials), elapsed=time.monotonic() - started, remaining=0.0,
                   best_score=self.best_score_, best_model=self.best_model_)
        return self

    def _subsample(self, X, y, task):
        """Cap the rows the search trains on, in proportion to the budget: a model
        that sees a stratified sample and finishes beats one that sees everything
        and does not."""
        limit = SAMPLE_ROWS_PER_SECOND * (self.time_budget or np.inf)
        limit = max(MIN_SAMPLE_ROWS, limit)
        if len(X) <= limit:
            return X, y, []
        rows, _ = train_test_split(np.arange(len(X)), train_size=int(limit), random_state=self.seed,
                                   stratify=y if task != "regression" else None)
        if task != "regression":  # a stratified share, rounded: 2 rows of 300,000 sampled to 120,000 can be none
            rows = with_every_class(rows, np.arange(len(y)), y, SAMPLE_CLASS_ROWS, np.random.default_rng(self.seed))
        rows = np.sort(rows)
        guard = checks.guardrail("guard_subsampled", rows=len(X), sample=len(rows))
        return X.iloc[rows].reset_index(drop=True), y[rows], [guard]

    def _finish(self, search, folds, metric, ctx, guards, started):
        trials = [t for t in search.trials if t.models_path is not None and t.candidate.family != "baseline"]
        trials = trials or [search.trials[0]]  # nothing but the baseline finished
        weights = greedy_selection([t.oof for t in trials], folds.y_val, metric, self.ensemble_size,
                                   self._deadline(started, ENSEMBLE_SHARE)) \
            if self.ensemble_size else np.eye(len(trials))[np.argmax([t.gain for t in trials])]
        members = [(t, float(w)) for t, w in zip(trials, weights) if w > 0]
        self._preprocessors = folds.preprocessors
        self._context = Context(ctx.task, ctx.n_classes, ctx.seed, ctx.n_jobs, ctx.device)
        oof = sum(w * search.store.get_predictions(t.models_path) for t, w in members)
        self.temperature_ = 1.0
        if ctx.task != "regression" and metric.name == "log_loss":
            self.temperature_ = fit_temperature(oof, folds.y_val)
            oof = scale_temperature(oof, self.temperature_)
        self.ensemble_ = [{"model": t.name, "family": t.candidate.family, "weight": float(w)} for t, w in members]
        self.best_score_ = metric.score(folds.y_val, oof)
        self.best_model_ = "ensemble" if len(members) > 1 else members[0][0].name
        self.validation_scores_ = report(ctx.task, folds.y_val, oof)
        self.leaderboard_ = self._leaderboard(search.trials, members, metric)
        self._emit("ensemble", n_trials=len(search.trials), elapsed=time.monotonic() - started,
                   best_score=self.best_score_, best_model=self.best_model_,
                   remaining=None if self.time_budget is None else max(0.0, self.time_budget - (time.monotonic() - started)))
        self.plot_data_ = self._plot_data(folds.y_val, oof)
        # The importance before the refit: its fold models and the refit models are
        # then never in memory together, and the peak is the larger phase, not the sum.
        self.feature_importance_ = self._permutation_importance(members, folds, metric, search.store,
                                                                self._deadline(started, IMPORTANCE_SHARE),
                                                                self._deadline(started, REFIT_SHARE))
        self._full, self._full_preprocessors = {}, {}
        if self._should_refit(metric, len(folds.y)) and not self._cancel_event().is_set():  # cancelled: ends now
            self._refit_members(members, folds, ctx, self._deadline(started, REFIT_SHARE))
        # The model keeps what it predicts with: the refit members, and the bags of the others.
        self._members = [(t.candidate, None if i in self._full else self._kept_bag(t, w, search.store, ctx), w)
                         for i, (t, w) in enumerate(members)]
        longest = max((len(bag) for _, bag, _ in self._members if bag is not None), default=0)
        self._preprocessors = self._preprocessors[:longest]  # the folds no bag kept predict nothing
        release_memory()
        self.guardrails_ = guards
        self.n_trials_ = len(search.trials)
        self.failures_ = search.failures
        self.stopped_by_ = search.stopped_by or "completed"
        self.fit_time_ = time.monotonic() - started

    def _should_refit(self, metric, n_rows) -> bool:
        if self.refit == "auto":
            return not (metric.name == "log_loss" and n_rows < REFIT_MIN_ROWS_LOG_LOSS)
        return bool(self.refit)

    def _deadline(self, started, share):
        return None if self.time_budget is None else started + share * self.time_budget

    def _refit_members(self, members, folds, ctx, deadline):
        """One model per member on all rows, heaviest weight first, while the budget
        allows; a member whose refit cannot fit keeps its bag. Validation scores stay
        those of the bag (out-of-fold): the refit sees the same data, all at once.
        A forest gets its weight's share of FINAL_FOREST_MEMORY (the weights sum to
        one; _final_forest_trees)."""
        n_folds = len(folds.splits)
        full_ctx = Context(ctx.task, ctx.n_classes, ctx.seed, ctx.n_jobs, ctx.device, n_folds=1, deadline=deadline,
                           should_stop=lambda: deadline is not None and time.monotonic() >= deadline)
        order = sorted(range(len(members)), key=lambda i: -members[i][1])
        for i in order:
            trial, weight = members[i]
            estimate = 1.3 * trial.fit_time / n_folds
            if deadline is not None and time.monotonic() + estimate > deadline:
                continue
            flavour = trial.candidate.flavour
            if flavour not in self._full_preprocessors:
                pre = build_preprocessor(flavour, self.feature_kinds_, ctx.task, ctx.seed)
                matrix = pre.fit_transform(folds.X, folds.y)
                mask = categorical_mask(pre) if flavour == "tree" else None
                self._full_preprocessors[flavour] = (pre, matrix, mask)
            pre, matrix, mask = self._full_preprocessors[flavour]
            params = dict(trial.refit.params)
            if trial.refit.tree_bytes:
                params["n_estimators"] = min(params["n_estimators"], _final_forest_trees(weight, trial.refit.tree_bytes))
            refit = Candidate(trial.name, trial.candidate.family, params)
            try:
                model = fit_model(refit, replace(full_ctx, categorical=mask), matrix, folds.y, None, None)
            except Exception:  # noqa: BLE001 - the bag is still there and still good
                continue
            if deadline is None or time.monotonic() < deadline:  # cut short by the clock: the bag is better
                self._full[i] = model
            del model
            release_memory()  # the training's caches: the next refit starts from what is kept
        self._full_preprocessors = {f: pre for f, (pre, _, _) in self._full_preprocessors.items()}
        release_memory()

    def _kept_bag(self, trial, weight, store, ctx):
        """A member's fold models, loaded one at a time. A forest's bag is cut to its
        weight's share of FINAL_FOREST_MEMORY, as a refit forest is: at a 10 s budget
        on horse colic, an extra-trees bag of weight 0.04 took 21 of the model's
        32 MB. Its predictions then come from fewer trees than its out-of-fold
        scores did, a difference its weight scales down. Another bag keeps as
        many of its first folds as its share of KEPT_BAG_MEMORY holds
        (_kept_folds)."""
        n_folds = len(self._preprocessors)
        if trial.candidate.family not in FORESTS:
            sizes = [store.size(trial.models_path, f) for f in range(n_folds)]
            return [store.get(trial.models_path, f) for f in range(_kept_folds(weight, sizes))]
        bag = []
        for f in range(n_folds):
            forest = store.get(trial.models_path, f)
            bag.append(forest.head(-(-_final_forest_trees(weight, tree_bytes([forest], ctx)) // n_folds)))
        return bag

    def _leaderboard(self, trials, members, metric):
        weight = {t.name: w for t, w in members}
        rows = [
            {"model": t.name, "family": t.candidate.family, "score": t.score, "fit_time": t.fit_time,
             "predict_time": t.predict_time, "weight": weight.get(t.name, 0.0), "params": dict(t.candidate.params)}
            for t in trials
        ]
        if len(members) > 1:
            rows.append({"model": "ensemble", "family": "ensemble", "score": self.best_score_,
                         "fit_time": sum(t.fit_time for t, _ in members),
                         "predict_time": sum(t.predict_time for t, _ in members), "weight": 1.0,
                         "params": {t.name: round(w, 4) for t, w in members}})
        board = pd.DataFrame(rows)
        board = board.sort_values("score", ascending=not metric.greater_is_better, kind="stable")
        board.insert(0, "rank", np.arange(1, len(board) + 1))
        return board.reset_index(drop=True)

    def _plot_data(self, y, oof):
        rng = np.random.default_rng(self.seed)
        if self.task_ == "regression":
            rows = rng.choice(len(y), size=min(len(y), PLOT_POINTS), replace=False)
            return {"residuals": {"actual": y[rows].tolist(), "predicted": oof[rows].tolist(),
                                  "residual": (y[rows] - oof[rows]).tolist()}}
        labels = [str(c) for c in self.classes_]
        data = {"confusion_matrix": {"labels": labels,
                                     "matrix": confusion_matrix(y, oof.argmax(axis=1), labels=range(len(labels))).tolist()}}
        roc = {}
        for k in ([1] if len(labels) == 2 else range(min(len(labels), 20))):
            fpr, tpr, _ = roc_curve(y == k, oof[:, k])
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 101)).astype(int))
            roc[labels[k]] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
        data["roc"] = roc
        return data

    def _permutation_importance(self, members, folds, metric, store, deadline, first_deadline, repeats=3):
        """Drop of the validation score when one input column is shuffled, on the
        out-of-fold rows of each fold's own models: what the model relies on. The
        folds go one at a time, so one fold's models are in memory, not the bags.

        Each shuffled column costs a prediction of the sample at the data's full
        width, so the work grows with the square of the width: 2,000 columns took
        43 s and 2.5 GB in one block. A repeat predicts at most IMPORTANCE_CELLS
        cells, in blocks of IMPORTANCE_BLOCK_CELLS, read and predicted; on data too wide for every
        column to get IMPORTANCE_MIN_ROWS rows in that, the columns that predict
        the target best on their own are the ones measured, and the table holds
        only those. Further repeats end by `deadline`; the rows are as many as
        the first repeat can predict by `first_deadline`, at the pace the
        members predicted their validation rows: on 355 classes, a repeat of
        2,000 rows took 6 s, and the fit ended past its budget."""
        rng = np.random.default_rng(self.seed)
        columns = [c for c, k in self.feature_kinds_.items() if k != "ignored"]
        width = folds.X.shape[1]
        most = max(1, IMPORTANCE_CELLS // (IMPORTANCE_MIN_ROWS * width))
        n_rows = min(IMPORTANCE_ROWS, max(IMPORTANCE_MIN_ROWS, IMPORTANCE_CELLS // (min(len(columns), most) * width)))
        if first_deadline is not None:  # the first repeat, at the members' pace
            row_seconds = sum(t.predict_time for t, _ in members) / 1000 * min(len(columns), most)
            affordable = (first_deadline - time.monotonic()) / max(row_seconds, 1e-9)
            n_rows = int(np.clip(affordable, IMPORTANCE_MIN_ROWS, n_rows))
        per_fold = max(1, n_rows // len(folds.splits))
        samples = [rng.choice(val, size=min(len(val), per_fold), replace=False) for _, val in folds.splits]
        if self.task_ != "regression":  # on 0.2 % positives, 100 rows held none: ROC AUC has no value then
            samples = [with_every_class(s, val, folds.y, 1, rng) for s, (_, val) in zip(samples, folds.splits)]
        y = np.concatenate([folds.y[s] for s in samples])
        if len(columns) > most:
            relevance = checks.univariate_scores(folds.X.iloc[np.concatenate(samples)], y, columns, self.task_)
            columns = sorted(columns, key=lambda c: -relevance[c])[:most]
        base, shuffled = [], [[[] for _ in columns] for _ in range(repeats)]
        started = time.monotonic()
        for f, s in enumerate(samples):
            models = [(t.candidate, store.get(t.models_path, f), w) for t, w in members]
            rows = folds.X.iloc[s]
            base.append(metric.compact(folds.y[s], self._predict_bagged(models, folds.preprocessors[f], rows)))
            # cells in and out: with 200 classes, a block's predictions outweigh its data
            step = max(1, IMPORTANCE_BLOCK_CELLS // (len(rows) * (width + self._context.n_classes)))
            for r in range(repeats):
                if f == 0 and r == 1 and deadline is not None:  # fold 0's first repeat tells the cost of one
                    cost = time.monotonic() - started
                    affordable = int(((deadline - time.monotonic()) / max(cost, 1e-9) + 1) / len(samples))
                    repeats = max(1, min(repeats, affordable))
                if r >= repeats:
                    break
                shuffle = np.random.default_rng([self.seed, r, f])
                permuted = [shuffle.permutation(rows[c].to_numpy()) for c in columns]
                for first in range(0, len(columns), step):
                    chunk = columns[first:first + step]
                    block = pd.concat([rows] * len(chunk), ignore_index=True)
                    for j, c in enumerate(chunk):
                        part = slice(j * len(rows), (j + 1) * len(rows))
                        block.loc[block.index[part], c] = permuted[first + j]
                    pred = self._predict_bagged(models, folds.preprocessors[f], block)
                    for j in range(len(chunk)):
                        part = pred[j * len(rows):(j + 1) * len(rows)].copy()  # a view would hold all of pred
                        shuffled[r][first + j].append(metric.compact(folds.y[s], part))
            del models
            release_memory()
        base_gain = metric.gain(metric.score_compact(y, np.concatenate(base)))
        drops = np.asarray([[base_gain - metric.gain(metric.score_compact(y, np.concatenate(p))) for p in shuffled[r]]
                            for r in range(repeats)])
        table = pd.DataFrame({"feature": columns, "importance": drops.mean(axis=0), "std": drops.std(axis=0)})
        return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)

    # --- predict ----------------------------------------------------------------
    def _check_fitted(self):
        if "_members" not in self.__dict__:
            raise NotFittedError("not_fitted")

    def _predict_fold(self, f, X):
        """The bagged members' predictions with fold `f`'s models, each weighted
        so that a member's folds add up to its weight: a bag may keep fewer
        folds than there are (_kept_folds)."""
        models = [(c, bag[f], w / len(bag)) for c, bag, w in self._members if bag is not None and f < len(bag)]
        return self._predict_bagged(models, self._preprocessors[f], X)

    def _predict_bagged(self, models, preprocessors, X):
        """Weighted sum of one fold's models (candidate, model, weight), each on its flavour's matrix."""
        matrices = {}
        total = 0.0
        for candidate, model, weight in models:
            flavour = candidate.flavour
            if flavour not in matrices:
                matrices[flavour] = transform_frame(preprocessors[flavour], X)
            serving_threads(model, len(X), self._context.n_jobs)
            total = total + weight * predict_matrix(model, matrices[flavour], self._context)
        return total

    def _ensemble_predict(self, X):
        self._check_fitted()
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(np.asarray(X), columns=self.feature_names_in_)
        X = X.copy()
        X.columns = [str(c) for c in X.columns]
        X = coerce(X, self.feature_kinds_).reset_index(drop=True)
        total = 0.0
        matrices = {}
        for i, model in self.__dict__.get("_full", {}).items():
            candidate, _, weight = self._members[i]
            if candidate.flavour not in matrices:
                matrices[candidate.flavour] = transform_frame(self._full_preprocessors[candidate.flavour], X)
            serving_threads(model, len(X), self._context.n_jobs)
            total = total + weight * predict_matrix(model, matrices[candidate.flavour], self._context)
        return total + sum(self._predict_fold(f, X) for f in range(len(self._preprocessors)))  # no bag: no folds

    def _by_blocks(self, X, predict):
        """`predict` on blocks of rows: a member's work arrays are rows x classes,
        a few of them at a time. With 355 classes, 25,000 rows at once peaked
        at +430 MB. Callers check that the model is fitted."""
        n_classes = 1 if self.classes_ is None else len(self.classes_)
        return in_row_blocks(X, max(1, PREDICT_BLOCK_CELLS // (self.n_features_in_ + n_classes)), predict)

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        if self.task_ == "regression":
            raise ParameterError("no_proba", task=self.task_)

        def proba(X):
            total = self._ensemble_predict(X)
            return scale_temperature(total / total.sum(axis=1, keepdims=True), self.temperature_)

        return self._by_blocks(X, proba)

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        if self.task_ == "regression":
            return self._by_blocks(X, self._ensemble_predict)
        return self._by_blocks(X, lambda X: self.classes_[self._ensemble_predict(X).argmax(axis=1)])

    # --- persistence --------------------------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_cancel", None)
        state["callback"] = None  # functions of the caller's process do not travel
        return state

    def save(self, path):
        from .persistence import save

        self._check_fitted()
        return save(self, path)

    @classmethod
    def load(cls, path):
        from .persistence import load

        return load(path)


def with_every_class(rows, pool, y, least, rng) -> np.ndarray:
    """`rows` (drawn from `pool`) and more rows of `pool` at random, so that every
    class of `pool` has `least` rows among them, or all it has there."""
    k = int(y.max()) + 1
    short = np.minimum(np.bincount(y[pool], minlength=k), least) - np.bincount(y[rows], minlength=k)
    extra = [rng.choice(np.setdiff1d(pool[y[pool] == c], rows), size=n, replace=False)
             for c, n in enumerate(short) if n > 0]
    return np.concatenate([rows, *extra]).astype(int)


def _final_forest_trees(weight: float, bytes_per_tree: float) -> int:
    """Trees of a final forest: its weight's share of FINAL_FOREST_MEMORY, and at
    least enough that its noise in the prediction stays that of a forest of
    FOREST_ALONE_TREES alone. A forest's noise falls as one over the root of its
    trees and reaches the prediction scaled by its weight, so a forest of weight
    w needs w² as many: a fixed floor of 50 kept 81 MB of extra trees of weight
    0.04 on letter, 1.6 MB a tree."""
    floor = math.ceil(FOREST_ALONE_TREES * weight**2)
    return max(1, floor, int(weight * FINAL_FOREST_MEMORY / bytes_per_tree))


def _kept_folds(weight: float, fold_bytes: list[int]) -> int:
    """Fold models a bag other than a forest's keeps (the first ones): its
    weight's share of KEPT_BAG_MEMORY over the folds but one, and at least
    enough that its noise in the prediction stays that of the whole bag alone,
    as _final_forest_trees reasons for trees. On glass an xgboost bag of
    weight 0.1 took 20 MB (8 folds of 600 rounds of 6 classes) of a final
    model that held 50 MB, for 214 rows; on wine a HistGradientBoosting bag of
    weight 0.04 took 11 MB.

    Why over the folds but one: the fold models of k folds share (k-2)/(k-1)
    of their training rows, so each adds less to the others the more folds
    there are. Over eight fits of glass and horse colic (8 folds), 16 MB
    (112 / 7) instead of 64 changed the test log loss by +0.0004 on average (-0.0024 to
    +0.0104) and made glass's final models 4-11 MB smaller (13-19 MB before);
    on letter (3 folds), keeping two of a HistGradientBoosting bag's three
    folds cost 5 % of log loss (0.118 to 0.124)."""
    n_folds = len(fold_bytes)
    floor = math.ceil(n_folds * weight**2)
    share = weight * KEPT_BAG_MEMORY / max(n_folds - 1, 1)
    return min(n_folds, max(1, floor, int(share / np.mean(fold_bytes))))


def scale_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, 1e-15, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017) of the ensemble's out-of-fold
    probabilities: one parameter, so it fixes over- or under-confidence for log
    loss without changing which class wins. One parameter needs few rows: on
    more than TEMPERATURE_CELLS cells it is fitted on evenly spaced rows (the
    whole of 200 classes took 3 s)."""
    from scipy.optimize import minimize_scalar

    if proba.size > TEMPERATURE_CELLS:
        rows = np.linspace(0, len(y) - 1, TEMPERATURE_CELLS // proba.shape[1]).astype(int)
        proba, y = proba[rows], y[rows]

    def loss(log_t):
        p = scale_temperature(proba, float(np.exp(log_t)))
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, None)))

    best = minimize_scalar(loss, bounds=(-1.5, 1.5), method="bounded")
    return float(np.exp(best.x)) if best.fun < loss(0.0) - 1e-4 else 1.0


def cuda_status() -> tuple[bool, str]:
    """Whether xgboost can train on a CUDA GPU here, and why not."""
    import xgboost

    if not xgboost.build_info().get("USE_CUDA"):
        return False, "xgboost is the CPU build; install automl-hub[gpu]"
    if not any(os.path.exists(f"/dev/nvidia{i}") for i in range(8)):
        return False, "no NVIDIA device"
    return True, ""


def resolve_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    available, reason = cuda_status()
    if device == "cuda" and not available:
        raise ParameterError("cuda_unavailable", reason=reason)
    return "cuda" if available else "cpu"
