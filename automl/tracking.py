"""MLflow tracking of training jobs.

Each training job becomes one MLflow run (parameters, scores, leaderboard and
feature importance), and its model becomes an MLflow pyfunc model that
`mlflow models serve` can serve where automl-hub is installed. Experiments are
per tenant (`experiment_name`), so that tenants never share one.

Only an `MlflowClient` built for `settings.mlflow_tracking_uri` is used, never
MLflow's global "current" URI, experiment or run: a job process that runs jobs
of several tenants one after another (or in threads) cannot send one job's
records to another's place, and nothing is left behind for the next job.

Serving: `mlflow models serve -m models:/<id> --env-manager local` (with
MLFLOW_TRACKING_URI set) answers POST /invocations {"dataframe_split": ...}
with {"predictions": [label, ...]} (values for regression); a classifier given
"params": {"predict_method": "predict_proba"} answers one {class: probability}
object per row.

MLflow is imported inside the functions: the platform service imports this
module without loading MLflow.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path

from .errors import TrackingError
from .settings import Settings, get_settings

__all__ = ["experiment_name", "is_available", "log_training"]

ARTIFACTS_DIR = "mlruns"  # under the state dir, for stores without a server
MODEL_NAME = "model"
PREDICT_METHODS = ("predict", "predict_proba")
SERVER_CHECK_TIMEOUT = 5  # seconds
REASON_LENGTH = 300  # characters of MLflow's error shown to a person
_MAX_PARAM_LENGTH = 6000  # MLflow refuses longer parameter values
_class_lock = threading.Lock()
_SERVERLESS_SCHEMES = ("sqlite", "file", "postgresql", "mysql", "mssql", "")  # stores MLflow opens itself


def experiment_name(tenant: str) -> str:
    """One experiment per tenant: runs, models and their artifacts stay apart."""
    return f"tenant:{tenant}"


def is_available() -> bool:
    """MLflow is installed (without importing it): lets a caller skip tracking
    quietly where the `tracking` extra is not installed."""
    return importlib.util.find_spec("mlflow") is not None


def log_training(model, *, settings: Settings | None = None, experiment: str, run_name: str,
                 params: dict, tags: dict, model_path: str | None = None) -> dict:
    """Record one fitted `AutoML` as one run of `experiment`, with the model as a
    pyfunc model; returns {"run_id", "experiment_id", "model_uri"}.

    Call it after the model is trained and saved. Tracking is a record, not the
    job: every failure (MLflow missing, store unreachable, disk full) raises
    `TrackingError` with a code and a readable message, which the caller catches
    and keeps as a warning of the job instead of failing it.

    `params` (target, time budget, seed, device, dataset id...) override the
    ones read from the model; `tags` (tenant, job id...) are set on the run and
    on the logged model. `model_path` is the model's `.automl` file, copied into
    MLflow; without it the model is saved to a temporary file first.
    """
    settings = settings or get_settings()
    uri = settings.mlflow_tracking_uri
    if not uri:
        raise TrackingError("tracking_not_configured")
    if not is_available():
        raise TrackingError("tracking_not_installed")
    _check_server(uri)
    try:
        return _log_training(model, settings, uri, experiment, run_name, params, tags, model_path)
    except TrackingError:
        raise
    except Exception as error:  # anything MLflow, SQLAlchemy, HTTP or the disk raise
        raise TrackingError("tracking_failed", uri=_masked(uri), reason=_reason(error, uri)) from error


def _check_server(uri: str) -> None:
    """One quick look at an MLflow server before logging: MLflow's client
    retries a server that does not answer for minutes, and the job would wait
    that long to say so. Any HTTP answer, even a refusal, means one is there."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{parts.port}" if parts.port else "")
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        urllib.request.urlopen(url, timeout=SERVER_CHECK_TIMEOUT).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise TrackingError("tracking_failed", uri=_masked(uri), reason=f"no answer ({reason})") from None


