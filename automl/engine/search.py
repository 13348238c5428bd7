"""The search: folds, trials, and the loop that spends the budget.

Order of work, for accuracy per second: a constant baseline (so there is always
a model), then the portfolio of strong defaults, then Optuna's TPE on the
families that did best. Each candidate is fitted on every fold (bagging): the
out-of-fold predictions that the ensemble is built on are honest, and each trial
records how to refit it on all rows (`RefitPlan`) without reloading its bag.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, replace

import numpy as np
import optuna
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from .malloc import release_memory
from .models import FAMILIES, FORESTS, Candidate, Context, RefitPlan, baseline, fit_fold, fold_summary, portfolio, refit_plan
from .metrics import Metric
from .persistence import dump_without_memo
from .preprocessing import build_preprocessor, categorical_mask

KEEP_MODELS = 12  # trials whose fold models are kept (on disk) as ensemble candidates
KEPT_OOF_MEMORY = 64e6  # bytes of out-of-fold predictions the candidates may hold; fewer are kept past it
MIN_KEEP_MODELS = 4
WIDE_CELLS = 2_000_000  # rows x columns past which the search uses three folds
PORTFOLIO_SHARE = 1 / 3  # of the remaining time, at most, for one default configuration
TUNING_SHARE = 1 / 2

# Values of the search-space parameters that a family's constructor uses when a
# default configuration leaves them out, so defaults can seed the optimizer.
SPACE_DEFAULTS = {
    "xgboost": {"min_child_weight": 1.0, "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1.0, "reg_alpha": 1e-3},
    "hist_gb": {"max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 1e-3, "max_features": 1.0},
    "extra_trees": {"max_features": 0.5, "min_samples_leaf": 1},
    "random_forest": {"max_features": 0.5, "min_samples_leaf": 1},
    "linear": {"C": 1.0},
}


def make_splits(y: np.ndarray, task: str, seed: int, cv="auto", n_columns: int = 1):
    """CV for small and medium data, a holdout for large data: the number of fits
    per candidate is what the budget pays for, and a fit's cost grows with the
    columns as well as the rows. On 600 rows of 10,000 columns, eight folds left
    a 60 s search one linear model: a boosted model's eight fits did not end."""
    n = len(y)
    if cv == "auto":
        cv = 8 if n < 2_000 else 5 if n < 12_000 else 3 if n < 60_000 else 0.2
        if n * n_columns > WIDE_CELLS and not isinstance(cv, float):
            cv = 3
    classification = task != "regression"
    if isinstance(cv, float):
        index = np.arange(n)
        train, val = train_test_split(index, test_size=cv, random_state=seed, stratify=y if classification else None)
        return [(np.sort(train), np.sort(val))]
    if not classification:
        return list(KFold(cv, shuffle=True, random_state=seed).split(np.zeros(n)))
    # A class with fewer rows than folds leaves some validation folds without it,
    # and that is all: the stratified splitter puts its rows in distinct folds, so
    # every fold still trains on it. Fewer folds for it would cost every model:
    # two rows of one class took a 300-row fit from eight folds to two.
    cv = max(2, min(cv, int(np.bincount(y).max())))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(np.zeros(n), y))


class Folds:
    """Per-fold preprocessed matrices, fitted on the fold's training rows only and
    computed once per flavour: every candidate of that flavour reuses them."""

    def __init__(self, X, y, splits, kinds, task, seed):
        self.X, self.y, self.splits = X, y, splits
        self.kinds, self.task, self.seed = kinds, task, seed
        self.val_rows = np.concatenate([val for _, val in splits])
        self.y_val = y[self.val_rows]
        self.preprocessors = [dict() for _ in splits]
        self._cache = {}

    def __len__(self):
        return len(self.splits)

    def get(self, flavour: str, f: int):
        key = (flavour, f)
        if key not in self._cache:
            train, val = self.splits[f]
            pre = build_preprocessor(flavour, self.kinds, self.task, self.seed)
            X_train = pre.fit_transform(self.X.iloc[train], self.y[train])
            X_val = pre.transform(self.X.iloc[val])
            mask = categorical_mask(pre) if flavour == "tree" else None
            self.preprocessors[f][flavour] = pre
            self._cache[key] = (X_train, self.y[train], X_val, self.y[val], mask)
        return self._cache[key]

    def release(self):
        self._cache.clear()


