"""Preprocessing inside the model pipeline.

Two flavours, because model families want different inputs: trees take ordinal
codes and native missing values; linear and distance models take imputed,
scaled, one-hot columns. Each flavour is a scikit-learn ColumnTransformer that
is fitted on the training rows of each fold only, so nothing leaks from the
validation rows (target encoding included).

Behaviour at predict time, documented for users:
- missing columns -> DataError `missing_columns` (naming them); extra columns
  are ignored; column order does not matter;
- a value that does not parse as the column's type becomes missing;
- an unseen category is treated like a missing one (trees) or encodes to zeros
  (one-hot) / the training mean (target encoding).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

from ..errors import DataError
from .checks import check_unique_columns

MAX_ORDINAL_CATEGORIES = 250  # HistGradientBoosting's native categorical limit
MAX_ONEHOT_CATEGORIES = 30


def coerce(X: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Bring raw columns to the types seen at fit time; unparsable cells become missing."""
    missing = [c for c, kind in kinds.items() if kind != "ignored" and c not in X.columns]
    if missing:
        raise DataError("missing_columns", columns=", ".join(missing))
    check_unique_columns(X.columns[X.columns.isin(list(kinds))])
    out = {}
    for column, kind in kinds.items():
        if kind == "ignored":
            continue
        values = X[column]
        if kind == "numeric":
            if pd.api.types.is_bool_dtype(values):
                values = values.astype(float)
            numbers = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
            out[column] = np.where(np.isinf(numbers), np.nan, numbers)  # the models refuse infinity
        elif kind == "datetime":
            if not pd.api.types.is_datetime64_any_dtype(values):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    values = pd.to_datetime(values, errors="coerce", format="mixed")
            if getattr(values.dt, "tz", None) is not None:
                values = values.dt.tz_convert(None)
            out[column] = values.astype("datetime64[ns]").to_numpy()
        elif kind == "text":
            out[column] = values.fillna("").astype(str).to_numpy(dtype=object)
        else:
            strings = values.astype(object).where(values.notna(), np.nan)
            out[column] = strings.map(lambda v: v if isinstance(v, float) else str(v)).to_numpy(dtype=object)
    return pd.DataFrame(out, index=X.index)


