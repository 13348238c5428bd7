"""Data loading, splitting and scoring shared by the runner and the orchestrator.

This module is imported from every benchmark venv (project, FLAML, AutoGluon),
so it may only use numpy, pandas and scikit-learn: that way every system sees
the same split and is scored by the same code.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASETS_DIR = REPO_ROOT.parent / "shared" / "datasets"
TEST_SIZE = 0.25
METRICS = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "r2"}
LOWER_IS_BETTER = {"log_loss"}
PROBA_EPS = 1e-15


def list_datasets(datasets_dir):
    """Names are sidecar stems, so a data file without a sidecar is ignored."""
    return sorted(p.stem for p in Path(datasets_dir).glob("*.json"))


def load_dataset(datasets_dir, name):
    """Returns (X, y, meta). Only empty cells are missing, so that a literal
    string such as "NA" or "None" stays a category level."""
    datasets_dir = Path(datasets_dir)
    meta = json.loads((datasets_dir / f"{name}.json").read_text())
    csv = datasets_dir / f"{name}.csv"
    if not csv.exists():
        csv = datasets_dir / f"{name}.csv.gz"
    df = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    target = meta["target"]
    return df.drop(columns=[target]), df[target], meta


def split(X, y, task, seed):
    """The one split every system gets; stratified so rare classes reach both
    sides."""
    stratify = y if task in ("binary", "multiclass") else None
    return train_test_split(X, y, test_size=TEST_SIZE, random_state=seed, stratify=stratify)


def split_fingerprint(X_test):
    """Lets the report prove that runs in different venvs (different
    scikit-learn/pandas) scored the same test rows."""
    idx = np.sort(np.asarray(X_test.index, dtype=np.int64))
    return hashlib.sha1(idx.tobytes()).hexdigest()[:12]


def class_labels(y):
    """All classes of the full data, sorted: column order for log loss, and
    labels[1] is the positive class for ROC AUC."""
    return list(np.unique(np.asarray(y)))


def label_key(value):
    """Systems hand back labels as numpy scalars, Python ints or strings;
    comparing their text maps them onto one another."""
    return str(value.item() if hasattr(value, "item") else value)


def align_proba(proba, classes, labels):
    """Reorders a system's probability columns (in its own class order) onto
    `labels`; classes the system never saw get probability 0."""
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(f"proba shape {proba.shape} does not match {len(classes)} classes")
    position = {label_key(c): j for j, c in enumerate(classes)}
    unknown = set(position) - {label_key(c) for c in labels}
    if unknown:
        raise ValueError(f"system returned unknown classes {sorted(unknown)}")
    aligned = np.zeros((proba.shape[0], len(labels)))
    for i, label in enumerate(labels):
        j = position.get(label_key(label))
        if j is not None:
            aligned[:, i] = proba[:, j]
    return aligned


def score_classification(task, y_test, proba, labels):
    """Scores aligned probabilities; accuracy uses the argmax so that every
    system is judged on the same decision rule rather than its own predict()."""
    if not np.all(np.isfinite(proba)):
        raise ValueError("non-finite probabilities")
    y_test = np.asarray(y_test)
    keys = np.array([label_key(v) for v in y_test])
    predicted = np.array([label_key(labels[i]) for i in np.argmax(proba, axis=1)])
    accuracy = float(accuracy_score(keys, predicted))
    if task == "binary":
        positive = label_key(labels[1])
        score = roc_auc_score(keys == positive, proba[:, 1])
    else:
        clipped = np.clip(proba, PROBA_EPS, 1.0)
        clipped /= clipped.sum(axis=1, keepdims=True)
        label_index = {label_key(c): i for i, c in enumerate(labels)}
        y_idx = np.array([label_index[k] for k in keys])
        score = log_loss(y_idx, clipped, labels=list(range(len(labels))))
    return float(score), accuracy


def score_regression(y_test, pred):
    pred = np.asarray(pred, dtype=float).ravel()
    if not np.all(np.isfinite(pred)):
        raise ValueError("non-finite predictions")
    return float(r2_score(np.asarray(y_test, dtype=float), pred))


def constant_score(task, y_train, y_test, labels):
    """What a failed run is worth (AMLB convention): the score of a predictor
    that ignores the features and predicts the training prior/mean."""
    if task == "regression":
        mean = float(np.mean(np.asarray(y_train, dtype=float)))
        return score_regression(y_test, np.full(len(y_test), mean)), None
    train_keys = [label_key(v) for v in np.asarray(y_train)]
    prior = np.array([train_keys.count(label_key(c)) for c in labels], dtype=float)
    prior /= prior.sum()
    proba = np.tile(prior, (len(y_test), 1))
    return score_classification(task, y_test, proba, labels)