class ModelStore:
    """Fold models wait on disk between their evaluation and the ensemble, so the
    search holds one candidate's models in memory at a time: deep forests bagged
    over five folds would otherwise dominate peak memory. One file per fold, so
    that the end of the fit can go through the ensemble one fold at a time."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="automl-models-")
        self._count = 0

    def new(self) -> str:
        """A place for one candidate's fold models."""
        self._count += 1
        path = os.path.join(self.directory, str(self._count))
        os.mkdir(path)
        return path

    @staticmethod
    def put(path: str, fold: int, model) -> None:
        with open(os.path.join(path, f"{fold}.pkl"), "wb") as handle:
            dump_without_memo(model, handle)

    @staticmethod
    def put_predictions(path: str, oof: np.ndarray) -> None:
        np.save(os.path.join(path, "oof.npy"), oof)

    @staticmethod
    def get_predictions(path: str) -> np.ndarray:
        return np.load(os.path.join(path, "oof.npy"))

    @staticmethod
    def size(path: str, fold: int) -> int:
        """Bytes of a stored fold model: about what it takes in memory."""
        return os.path.getsize(os.path.join(path, f"{fold}.pkl"))

    @staticmethod
    def get(path: str, fold: int):
        with open(os.path.join(path, f"{fold}.pkl"), "rb") as handle:
            return pickle.load(handle)

    @staticmethod
    def drop(path: str):
        shutil.rmtree(path)

    def close(self):
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Trial:
    candidate: Candidate
    # Out-of-fold predictions as the metric reads them (Metric.compact): what
    # ensemble selection needs. The whole ones wait in the store, for the members.
    oof: np.ndarray | None  # None once pruned, with models_path
    score: float
    gain: float
    fit_time: float
    predict_time: float  # seconds per 1000 rows
    models_path: str | None  # in the ModelStore; None once pruned (_keep_best_models)
    refit: RefitPlan

    @property
    def name(self):
        return self.candidate.name


