"""One model file: a zip with `metadata.json` (readable without unpickling) and
`model.pkl`. Library versions are checked before unpickling, so an incompatible
environment gets a clear message rather than a crash deep in pickle."""

from __future__ import annotations

import io
import json
import pickle
import platform
import zipfile
from importlib import metadata as importlib_metadata

import numpy as np

from ..errors import ModelFileError

FORMAT = 1
# Libraries whose pickles must match on major.minor to load safely.
PINNED = ("scikit-learn", "xgboost", "numpy", "pandas")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("automl-hub", *PINNED):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            try:
                versions[name] = importlib_metadata.version(name + "-cpu")
            except importlib_metadata.PackageNotFoundError:
                versions[name] = "unknown"
    import xgboost

    versions["xgboost"] = xgboost.__version__
    return versions


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def model_metadata(model) -> dict:
    return _jsonable({
        "format": FORMAT,
        "versions": library_versions(),
        "task": model.task_,
        "metric": model.metric_,
        "target": model.target_,
        "classes": None if model.classes_ is None else list(model.classes_),
        "schema": model.input_schema_,
        "best_model": model.best_model_,
        "best_score": model.best_score_,
        "validation_scores": model.validation_scores_,
        "leaderboard": model.leaderboard_.to_dict(orient="records"),
        "ensemble": model.ensemble_,
        "feature_importance": model.feature_importance_.to_dict(orient="records"),
        "guardrails": model.guardrails_,
        "params": {k: v for k, v in model.get_params().items() if k != "callback"},
    })


def dump_without_memo(obj, handle) -> None:
    """Pickle without the pickler's memo, which keeps every object written
    until the end: a model of ten xgboost slices held all ten serialized
    slices at once (+12 to 19 MB to write a 10-part glass model whose file is
    7.9 MB; +4 MB without).
    Objects shared inside `obj` are written once per use. A cycle makes the
    memo-less pickler raise; the file is then written with the memo."""
    start = handle.tell()
    pickler = pickle.Pickler(handle, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    try:
        pickler.dump(obj)
    except ValueError:  # "fast mode: can't pickle cyclic objects"
        handle.seek(start)
        handle.truncate()
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)


def save(model, path) -> str:
    path = str(path)
    buffer = io.BytesIO()
    dump_without_memo(model, buffer)
    payload = buffer.getvalue()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(model_metadata(model), indent=1, default=str))
        archive.writestr("model.pkl", payload)
    return path


def read_metadata(path) -> dict:
    path = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json"))
    except FileNotFoundError:
        raise ModelFileError("model_file_invalid", path=path, reason="no such file") from None
    except (zipfile.BadZipFile, KeyError, ValueError, IsADirectoryError) as error:
        raise ModelFileError("model_file_invalid", path=path, reason=type(error).__name__) from None


def _major_minor(version: str) -> tuple:
    return tuple(version.split(".")[:2])


def check_compatible(meta: dict, path: str) -> None:
    if meta.get("format") != FORMAT:
        raise ModelFileError("model_file_format", path=path, saved=meta.get("format"), current=FORMAT)
    current = library_versions()
    for library in PINNED:
        saved = meta.get("versions", {}).get(library)
        if saved and _major_minor(saved) != _major_minor(current[library]):
            raise ModelFileError("model_file_versions", path=path, library=library, saved=saved,
                                 current=current[library])


def load(path):
    path = str(path)
    meta = read_metadata(path)
    check_compatible(meta, path)
    with zipfile.ZipFile(path) as archive:
        payload = archive.read("model.pkl")
    return pickle.load(io.BytesIO(payload))
