"""Writes synthetic data sets of the shapes the public suite lacks, in its format
(CSV + JSON sidecar), for the engine benchmark's --datasets-dir:

    python benchmarks/make_stress_datasets.py OUT_DIR [--scale 1.0]

Why: the sixteen public sets are all narrow and small to medium. The data sets
we are also measured on, and our users' data, include the shapes where an
AutoML tool fails or overruns its budget: thousands of columns, hundreds of
thousands of rows, hundreds of classes (with many rows too, as AMLB's dionis
has), ID-like categoricals, free text.
Scores on random data say little; what these sets check is that every fit
ends within its budget, with a model, in bounded memory.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification, make_regression

WORDS = ("good bad great poor excellent awful fine slow fast cheap broken love hate refund late "
         "quality price service delivery support return size colour fit works").split()


def informative(n_rows, n_columns, n_classes, seed, **kwargs):
    X, y = make_classification(n_samples=n_rows, n_features=n_columns, n_informative=min(n_columns, 20),
                               n_redundant=min(n_columns - min(n_columns, 20), 10), n_classes=n_classes,
                               n_clusters_per_class=1, flip_y=0.05, random_state=seed, **kwargs)
    return pd.DataFrame(X.astype(np.float32).round(4), columns=[f"x{i}" for i in range(n_columns)]), y


def wide(n_rows, n_columns, seed):
    X, y = informative(n_rows, n_columns, 2, seed)
    X["target"] = np.where(y == 1, "yes", "no")
    return X, "binary"


def tall(n_rows, seed):
    """Covertype-like: many rows, a few categoricals, seven unbalanced classes."""
    X, y = informative(n_rows, 30, 7, seed, weights=[0.36, 0.49, 0.06, 0.005, 0.016, 0.03, 0.039])
    rng = np.random.default_rng(seed)
    X["soil"] = [f"soil_{k}" for k in rng.integers(0, 40, n_rows)]
    X["area"] = [f"area_{k}" for k in (y + rng.integers(0, 2, n_rows)) % 4]
    X["target"] = y
    return X, "multiclass"


def many_classes(n_rows, n_classes, seed, columns=40, class_sep=2.0):
    X, y = informative(n_rows, columns, n_classes, seed, class_sep=class_sep)
    X["target"] = [f"c{k}" for k in y]
    return X, "multiclass"


def ids(n_rows, seed):
    """Amazon-employee-access-like: only categoricals, up to thousands of levels,
    the positive class depends on a few of the levels."""
    rng = np.random.default_rng(seed)
    levels = (10, 50, 200, 1000, 3000, 8000)
    X = pd.DataFrame({f"cat{i}": rng.zipf(1.3, n_rows) % n for i, n in enumerate(levels)}).astype(str)
    risky = {c: set(rng.choice(X[c].unique(), size=max(1, X[c].nunique() // 20), replace=False)) for c in X}
    score = sum(X[c].isin(risky[c]).astype(float) for c in X) + rng.normal(0, 0.7, n_rows)
    X["target"] = (score > 1.2).astype(int)
    return X, "binary"


def text(n_rows, seed):
    """Reviews: a free-text column carries most of the signal."""
    rng = np.random.default_rng(seed)
    positive = set(WORDS[0:10:2])
    reviews, y = [], []
    for _ in range(n_rows):
        words = rng.choice(WORDS, size=rng.integers(3, 25))
        reviews.append(" ".join(words))
        y.append(int(sum(w in positive for w in words) / len(words) + rng.normal(0, 0.1) > 0.2))
    X = pd.DataFrame({"review": reviews, "stars_shown": rng.integers(1, 6, n_rows),
                      "channel": rng.choice(["web", "app", "store"], n_rows)})
    X["target"] = y
    return X, "binary"


def missing_regression(n_rows, seed):
    """Many rows, a fifth of the cells missing, a skewed target."""
    X, y = make_regression(n_samples=n_rows, n_features=20, n_informative=10, noise=10.0, random_state=seed)
    X = pd.DataFrame(X.astype(np.float32).round(4), columns=[f"x{i}" for i in range(20)])
    rng = np.random.default_rng(seed)
    X = X.mask(rng.random(X.shape) < 0.2)
    X["target"] = np.exp(y / y.std()).round(4)
    return X, "regression"


def build(scale):
    n = lambda rows: max(200, int(rows * scale))  # noqa: E731
    return {
        "stress_wide_2k": wide(n(3000), 2000, 1),
        "stress_wide_10k": wide(n(800), 10000, 2),
        "stress_tall_300k": tall(n(300_000), 3),
        "stress_classes_200": many_classes(n(30_000), 200, 4),
        "stress_classes_355_tall": many_classes(n(416_000), 355, 8, columns=60, class_sep=1.5),  # dionis' shape
        "stress_ids": ids(n(30_000), 5),
        "stress_text": text(n(8000), 6),
        "stress_missing_200k": missing_regression(n(200_000), 7),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every data set's rows")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, (frame, task) in build(args.scale).items():
        frame.to_csv(out / f"{name}.csv", index=False)
        meta = {"name": name, "task": task, "target": "target", "file": f"{name}.csv", "rows": len(frame),
                "columns": frame.shape[1] - 1, "source": "synthetic: benchmarks/make_stress_datasets.py"}
        (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(name, task, frame.shape)


if __name__ == "__main__":
    main()