class Search:
    def __init__(self, folds: Folds, metric: Metric, ctx: Context, *, deadline=None, max_trials=None,
                 cancelled=lambda: False, on_trial=lambda trial, search: None):
        self.folds, self.metric, self.ctx = folds, metric, ctx
        self.deadline, self.max_trials = deadline, max_trials
        self.cancelled, self.on_trial = cancelled, on_trial
        self.trials: list[Trial] = []
        self.store = ModelStore()
        self.failures: list[dict] = []  # models that raised, with the reason
        self.n_tried = 0  # the baseline does not count against max_trials
        self.seen: dict[tuple, float] = {}  # config_key -> gain of the configurations evaluated
        self.stopped_by = None
        self.ctx = replace(ctx, should_stop=self.should_stop, n_folds=len(folds))

    # --- clock ------------------------------------------------------------------
    def remaining(self):
        return None if self.deadline is None else self.deadline - time.monotonic()

    def should_stop(self) -> bool:
        if self.cancelled():
            self.stopped_by = "cancelled"
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped_by = self.stopped_by or "budget"
            return True
        return False

    def exhausted(self) -> bool:
        if self.max_trials is not None and self.n_tried >= self.max_trials:
            return True
        return self.should_stop()

    def affordable(self, family: str) -> bool:
        """Skip a family whose earlier fits show it cannot finish in what is left."""
        remaining = self.remaining()
        same = [t.fit_time for t in self.trials if t.candidate.family == family]
        return remaining is None or not same or min(same) <= remaining

    def allowance(self, share: float) -> float | None:
        """Seconds one candidate may take: a share of what is left, so that no single
        model eats the budget. Iterative models stop growing when their share is spent
        and still give a complete (smaller) model."""
        remaining = self.remaining()
        return None if remaining is None else max(0.0, remaining * share)

    def evaluate(self, candidate: Candidate, share: float = 1.0) -> Trial | None:
        """Fit and predict each fold; each fold model goes to the store once its
        out-of-fold predictions are made, so one is in memory at a time."""
        path = self.store.new()
        trial = None
        try:
            trial = self._evaluate(candidate, share, path)
        finally:
            if trial is None:
                self.store.drop(path)
            release_memory()
        if trial is None:
            return None
        self.trials.append(trial)
        self.seen[self.config_key(candidate)] = trial.gain
        self._keep_best_models()
        self.on_trial(trial, self)
        return trial

    def _evaluate(self, candidate: Candidate, share: float, path: str) -> Trial | None:
        predictions, summaries = [], []
        fit_time = predict_time = 0.0
        allowance = self.allowance(share)
        started = time.monotonic()
        for f in range(len(self.folds)):
            remaining = self.remaining()
            if f and remaining is not None and remaining < fit_time / f and candidate.family != "baseline":
                return None  # the next fold would end past the deadline
            X_train, y_train, X_val, y_val, mask = self.folds.get(candidate.flavour, f)
            ctx = replace(self.ctx, categorical=mask)
            if allowance is not None:
                fold_deadline = started + allowance * (f + 1) / len(self.folds)
                ctx = replace(ctx, deadline=fold_deadline,
                              should_stop=lambda: self.should_stop() or time.monotonic() >= fold_deadline)
            start = time.perf_counter()
            try:
                model, prediction, predict_s = fit_fold(candidate, ctx, X_train, y_train, X_val, y_val)
            except Exception as error:  # noqa: BLE001 - one failing model must not fail the fit
                self.failures.append({"model": candidate.name, "error": f"{type(error).__name__}: {error}"})
                return None
            fit_time += time.perf_counter() - start - predict_s
            predict_time += predict_s
            if self.should_stop() and f < len(self.folds) - 1 and candidate.family != "baseline":
                return None  # cut before all folds: its out-of-fold predictions are incomplete
            predictions.append(prediction)
            summaries.append(fold_summary(candidate, model, ctx))
            self.store.put(path, f, model)
            del model
            release_memory()
        oof = np.concatenate(predictions)
        score = self.metric.score(self.folds.y_val, oof)
        if not np.isfinite(score):
            return None
        if oof.ndim == 2:  # probabilities: single precision is plenty, and 200 classes take 36 MB a trial in double
            oof = oof.astype(np.float32)
        self.store.put_predictions(path, oof)
        row_ratio = len(self.folds.y) / len(self.folds.splits[0][0])
        return Trial(candidate, self.metric.compact(self.folds.y_val, oof), score, self.metric.gain(score), fit_time,
                     1000 * predict_time / max(len(oof), 1), path, refit_plan(candidate, summaries, row_ratio))

    def _keep_best_models(self):
        """Only the best trials stay ensemble candidates; the others lose their
        fold models and their out-of-fold predictions, which on adult (36,000
        rows) take 0.6 MB a trial. Where the metric reads all of a row's
        classes, 200 of them take 18 MB a trial: there fewer stay, as many as
        KEPT_OOF_MEMORY holds. Keeping only the best four by log loss, instead
        of twelve, cost 0.19 of log loss on 200 classes: the blend wants
        different models more than the best ones.

        For the same reason the best of each family stays too, on top of the
        twelve as far as KEPT_OOF_MEMORY allows: on small data the tuned family's
        trials fill the twelve, the best of them by the luck of its folds (pima,
        576 rows: 46 xgboost trials, the best 0.865 of out-of-fold ROC AUC and
        0.80 on the test rows, where logistic regression had 0.835 and 0.81).
        Over 18 fits of nine small data sets (60 s, seeds 1 and 2), the test
        score rose by 0.7 % on average, 0.3 % without glass's +7 %: 9 better,
        2 worse, 7 within 0.1 %."""
        ranked = sorted(self.trials, key=lambda t: -t.gain)
        oof_bytes = max((t.oof.nbytes for t in ranked if t.oof is not None), default=1)
        affordable = int(KEPT_OOF_MEMORY // oof_bytes)
        keep = min(KEEP_MODELS, max(MIN_KEEP_MODELS, affordable))
        kept = ranked[:keep]
        represented = {t.candidate.family for t in kept} | {"baseline"}
        for trial in ranked[keep:]:
            if len(kept) < affordable and trial.candidate.family not in represented:
                kept.append(trial)
                represented.add(trial.candidate.family)
        kept_ids = {id(t) for t in kept}
        for trial in ranked:
            if trial.models_path is not None and id(trial) not in kept_ids:
                self.store.drop(trial.models_path)
                trial.models_path = trial.oof = None

    def best(self) -> Trial:
        return max(self.trials, key=lambda t: t.gain)

    # --- the loop ---------------------------------------------------------------
    def run(self):
        """Baseline, portfolio, tuning. The caller closes `self.store` when done."""
        self.evaluate(baseline())
        for candidate in portfolio(self.ctx.task, len(self.folds.y)):
            if self.exhausted():
                break
            if not self.affordable(candidate.family):
                continue
            self.n_tried += 1
            self.evaluate(candidate, share=PORTFOLIO_SHARE)
        self._optimize()
        return self

    def _optimize(self):
        """TPE on the two best tunable families, two trials to the best for one to the
        second. It ends when neither can finish in the time left: a trial cut before
        its last fold is thrown away, and on letter at a 10 s budget one such
        forest trial ran 0.9 s past the search's deadline."""
        studies = {}
        step = 0
        while not self.exhausted():
            ranked = self._family_ranking()
            if not ranked:
                return
            ranked = [family for family in ranked if self.affordable(family)]
            if not ranked:
                self.stopped_by = "budget"
                return
            family = ranked[0] if len(ranked) == 1 or step % 3 != 2 else ranked[1]
            step += 1
            study = studies.get(family) or studies.setdefault(family, self._study(family))
            ask = study.ask()
            params = FAMILIES[family].space(ask)
            candidate = Candidate(f"{family}_tuned_{step}", family, params)
            self.n_tried += 1
            known = self.seen.get(self.config_key(candidate))
            if known is not None:  # the same model again: the optimizer learns its score for free
                study.tell(ask, known)
                continue
            trial = self.evaluate(candidate, share=TUNING_SHARE)
            if trial is None:
                study.tell(ask, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(ask, trial.gain)

    def config_key(self, candidate: Candidate) -> tuple:
        """What makes two configurations the same model. A forest's max_features
        share becomes the number of columns it draws: on narrow data many shares
        give one model, which the optimizer would otherwise fit again and again."""
        params = dict(candidate.params)
        share = params.get("max_features")
        if candidate.family in FORESTS and isinstance(share, float):
            width = self.folds.get(candidate.flavour, 0)[0].shape[1]
            params["max_features"] = max(1, int(share * width))
        rounded = {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in params.items()}
        return candidate.family, tuple(sorted(rounded.items()))

    def _family_ranking(self):
        best = {}
        for trial in self.trials:
            family = trial.candidate.family
            if FAMILIES[family].space is not None:
                best[family] = max(best.get(family, -np.inf), trial.gain)
        return sorted(best, key=lambda f: -best[f])[:2]

    def _study(self, family):
        seed = (self.ctx.seed * 7919 + zlib.crc32(family.encode())) % (2**31)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        probe = study.ask()
        FAMILIES[family].space(probe)
        distributions = probe.distributions
        study.tell(probe, state=optuna.trial.TrialState.FAIL)
        for trial in self.trials:
            if trial.candidate.family != family:
                continue
            params = {**SPACE_DEFAULTS.get(family, {}), **trial.candidate.params}
            params = {k: params[k] for k in distributions if k in params}
            try:
                study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=trial.gain))
            except ValueError:
                continue  # a default outside the space (e.g. sklearn's own HGB settings)
        return study


optuna.logging.set_verbosity(optuna.logging.WARNING)
