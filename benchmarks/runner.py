"""Runs one (system, dataset, budget, seed) and prints one JSON line.

Run in the system's own venv, one process per run, so that the peak memory is
this run's alone and a crash costs only this run:

    python benchmarks/runner.py SYSTEM DATASET BUDGET SEED [--datasets-dir DIR] [--tmp-dir DIR]

Everything the libraries print (Python or C level) is sent to stderr, so
stdout carries exactly the result line.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback


def prime_physical_core_count():
    """joblib finds the physical core count by spawning `lscpu` the first time
    it is asked (HGB asks in fit, FLAML and AutoGluon too). Linux charges a spawned child with
    the parent's peak RSS at the time of the exec, so a late spawn would make
    RUSAGE_CHILDREN repeat this process's whole peak. Asking now, before the
    data and the big imports, caps that echo at ~40 MB."""
    try:
        from joblib.externals.loky.backend.context import _count_physical_cores

        _count_physical_cores()
    except Exception:  # noqa: BLE001 - private API; only the memory figure is at stake
        pass


prime_physical_core_count()

import benchlib  # noqa: E402 - after the priming above, on purpose

SYSTEMS = ("engine", "hgb", "flaml", "autogluon")


# Each fit_* returns (model, info); info (versions, chosen model) goes into the
# result line. Each predict_* returns (probabilities, their class order) for
# classification or (predictions, None) for regression.


def fit_engine(task, X_train, y_train, budget, seed, tmp):
    sys.path.insert(0, str(benchlib.REPO_ROOT))
    from automl import AutoML

    model = AutoML(time_budget=budget, task=task, metric="auto", seed=seed, n_jobs=-1)
    model.fit(X_train, y_train)
    return model, {"best_model": getattr(model, "best_model_", None),
                   "n_trials": getattr(model, "n_trials_", None)}


def predict_engine(model, task, X_test):
    if task == "regression":
        return model.predict(X_test), None
    return model.predict_proba(X_test), list(model.classes_)


def fit_hgb(task, X_train, y_train, budget, seed, tmp):
    """The floor: default HistGradientBoosting. Strings are ordinal-encoded
    (as numbers, not categorical) because HGB's native categorical support
    rejects more than 255 levels (titanic's ticket/cabin have more)."""
    import numpy as np
    import sklearn
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder
    from pandas.api.types import is_numeric_dtype

    strings = [c for c in X_train.columns if not is_numeric_dtype(X_train[c])]
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    prep = make_column_transformer((encoder, strings), remainder="passthrough")
    estimator = (
        HistGradientBoostingRegressor(random_state=seed)
        if task == "regression"
        else HistGradientBoostingClassifier(random_state=seed)
    )
    model = make_pipeline(prep, estimator)
    model.fit(X_train, y_train)
    return model, {"sklearn": sklearn.__version__}


def predict_hgb(model, task, X_test):
    if task == "regression":
        return model.predict(X_test), None
    return model.predict_proba(X_test), list(model.classes_)


def fit_flaml(task, X_train, y_train, budget, seed, tmp):
    import flaml
    from flaml import AutoML

    metric = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "r2"}[task]
    flaml_task = "regression" if task == "regression" else "classification"
    model = AutoML()
    model.fit(
        X_train, y_train, task=flaml_task, time_budget=budget, metric=metric,
        seed=seed, n_jobs=-1, verbose=0,
    )
    return model, {"flaml": flaml.__version__, "best_estimator": model.best_estimator}


def predict_flaml(model, task, X_test):
    if task == "regression":
        return model.predict(X_test), None
    return model.predict_proba(X_test), list(model.classes_)


def fit_autogluon(task, X_train, y_train, budget, seed, tmp):
    """AutoGluon takes one frame with the label inside it; models go to the
    per-run temp dir that main() deletes."""
    import autogluon.tabular
    from autogluon.tabular import TabularPredictor

    metric = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "r2"}[task]
    label = y_train.name
    train = X_train.assign(**{label: y_train})
    predictor = TabularPredictor(
        label=label, eval_metric=metric, problem_type=task, path=os.path.join(tmp, "ag"),
        verbosity=0,
    )
    predictor.fit(train, time_limit=budget)
    return predictor, {
        "autogluon": autogluon.tabular.__version__,
        "best_model": predictor.model_best,
    }


