"""Data checks and guardrails.

Errors stop a fit that cannot be meaningful; guardrails are returned as data
(code, severity, column, params) so that the CLI, the API and the dashboards
can show them, instead of living only in logs.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from ..errors import DataError, ParameterError
from ..i18n import message
from .metrics import TASKS

MIN_ROWS = 10
MIN_CLASS_ROWS = 2
MAX_CLASSES_FOR_INT_TARGET = 20
HIGH_CARDINALITY = 50
MISSING_WARN_FRACTION = 0.05
IMBALANCE_RATIO = 0.15  # smallest class / largest class
LEAKAGE_ROWS = 2000  # sampled rows for the leakage check
LEAKAGE_SCORE = 0.99  # cross-validated score of one column alone that flags a leak
LEAKAGE_SCREEN = 0.9  # in-sample score of a column's bins that earns the exact check
LEAKAGE_MOST_CHECKED = 20
LEAKAGE_BINS = 64
_ID_NAME = re.compile(r"(^id$|_id$|^id_|uuid|guid|(^|_)key$)", re.IGNORECASE)


def guardrail(code: str, severity: str = "warning", column: str | None = None, **params) -> dict:
    return {
        "code": code,
        "severity": severity,
        "column": column,
        "params": params,
        "message": message(code, column=column, **params),
    }


# --- target -------------------------------------------------------------------


def split_target(X, y, target):
    """Accept fit(X, y) or fit(df, target=...) and return (X, y) as pandas."""
    if (y is None) == (target is None):
        raise ParameterError("target_argument")
    if not isinstance(X, pd.DataFrame):
        X = pd.DataFrame(np.asarray(X))
        X.columns = [f"x{i}" for i in range(X.shape[1])]
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError("empty_data")
    X = X.copy()
    X.columns = [str(c) for c in X.columns]
    check_unique_columns(X.columns)
    X = hashable_cells(X)
    if target is not None:
        target = str(target)
        if target not in X.columns:
            raise DataError("target_missing", target=target, columns=_short_list(X.columns))
        y = X.pop(target)
        if X.shape[1] == 0:
            raise DataError("no_features", target=target)
    else:
        y = pd.Series(np.asarray(y) if not isinstance(y, pd.Series) else y.to_numpy(), name=getattr(y, "name", None))
        if len(y) != len(X):
            raise DataError("y_length_mismatch", n_x=len(X), n_y=len(y))
        y.index = X.index
    y.name = str(y.name) if y.name is not None else "target"
    return X, y


def check_unique_columns(columns: pd.Index) -> None:
    """Two columns of one name cannot be told apart, at fit or at predict time."""
    duplicated = columns[columns.duplicated()].unique()
    if len(duplicated):
        raise DataError("duplicate_columns", columns=_short_list(duplicated))


def hashable_cells(X: pd.DataFrame) -> pd.DataFrame:
    """Lists, dicts and other unhashable cells (JSON sources) read as their text:
    columns are profiled by counting their distinct values."""
    for column in X.columns[X.dtypes == object]:
        try:
            pd.unique(X[column])  # hashes every cell, as fast as profiling does
        except TypeError:
            X[column] = X[column].map(lambda v: str(v) if getattr(v, "__hash__", None) is None else v)
    return X


def _short_list(values, limit=12):
    values = [str(v) for v in values]
    more = f", … (+{len(values) - limit})" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def _is_integer_valued(y: pd.Series) -> bool:
    values = y.to_numpy(dtype=float)
    return bool(np.all(np.isfinite(values)) and np.all(np.mod(values, 1) == 0))


def detect_task(y: pd.Series) -> str:
    """Numbers with few integer values are classes; anything else numeric is regression."""
    n_unique = y.nunique()
    if n_unique == 2:
        return "binary"
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "multiclass"
    if _is_integer_valued(y) and n_unique <= MAX_CLASSES_FOR_INT_TARGET:
        return "multiclass"
    return "regression"


def check_target(X: pd.DataFrame, y: pd.Series, task: str):
    """Drop rows without a target, resolve the task, and refuse hopeless targets."""
    if task not in ("auto", *TASKS):
        raise ParameterError("bad_task", value=task, choices=", ".join(("auto", *TASKS)))
    guards = []
    y = y.infer_objects()  # numbers held as Python objects (from JSON, say) are numbers
    if y.dtype == object:  # 1 and "no" cannot even be sorted together
        text = y.dropna().map(lambda v: isinstance(v, str))
        if 0 < text.sum() < len(text):
            example = f"{y[text[~text].index[0]]!r}, {y[text[text].index[0]]!r}"
            guards.append(guardrail("guard_target_as_text", example=example))
            y = y.where(y.isna(), y.astype(str))
    if pd.api.types.is_float_dtype(y):
        y = y.where(~np.isinf(y))  # an infinite target is no value to learn: it counts as missing
    present = y.notna().to_numpy()
    if not present.any():
        raise DataError("target_all_missing", target=y.name)
    if not present.all():
        guards.append(guardrail("guard_target_missing_rows", count=int((~present).sum())))
        X, y = X.loc[present], y.loc[present]
    if y.nunique() == 1:
        raise DataError("target_constant", target=y.name, value=repr(y.iloc[0]))
    if len(y) < MIN_ROWS:
        raise DataError("too_few_rows", count=len(y), minimum=MIN_ROWS)
    detected = detect_task(y)
    if task == "auto":
        task = detected
    if task == "regression":
        numeric = pd.to_numeric(y, errors="coerce")
        if numeric.isna().any():
            example = y[numeric.isna()].iloc[0]
            raise DataError("target_not_numeric", target=y.name, example=str(example))
        y = numeric.astype(float)
    else:
        n_classes = y.nunique()
        if (task == "binary") != (n_classes == 2):
            raise DataError("task_mismatch", task=task, target=y.name, n_classes=n_classes)
        counts = y.value_counts()
        if counts.min() < MIN_CLASS_ROWS:
            raise DataError(
                "class_too_small",
                label=_plain(counts.idxmin()),
                target=y.name,
                count=int(counts.min()),
                minimum=MIN_CLASS_ROWS,
            )
        smallest = counts.min() / counts.sum()
        if counts.min() / counts.max() < IMBALANCE_RATIO:
            guards.append(
                guardrail("guard_class_imbalance", label=str(_plain(counts.idxmin())), percent=100 * smallest)
            )
    return X, y, task, guards


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def check_target_copies(X: pd.DataFrame, y: pd.Series, task: str) -> None:
    """A column that is the target under another name makes every score a lie."""
    for column in X.columns:
        x = X[column]
        if x.isna().any():
            continue
        if task == "regression":
            values = pd.to_numeric(x, errors="coerce")
            if values.notna().all() and np.allclose(values.to_numpy(float), y.to_numpy(float)):
                raise DataError("target_duplicated", column=column, target=y.name)
        elif x.nunique() == y.nunique():
            pairs = pd.crosstab(x.astype(str), y.astype(str))
            if ((pairs > 0).sum(axis=1) == 1).all() and ((pairs > 0).sum(axis=0) == 1).all():
                raise DataError("target_duplicated", column=column, target=y.name)


# --- feature columns ---------------------------------------------------------------


NUMERIC_SAMPLE = 1000


def _numeric_share(values: pd.Series) -> float:
    """Share of values that read as numbers. A sample decides first: converting a
    whole text column of millions of rows costs seconds, and a text column fails
    on its first thousand values already."""
    if not len(values):
        return 0.0
    sample = values.sample(NUMERIC_SAMPLE, random_state=0) if len(values) > NUMERIC_SAMPLE else values
    share = float(pd.to_numeric(sample, errors="coerce").notna().mean())
    if share < 0.9 or len(sample) == len(values):
        return share
    return float(pd.to_numeric(values, errors="coerce").notna().mean())


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"\d{1,4}[-/.:]\d{1,2}", regex=True).mean() > 0.9:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return float(parsed.notna().mean()) > 0.9


def _mean_words(values: pd.Series) -> float:
    sample = values.dropna().astype(str).head(500)
    return float(sample.str.split().str.len().mean()) if len(sample) else 0.0


def infer_column_kinds(X: pd.DataFrame) -> tuple[dict[str, str], list[dict]]:
    """Give every column a kind: numeric, categorical, high_cardinality, datetime,
    text, or ignored (identifier / constant), with the guardrails that explain it."""
    kinds, guards = {}, []
    n = len(X)
    for column in X.columns:
        values = X[column]
        non_null = values.dropna()
        n_unique = non_null.nunique()
        missing = 1 - len(non_null) / n
        if missing >= MISSING_WARN_FRACTION and n_unique > 0:
            guards.append(guardrail("guard_missing_values", column=column, percent=100 * missing))
        if n_unique <= 1:
            kinds[column] = "ignored"
            guards.append(guardrail("guard_constant_column", column=column))
            continue
        if pd.api.types.is_datetime64_any_dtype(values):
            kinds[column] = "datetime"
            continue
        is_numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
        if not is_numeric and _numeric_share(non_null) >= 0.98:
            is_numeric = True
        all_unique = n_unique == len(non_null) and n > 50
        if is_numeric:
            numbers = pd.to_numeric(non_null, errors="coerce")
            integer_like = bool((numbers.dropna() % 1 == 0).all())
            monotonic = numbers.is_monotonic_increasing or numbers.is_monotonic_decreasing
            if all_unique and integer_like and (monotonic or _ID_NAME.search(column)):
                kinds[column] = "ignored"
                guards.append(guardrail("guard_id_like", column=column))
            else:
                kinds[column] = "numeric"
            continue
        if _looks_like_dates(non_null):
            kinds[column] = "datetime"
            continue
        words = _mean_words(non_null)
        if words >= 3 and n_unique > 0.3 * len(non_null):
            kinds[column] = "text"
        elif all_unique or (n_unique > 0.95 * len(non_null) and n > 50 and _ID_NAME.search(column)):
            kinds[column] = "ignored"
            guards.append(guardrail("guard_id_like", column=column))
        elif n_unique > HIGH_CARDINALITY:
            kinds[column] = "high_cardinality"
            guards.append(guardrail("guard_high_cardinality", column=column, count=int(n_unique)))
        else:
            kinds[column] = "categorical"
    if all(kind == "ignored" for kind in kinds.values()):
        raise DataError("no_features", target="?")
    return kinds, guards


def leakage_guards(X: pd.DataFrame, y: np.ndarray, kinds: dict[str, str], task: str, seed: int) -> list[dict]:
    """Flag a single column that predicts the target almost perfectly on its own:
    usually information that is only known after the fact. The exact check, a
    cross-validated tree per column (depth 4, or two leaves a class), costs ~17 ms a column: 35 s on
    2,000 columns, before the search had begun. So every column is screened
    first by how well its binned values predict the target on the sample, which
    is cheap, and only the LEAKAGE_MOST_CHECKED best get the exact check."""
    from sklearn.model_selection import cross_val_score
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(X), size=min(len(X), LEAKAGE_ROWS), replace=False)
    target = y[rows]
    if task != "regression":  # classes of fewer than 3 rows sit out the 3-fold check, and only they
        common = np.bincount(target)[target] >= 3  # (with 200 classes in 2,000 rows, some always do)
        rows, target = rows[common], target[common]
        if len(np.unique(target)) < 2:
            return []
    columns = [c for c, kind in kinds.items() if kind in ("numeric", "categorical")]
    sample = X[columns].iloc[rows]
    screened = univariate_scores(sample, target, columns, task)
    suspects = sorted((c for c, s in screened.items() if s >= LEAKAGE_SCREEN), key=lambda c: -screened[c])
    guards = []
    for column in suspects[:LEAKAGE_MOST_CHECKED]:
        if task == "regression":
            model, scoring = DecisionTreeRegressor(max_depth=4, random_state=seed), "r2"
        else:
            # room for two leaves a class: depth 4 cannot tell 20 classes apart, and neither can depth
            # 6, whose greedy splits may peel one class at a time (20 classes leaked at 0.68)
            leaves = max(16, 2 * len(np.unique(target)))
            model, scoring = DecisionTreeClassifier(max_leaf_nodes=leaves, random_state=seed), "balanced_accuracy"
        score = cross_val_score(model, _as_numbers(sample[column]).reshape(-1, 1), target, cv=3, scoring=scoring).mean()
        if score >= LEAKAGE_SCORE:
            guards.append(guardrail("guard_leakage", column=column, score=float(score)))
    return guards


def univariate_scores(X: pd.DataFrame, y: np.ndarray, columns, task: str) -> dict[str, float]:
    """How well each column alone predicts y on these rows (_binned_score): the
    leakage screen, and which columns importance measures on wide data."""
    return {c: _binned_score(_as_numbers(X[c]), y, task) for c in columns}


def _as_numbers(values: pd.Series) -> np.ndarray:
    """Numbers as they are (numbers written as text too), anything else as
    category codes; missing values as one more value, below all others."""
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() < 0.98 * values.notna().sum():
            numbers = values.astype("category").cat.codes.where(values.notna())
        values = numbers
    return pd.to_numeric(values, errors="coerce").fillna(-1e18).to_numpy(float)


def _binned_score(x: np.ndarray, y: np.ndarray, task: str) -> float:
    """In-sample score of predicting y from x's bin alone (the bin's majority
    class, or its mean): balanced accuracy, or the share of variance explained.
    Bins hold equal counts of rows, tied values kept together, at least eight
    rows each, so that a column of noise does not score well by overfitting."""
    values, codes = np.unique(x, return_inverse=True)
    n_bins = max(2, min(LEAKAGE_BINS, len(x) // 8))
    if len(values) > n_bins:
        counts = np.bincount(codes)
        codes = ((np.cumsum(counts) - counts) * n_bins // len(x))[codes]
    n_bins = codes.max() + 1
    if task == "regression":
        rows = np.bincount(codes, minlength=n_bins)
        sums = np.bincount(codes, weights=y, minlength=n_bins)
        total = float(((y - y.mean()) ** 2).sum())
        between = float((sums[rows > 0] ** 2 / rows[rows > 0]).sum() - len(y) * y.mean() ** 2)
        return between / total if total > 0 else 0.0
    k = int(y.max()) + 1
    table = np.bincount(codes * k + y, minlength=n_bins * k).reshape(n_bins, k)
    predicted = table.argmax(axis=1)
    correct = np.bincount(predicted, weights=table[np.arange(n_bins), predicted], minlength=k)
    present = np.bincount(y, minlength=k)
    return float((correct[present > 0] / present[present > 0]).mean())