class DateTimeFeatures(BaseEstimator, TransformerMixin):
    """Calendar parts plus a linear time axis, from datetime64 columns."""

    PARTS = ("year", "month", "day", "day_of_week", "day_of_year", "hour")

    def fit(self, X, y=None):
        X = pd.DataFrame(X)
        self.n_features_in_ = X.shape[1]
        self.has_time_ = [bool((pd.to_datetime(X[c]).dt.hour.fillna(0) != 0).any()) for c in X.columns]
        return self

    def transform(self, X):
        X = pd.DataFrame(X)
        columns = []
        for i, c in enumerate(X.columns):
            values = pd.to_datetime(X[c])
            for part in self.PARTS:
                if part == "hour" and not self.has_time_[i]:
                    continue
                columns.append(getattr(values.dt, part).astype(float).to_numpy())
            days = (values - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86400.0
            columns.append(days.to_numpy(dtype=float))
        return np.column_stack(columns) if columns else np.empty((len(X), 0))

    def get_feature_names_out(self, input_features=None):
        names = []
        for i, c in enumerate(input_features if input_features is not None else range(self.n_features_in_)):
            names += [f"{c}_{p}" for p in self.PARTS if p != "hour" or self.has_time_[i]]
            names.append(f"{c}_days")
        return np.asarray(names, dtype=object)


class TextFeatures(BaseEstimator, TransformerMixin):
    """TF-IDF of one free-text column, reduced to a few dense components for trees."""

    def __init__(self, n_components=20, dense=True, random_state=0):
        self.n_components = n_components
        self.dense = dense
        self.random_state = random_state

    def fit(self, X, y=None):
        text = self._text(X)
        self.tfidf_ = TfidfVectorizer(max_features=20000, ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        try:
            matrix = self.tfidf_.fit_transform(text)
        except ValueError:  # empty vocabulary
            self.tfidf_ = TfidfVectorizer(max_features=20000, min_df=1)
            matrix = self.tfidf_.fit_transform(np.where(text == "", "empty", text))
        self.svd_ = None
        if self.dense:
            k = max(1, min(self.n_components, matrix.shape[1] - 1, matrix.shape[0] - 1))
            self.svd_ = TruncatedSVD(k, random_state=self.random_state).fit(matrix) if k >= 1 and matrix.shape[1] > 1 else None
        return self

    @staticmethod
    def _text(X):
        return np.asarray(X, dtype=object).reshape(-1).astype(str)

    def transform(self, X):
        matrix = self.tfidf_.transform(self._text(X))
        if not self.dense:
            return matrix
        return self.svd_.transform(matrix) if self.svd_ is not None else matrix.toarray()

    def get_feature_names_out(self, input_features=None):
        name = input_features[0] if input_features is not None else "text"
        n = self.svd_.n_components if self.svd_ is not None else len(self.tfidf_.vocabulary_)
        return np.asarray([f"{name}_text{i}" for i in range(n)], dtype=object)


def _columns(kinds, kind):
    return [c for c, k in kinds.items() if k == kind]


def _target_type(task):
    return {"regression": "continuous", "binary": "binary", "multiclass": "multiclass"}[task]


def build_preprocessor(flavour: str, kinds: dict[str, str], task: str, seed: int) -> ColumnTransformer:
    numeric = _columns(kinds, "numeric")
    categorical = _columns(kinds, "categorical")
    high = _columns(kinds, "high_cardinality")
    dates = _columns(kinds, "datetime")
    texts = _columns(kinds, "text")
    splitter = KFold if task == "regression" else StratifiedKFold
    target_encoder = TargetEncoder(target_type=_target_type(task), cv=splitter(5, shuffle=True, random_state=seed))
    parts = []
    if flavour == "tree":
        parts.append(("numeric", "passthrough", numeric))
        parts.append(
            (
                "categorical",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                    max_categories=MAX_ORDINAL_CATEGORIES,
                    dtype=np.float64,
                ),
                categorical,
            )
        )
        parts.append(("high_cardinality", target_encoder, high))
        parts.append(("datetime", DateTimeFeatures(), dates))
        parts += [(f"text_{i}", TextFeatures(random_state=seed), [c]) for i, c in enumerate(texts)]
    elif flavour == "linear":
        scale = lambda: make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), StandardScaler())  # noqa: E731
        parts.append(("numeric", scale(), numeric))
        parts.append(
            (
                "categorical",
                # Sparse, because the search caches every fold of this flavour: dense, adult's
                # folds took 19-28 MB each, and its fit peaked 44 MB higher (k-NN: see models).
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="__missing__"),
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        min_frequency=5,
                        max_categories=MAX_ONEHOT_CATEGORIES,
                    ),
                ),
                categorical,
            )
        )
        parts.append(("high_cardinality", make_pipeline(target_encoder, StandardScaler()), high))
        parts.append(("datetime", make_pipeline(DateTimeFeatures(), scale()), dates))
        parts += [(f"text_{i}", TextFeatures(dense=False), [c]) for i, c in enumerate(texts)]
    else:
        raise ValueError(flavour)
    parts = [p for p in parts if p[2]]
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.3 if flavour == "linear" else 0.0,
                             verbose_feature_names_out=False)


def transform_frame(preprocessor: ColumnTransformer, X: pd.DataFrame):
    """`preprocessor.transform(X)` for a frame that `coerce` made: each fitted
    part on its own columns, stacked as ColumnTransformer stacks them. On one
    row, ColumnTransformer.transform spends most of its time on its own input
    checks, column indexing and joblib dispatch, which a coerced frame does not
    need: this is the latency of every single-row prediction."""
    parts = [transformer.transform(X[columns]) for _, transformer, columns in preprocessor.transformers_
             if not (isinstance(transformer, str) and transformer == "drop")]
    if preprocessor.sparse_output_:
        return sparse.hstack([part if sparse.issparse(part) else sparse.csr_matrix(np.asarray(part, dtype=float))
                              for part in parts]).tocsr()
    return np.hstack([part.toarray() if sparse.issparse(part) else np.asarray(part) for part in parts])


def categorical_mask(preprocessor: ColumnTransformer) -> np.ndarray:
    """Which output columns hold ordinal category codes (for native categorical support)."""
    mask = []
    for name, transformer, columns in preprocessor.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        width = len(transformer.get_feature_names_out(columns)) if transformer != "passthrough" else len(columns)
        mask += [name == "categorical"] * width
    return np.asarray(mask, dtype=bool)