def predict_autogluon(predictor, task, X_test):
    if task == "regression":
        return predictor.predict(X_test).to_numpy(), None
    proba = predictor.predict_proba(X_test, as_multiclass=True)
    return proba.to_numpy(), list(proba.columns)


def peak_rss():
    """Peak RSS in MB of this process and of its largest waited-for child.
    This process's own peak is VmHWM, the high-water mark of its address space
    since exec: ru_maxrss would also hold the RSS of the process that spawned
    it (Linux records the old address space's peak at exec), so every run that
    stayed below the orchestrator's ~193 MB read as exactly that. Children
    count because some systems fit in worker processes; both parts are kept
    because a child's figure also includes this process's RSS at the moment
    the child was spawned."""
    with open("/proc/self/status") as status:
        self_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    self_mb = self_kb / 1024.0
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {
        "peak_rss_mb": round(self_mb + children_mb, 1),
        "rss_self_mb": round(self_mb, 1),
        "rss_children_mb": round(children_mb, 1),
    }


def run(system, dataset, budget, seed, datasets_dir, tmp):
    """Fits and scores; raises on any failure so main() can report it."""
    X, y, meta = benchlib.load_dataset(datasets_dir, dataset)
    task = meta["task"]
    X_train, X_test, y_train, y_test = benchlib.split(X, y, task, seed)
    result = {
        "task": task,
        "metric": benchlib.METRICS[task],
        "n_train": len(X_train),
        "n_test": len(X_test),
        "split": benchlib.split_fingerprint(X_test),
    }
    fit, predict = globals()[f"fit_{system}"], globals()[f"predict_{system}"]
    start = time.perf_counter()
    model, versions = fit(task, X_train, y_train, budget, seed, tmp)
    result["fit_s"] = time.perf_counter() - start
    result["info"] = versions
    start = time.perf_counter()
    pred, classes = predict(model, task, X_test)
    result["predict_s"] = time.perf_counter() - start
    # The system's peak ends here: scoring 100,000 rows of 355 classes takes
    # 1.6 GB of the benchmark's own (aligned, clipped and one-hot copies).
    result.update(peak_rss())
    if task == "regression":
        result["score"] = benchlib.score_regression(y_test, pred)
    else:
        proba = benchlib.align_proba(pred, classes, benchlib.class_labels(y))
        result["score"], result["accuracy"] = benchlib.score_classification(
            task, y_test, proba, benchlib.class_labels(y)
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("dataset")
    parser.add_argument("budget", type=float)
    parser.add_argument("seed", type=int)
    parser.add_argument("--datasets-dir", default=str(benchlib.DEFAULT_DATASETS_DIR))
    parser.add_argument("--tmp-dir", help="parent of the run's scratch dir; the orchestrator "
                        "passes one it deletes itself, since a killed run cannot clean up")
    args = parser.parse_args()

    result_fd = os.dup(1)
    os.dup2(2, 1)  # libraries' prints (C level included) go to stderr
    budget = int(args.budget) if args.budget == int(args.budget) else args.budget
    record = {"system": args.system, "dataset": args.dataset, "budget": budget,
              "seed": args.seed}
    tmp = tempfile.mkdtemp(prefix=f"bench-{args.system}-", dir=args.tmp_dir)
    try:
        record.update(run(args.system, args.dataset, budget, args.seed, args.datasets_dir, tmp))
    except BaseException as exc:  # noqa: BLE001 - any failure is a scored result
        traceback.print_exc()
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if "peak_rss_mb" not in record:  # the run failed before its end: its peak so far
        record.update(peak_rss())
    sys.stdout.flush()
    os.write(result_fd, (json.dumps(record) + "\n").encode())


if __name__ == "__main__":
    main()