def _log_training(model, settings, uri, experiment, run_name, params, tags, model_path) -> dict:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag

    client = MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    experiment_id = _experiment(client, experiment, uri, settings)
    tags = {str(k): str(v) for k, v in tags.items()}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        all_params = {**_model_params(model), **params}
        client.log_batch(
            run_id,
            params=[Param(str(k), str(v)[:_MAX_PARAM_LENGTH]) for k, v in all_params.items()],
            metrics=[Metric(k, v, _now_ms(), 0) for k, v in _model_metrics(model).items()],
            tags=[RunTag("automl.best_model", str(model.best_model_))],
        )
        _log_tables(client, run_id, model)
        model_id = _log_model(client, experiment_id, run_id, model, model_path, tags)
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
    except BaseException:
        _quietly(client.set_terminated, run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return {"run_id": run_id, "experiment_id": experiment_id, "model_uri": f"models:/{model_id}"}


def _quietly(function, *args) -> None:
    """Mark a record failed without hiding the error that made it fail."""
    try:
        function(*args)
    except Exception:
        pass


def _experiment(client, name: str, uri: str, settings: Settings) -> str:
    """Get or create; a store without a server keeps the artifacts under the
    state dir (its default would be ./mlruns of whatever directory the job
    runs in). The folder is named after the experiment, with a hash of the
    exact name so that two names that read alike never share it."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":  # its name stays taken: the tenant could never log again
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = None
    if urllib.parse.urlsplit(uri).scheme.split("+", 1)[0] in _SERVERLESS_SCHEMES:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60] or "experiment"
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        location = (settings.state_dir / ARTIFACTS_DIR / f"{slug}-{digest}").absolute().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another job created it meanwhile
        if found is None:
            raise
        return found.experiment_id


def _model_params(model) -> dict:
    estimator = {k: v for k, v in model.get_params().items() if k not in ("callback", "n_jobs")}
    return {**estimator, "target": model.target_, "task": model.task_, "metric": model.metric_,
            "n_features": len(model.feature_names_in_)}


def _model_metrics(model) -> dict[str, float]:
    """Every validation score, the best score under its metric's name, the fit
    time and the number of trials; values that are not numbers are left out."""
    values = {**model.validation_scores_, model.metric_: model.best_score_,
              "fit_time": model.fit_time_, "n_trials": model.n_trials_}
    metrics = {}
    for name, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isnan(number):
            metrics[str(name)] = number
    return metrics


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_tables(client, run_id: str, model) -> None:
    from .engine.persistence import _jsonable

    for name, frame in (("leaderboard", model.leaderboard_), ("feature_importance", model.feature_importance_)):
        records = _jsonable(frame.to_dict(orient="records"))
        client.log_text(run_id, json.dumps(records, indent=1, default=str), f"{name}.json")
        client.log_text(run_id, frame.to_csv(index=False), f"{name}.csv")


def _log_model(client, experiment_id: str, run_id: str, model, model_path, tags: dict) -> str:
    """Log the pyfunc model as MLflow 3's `log_model` does, but through our
    client (theirs reads the global tracking URI and active run)."""
    import mlflow.pyfunc
    from mlflow.models import Model

    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id, tags=tags,
                                        model_type="automl")
    try:
        with tempfile.TemporaryDirectory(prefix="automl-mlflow-") as tmp:
            if model_path is None:
                model_path = model.save(Path(tmp) / "model.automl")
            local = Path(tmp) / MODEL_NAME
            with warnings.catch_warnings():  # advice for notebooks (type hints, input example)
                warnings.simplefilter("ignore", UserWarning)
                mlflow.pyfunc.save_model(
                    path=str(local),
                    python_model=_model_class()(),
                    artifacts={"model": str(model_path)},
                    signature=_signature(model),
                    pip_requirements=_pip_requirements(),
                    mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                       run_id=run_id, model_id=logged.model_id),
                )
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        _quietly(client.finalize_logged_model, logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def _signature(model):
    """The serving signature, from the schema the model was fitted on rather
    than from data rows, so no customer row is copied into MLflow. Every column
    is optional (the engine imputes missing values). Integer and boolean
    columns accept any value: MLflow refuses int64 for a double column, a null
    for a long one, and turns a null into False for a boolean one, while the
    engine coerces them itself. Classifiers take a `predict_method` parameter:
    "predict" (labels, the default) or "predict_proba"."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    columns = [ColSpec(_mlflow_type(spec["dtype"]), str(name), required=False)
               for name, spec in model.input_schema_.items()]
    params = None
    if model.task_ != "regression":
        params = ParamSchema([ParamSpec("predict_method", "string", "predict")])
    return ModelSignature(inputs=Schema(columns), params=params)


def _mlflow_type(dtype: str):
    from mlflow.types.schema import AnyType

    dtype = dtype.lower()
    if dtype.startswith("float"):
        return "double"
    if dtype.startswith("datetime64"):
        return "datetime"
    if dtype.startswith(("int", "uint", "bool")):
        return AnyType()
    return "string"


def _pip_requirements() -> list[str]:
    """Our package and the exact versions that pickled the model: loading it
    elsewhere needs the same major.minor of these (see engine.persistence)."""
    import mlflow

    requirements = [f"mlflow=={mlflow.__version__}"]
    for names in (("automl-hub",), ("scikit-learn",), ("xgboost-cpu", "xgboost"), ("numpy",), ("pandas",)):
        for name in names:
            try:
                requirements.append(f"{name}=={importlib_metadata.version(name)}")
                break
            except importlib_metadata.PackageNotFoundError:
                continue
    return requirements


def _masked(uri: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", uri)


def _reason(error: BaseException, uri: str) -> str:
    """The first line of the error, short, with the URI's password hidden."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    password = re.match(r"^[^:]+://[^:/@]*:([^@]*)@", uri)
    if password and password.group(1):
        text = text.replace(password.group(1), "***")
    if len(text) > REASON_LENGTH:  # cut after a whole sentence where there is one
        cut = text[:REASON_LENGTH].rfind(". ")
        text = text[:cut + 1] if cut > REASON_LENGTH // 3 else text[:REASON_LENGTH] + "…"
    return text


def _model_class():
    """`AutoMLModel`, the pyfunc model class. Defined on first use, so that
    importing this module does not import MLflow, and published as
    `automl.tracking.AutoMLModel`, so that MLflow pickles a reference to it
    (loading needs automl-hub installed), not its code."""
    with _class_lock:
        if "AutoMLModel" not in globals():
            globals()["AutoMLModel"] = _define_model_class()
    return globals()["AutoMLModel"]


def _define_model_class():
    import mlflow.pyfunc

    class AutoMLModel(mlflow.pyfunc.PythonModel):
        """The run's `.automl` file, predicting a DataFrame: labels (values,
        for regression) by default; for a classifier with the parameter
        predict_method="predict_proba", one probability column per class."""

        def load_context(self, context):
            from .engine import AutoML

            self.model = AutoML.load(context.artifacts["model"])

        def predict(self, context, model_input, params=None):
            method = (params or {}).get("predict_method", "predict")
            if method not in PREDICT_METHODS:
                raise ValueError(f"predict_method must be one of {', '.join(PREDICT_METHODS)}, not {method!r}")
            if method == "predict_proba":
                import pandas as pd

                return pd.DataFrame(self.model.predict_proba(model_input),
                                    columns=[str(c) for c in self.model.classes_])
            return self.model.predict(model_input)

    AutoMLModel.__qualname__ = "AutoMLModel"
    return AutoMLModel


def __getattr__(name):
    if name == "AutoMLModel":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
