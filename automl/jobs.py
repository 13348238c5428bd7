"""What the platform's long work does, and the local runner that executes it.

The platform service never trains, parses or predicts in its own process: its
memory stays small and a crash in the scientific stack cannot take it down. Work
goes to child processes — a pool for training jobs and a one-process pool for
the short interactive work (profiling an upload, predicting a few rows) — and
the metadata DB stays the source of truth: a child claims a queued job
atomically, heartbeats while it runs, and writes its result only if the job is
still its own. That is what makes a restart safe (see `LocalRunner.recover`).
Every transaction that reads and then writes is `immediate`: on SQLite, a
deferred one fails with "database is locked" when the heartbeat wrote between
its read and its write.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .errors import AutoMLError
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a job interrupted by a restart runs again once, then fails with a reason
HEARTBEAT_SECONDS = 1.0
STALE_SECONDS = 60.0  # a running job without a heartbeat for this long has lost its process
PREVIEW_ROWS = 20
TOP_VALUES = 5
LIVE_LEADERBOARD_ROWS = 10
MODEL_CACHE_SIZE = 4  # fitted models kept loaded in the interactive child


def now() -> datetime:
    return datetime.now(timezone.utc)


# --- profiling an upload (runs in a child) -----------------------------------------


def profile_upload(path: str, filename: str, max_bytes: int | None = None) -> dict:
    """Parse the file as training will, and describe it: a bad file is refused here,
    at upload, with the same DataError the CLI gives, rather than at training."""
    import pandas as pd

    from .engine import checks
    from .errors import DataError
    from .tables import read_table

    df = read_table(path, max_bytes=max_bytes, name=filename)
    if df.shape[1] < 2:  # nothing to learn from; almost always a delimiter we do not split on
        raise DataError("file_one_column", path=filename, column=str(df.columns[0])[:80])
    kinds, guards = checks.infer_column_kinds(df)
    columns, profile = [], {}
    for name in df.columns:
        series = df[name]
        missing = int(series.isna().sum())
        entry = {"missing": missing, "missing_pct": round(100 * missing / max(len(df), 1), 2),
                 "unique": int(series.nunique(dropna=True))}
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            stats = series.describe()
            entry.update({k: _number(stats.get(k)) for k in ("mean", "std", "min", "25%", "50%", "75%", "max")})
        else:
            top = series.astype("string").value_counts(dropna=True).head(TOP_VALUES)
            entry["top"] = [{"value": str(v), "count": int(c)} for v, c in top.items()]
        columns.append({"name": str(name), "dtype": str(series.dtype), "kind": kinds.get(name, "ignored")})
        profile[str(name)] = entry
    preview = json.loads(df.head(PREVIEW_ROWS).to_json(orient="records", date_format="iso"))
    return {"n_rows": len(df), "n_columns": df.shape[1], "columns": columns, "profile": profile,
            "preview": preview, "guardrails": _jsonable(guards)}


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


# --- predicting (runs in the interactive child) --------------------------------------

_models: OrderedDict = OrderedDict()


def _load_model(path: str, signature: str, settings: Settings):
    """Verify, then unpickle: only files the platform signed itself are loaded."""
    from .engine import AutoML
    from .signing import verify_file

    verify_file(path, signature, settings=settings)
    return AutoML.load(path)


def predict_rows(model_id: str, storage_key: str, signature: str, rows: list[dict], settings: Settings) -> dict:
    """Predictions for JSON rows, with the loaded model cached in this child so the
    second call pays only for the prediction."""
    import numpy as np
    import pandas as pd

    from .storage import get_storage

    model = _models.get(model_id)
    if model is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "model.automl")
            get_storage(settings).get_file(storage_key, path)
            model = _load_model(path, signature, settings)
        _models[model_id] = model
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)
        _freeze_loaded_models()
    _models.move_to_end(model_id)
    frame = pd.DataFrame.from_records(rows)
    check_columns(frame, list(model.feature_names_in_))
    if model.task_ == "regression":
        return {"predictions": [_plain(v) for v in np.asarray(model.predict(frame)).tolist()]}
    proba = model.predict_proba(frame)  # once: the predicted class is its argmax
    labels = [str(c) for c in model.classes_]
    return {"predictions": [_plain(v) for v in model.classes_[proba.argmax(axis=1)].tolist()],
            "probabilities": [dict(zip(labels, map(float, row))) for row in proba]}


def check_columns(frame, expected: list[str]) -> None:
    """Rows must carry exactly the training columns: a missing column would be
    silently imputed and an extra one silently ignored, both surprises."""
    from .errors import DataError

    given = [str(c) for c in frame.columns]
    missing = [c for c in expected if c not in given]
    extra = [c for c in given if c not in expected]
    if missing:
        raise DataError("predict_columns_missing", columns=", ".join(missing[:10]))
    if extra:
        raise DataError("predict_columns_extra", columns=", ".join(extra[:10]))


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def forget_model(model_id: str) -> None:
    _models.pop(model_id, None)
    _freeze_loaded_models()


def _freeze_loaded_models() -> None:
    """Loaded models are many long-lived objects that the garbage collector would
    walk at every full collection, in the middle of some prediction: the p99
    latency. Frozen, they are left out of collections; thawed and collected again
    when the set of loaded models changes, so a forgotten model's cycles are freed."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


def warm_up(settings: Settings | None = None) -> int:
    """Import the scientific stack in a fresh child so the first job does not pay
    for it; a job child also opens the MLflow store (1-2 s the first time)."""
    import automl.engine  # noqa: F401
    from . import tracking

    if settings is not None and tracking.is_available():
        import mlflow

        try:
            mlflow.MlflowClient(settings.mlflow_tracking_uri).search_experiments(max_results=1)
        except Exception:  # noqa: BLE001 - only a warm-up: the job reports tracking problems
            log.warning("MLflow store %s not reachable at warm-up", settings.mlflow_tracking_uri)

    return multiprocessing.current_process().pid


# --- training (runs in a job child) --------------------------------------------------


@dataclass
class _Claim:
    job_id: str
    attempt: int


def run_job(job_id: str, settings: Settings) -> str:
    """Run one queued job to its end. Idempotent: a job that is not queued any more
    (cancelled, claimed by another run) is left alone."""
    from .db import models as db
    from .db.session import make_engine, session_scope

    engine = make_engine(settings.database_url)
    claim = _claim(engine, job_id)
    if claim is None:
        engine.dispose()
        return "skipped"
    progress = _Progress(engine, claim)
    progress.start()
    try:
        with session_scope(engine) as session:
            job = session.get(db.Job, job_id)
            kind = job.kind
        work = {"train": _train, "predict": _predict_batch}.get(kind)
        if work is None:
            raise AutoMLError("job_kind_unknown", kind=kind)
        return work(engine, claim, settings, progress)
    except AutoMLError as error:
        _finish(engine, job_id, claim, status="failed", error_code=error.code, error_params=_jsonable(error.params))
        return "failed"
    except Exception as error:  # noqa: BLE001 - any crash is the job's failure, with a reason
        log.exception("job %s crashed", job_id)
        _finish(engine, job_id, claim, status="failed", error_code="job_crashed",
                error_params={"reason": f"{type(error).__name__}: {error}"[:300]})
        return "failed"
    finally:
        progress.stop()
        _record_compute(engine, claim)
        engine.dispose()


def _record_compute(engine, claim: _Claim) -> None:
    """Every run of a job counts against the tenant's monthly minutes, whatever its end."""
    from .db import models as db
    from .db.session import session_scope
    from .quotas import record_usage

    with session_scope(engine, immediate=True) as session:
        job = session.get(db.Job, claim.job_id)
        if job is not None and job.attempts == claim.attempt and job.finished_at is not None:
            record_usage(session, job.tenant, job.owner, "compute_seconds", job.compute_seconds or 0.0, job_id=job.id)


def _claim(engine, job_id: str) -> _Claim | None:
    from sqlalchemy import update

    from .db import models as db
    from .db.session import session_scope

    with session_scope(engine, immediate=True) as session:
        job = session.get(db.Job, job_id)
        if job is None or job.status != "queued":
            return None
        attempt = job.attempts + 1
        stamp = now()
        result = session.execute(
            update(db.Job).where(db.Job.id == job_id, db.Job.status == "queued")
            .values(status="running", attempts=attempt, started_at=stamp, heartbeat_at=stamp)
        )
        if result.rowcount != 1:
            return None
    return _Claim(job_id, attempt)


def _still_mine(session, claim: _Claim):
    from .db import models as db

    job = session.get(db.Job, claim.job_id)
    return job if job is not None and job.status == "running" and job.attempts == claim.attempt else None


def _finish(engine, job_id, claim: _Claim, **values) -> bool:
    """Write the job's end, unless another run has taken it over since."""
    from .db.session import session_scope

    with session_scope(engine, immediate=True) as session:
        job = _still_mine(session, claim)
        if job is None:
            return False
        for key, value in values.items():
            setattr(job, key, value)
        job.finished_at = now()
        if job.started_at is not None:
            started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=timezone.utc)
            job.compute_seconds = (job.finished_at - started).total_seconds()
    return True


class _Progress:
    """The job's heartbeat, from its claim to its end, carrying the engine's
    events as the job's progress fields (written at most once per beat); the
    same thread notices cancellation and a takeover."""

    def __init__(self, engine, claim: _Claim):
        self.engine, self.claim = engine, claim
        self.state = {"phase": "starting", "trials": 0, "best_score": None, "best_model": None,
                      "elapsed": 0.0, "eta": None}
        self.board: list[dict] = []
        self.dirty = True
        self.model = None
        self.stop_requested = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __call__(self, event: dict):
        kind = event["event"]
        self.state["phase"] = {"start": "searching", "trial": "searching", "ensemble": "ensembling"}.get(kind, kind)
        self.state["elapsed"] = round(float(event.get("elapsed") or 0.0), 2)
        self.state["eta"] = None if event.get("remaining") is None else round(float(event["remaining"]), 2)
        self.state["trials"] = int(event.get("n_trials") or 0)
        if event.get("best_score") is not None:
            self.state["best_score"] = float(event["best_score"])
            self.state["best_model"] = event.get("best_model")
        if kind == "trial":
            self.board.append({"model": event["model"], "score": float(event["score"])})
        self.dirty = True

    def start(self):
        self._thread.start()

    def attach(self, model):
        """The fit to stop on cancellation; a stop asked before it exists applies at once."""
        self.model = model
        if self.stop_requested:
            model.cancel()

    def stop(self):
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._write()

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._write()

    def _write(self):
        from .db.session import session_scope

        with session_scope(self.engine, immediate=True) as session:
            job = _still_mine(session, self.claim)
            if job is None or job.cancel_requested:  # cancelled by a user, or taken over after a restart
                self.stop_requested = True
                if self.model is not None:
                    self.model.cancel()
            if job is None:
                return
            job.heartbeat_at = now()
            if self.dirty:
                job.progress = dict(self.state)
                job.leaderboard = self.board[-200:]
                self.dirty = False


def _train(engine, claim: _Claim, settings: Settings, progress: _Progress) -> str:
    from .db import models as db
    from .db.session import session_scope
    from .engine import AutoML
    from .quotas import record_usage
    from .signing import sign_file
    from .storage import artifact_key, get_storage
    from .tables import read_table

    with session_scope(engine) as session:
        job = session.get(db.Job, claim.job_id)
        dataset = session.get(db.Dataset, job.dataset_id)
        if dataset is None:
            raise AutoMLError("dataset_gone")
        params, tenant, owner = dict(job.params), job.tenant, job.owner
        dataset_key, filename, dataset_id = dataset.storage_key, dataset.filename, dataset.id
    storage = get_storage(settings)
    with tempfile.TemporaryDirectory(prefix="automl-job-") as tmp:
        data_path = Path(tmp) / ("data" + "".join(Path(filename).suffixes[-2:]))
        storage.get_file(dataset_key, str(data_path))
        frame = read_table(data_path, name=filename)
        model = AutoML(time_budget=params["time_budget"], max_trials=params.get("max_trials"),
                       task=params.get("task", "auto"), metric=params.get("metric", "auto"),
                       seed=params.get("seed", 0), device="cuda" if params.get("device") == "gpu" else "cpu",
                       callback=progress)
        progress.attach(model)
        model.fit(frame, target=params["target"])
        del frame
        model_path = Path(tmp) / "model.automl"
        model.save(model_path)
        signature = sign_file(model_path, settings=settings)
        model_id = db.new_id()
        key = artifact_key(tenant, "models", model_id, "model.automl")
        size = storage.put_file(key, str(model_path))
        board = _jsonable(model.leaderboard_.to_dict(orient="records"))
        with session_scope(engine, immediate=True) as session:
            if _still_mine(session, claim) is None:
                storage.delete(key)
                return "superseded"
            session.add(db.Model(
                id=model_id, tenant=tenant, owner=owner, job_id=claim.job_id, dataset_id=dataset_id,
                name=params.get("name") or f"{params['target']} ({model.best_model_})", task=model.task_,
                metric=model.metric_, target=str(model.target_), best_score=float(model.best_score_),
                leaderboard=board, details=_details(model), storage_key=key, size_bytes=size,
                signature=signature, created_at=now(),
            ))
            record_usage(session, tenant, owner, "storage_bytes", size, job_id=claim.job_id)
        status = "cancelled" if model.stopped_by_ == "cancelled" else "succeeded"
        progress.state.update(phase="done", eta=0.0)
        progress.stop()  # its last beat must not land after the job's end
        _finish(engine, claim.job_id, claim, status=status, model_id=model_id, progress=dict(progress.state),
                leaderboard=board)
        # After the job's end, so that its overhead does not include MLflow.
        _track(engine, model, model_path, model_id, settings, tenant=tenant, owner=owner, job_id=claim.job_id,
               params={"dataset_id": dataset_id, "filename": filename, "device": params.get("device", "cpu"),
                       "time_budget": params["time_budget"]})
    return status


def _details(model) -> dict:
    return {
        "feature_importance": _jsonable(model.feature_importance_.to_dict(orient="records")),
        "plot_data": _jsonable(model.plot_data_),
        "guardrails": _jsonable(model.guardrails_),
        "input_schema": _jsonable(model.input_schema_),
        "classes": None if model.classes_ is None else [str(c) for c in model.classes_],
        "validation_scores": _jsonable(model.validation_scores_),
        "ensemble": _jsonable(model.ensemble_),
        "stopped_by": model.stopped_by_,
        "fit_time": model.fit_time_,
    }


def _track(engine, model, model_path, model_id, settings, *, tenant, owner, job_id, params) -> None:
    """The job as an MLflow run, its model as a pyfunc. Tracking is a record, not
    the product: when it fails, the model keeps a warning and stays usable."""
    from .db import models as db
    from .db.session import session_scope
    from .errors import TrackingError
    from .tracking import experiment_name, is_available, log_training

    if not is_available():
        return
    try:
        run = log_training(model, settings=settings, experiment=experiment_name(tenant), run_name=f"job {job_id}",
                           params=params, tags={"tenant": tenant, "owner": owner, "job_id": job_id,
                                                "model_id": model_id}, model_path=str(model_path))
        extra = {"mlflow": run}
    except TrackingError as error:
        log.warning("tracking of job %s failed: %s", job_id, error.message("en"))
        extra = {"tracking_warning": {"error": error.code, **_jsonable(error.params)}}
    with session_scope(engine, immediate=True) as session:
        row = session.get(db.Model, model_id)
        if row is not None:
            row.details = {**row.details, **extra}


def _predict_batch(engine, claim: _Claim, settings: Settings, progress: _Progress) -> str:
    """File in, file out: the rows of a stored data set, predicted by a stored
    model, written as CSV next to the job (the input's columns, then the
    prediction and, for classification, one probability column per class)."""
    from .db import models as db
    from .db.session import session_scope
    from .storage import artifact_key, get_storage
    from .tables import read_table

    with session_scope(engine) as session:
        job = session.get(db.Job, claim.job_id)
        dataset = session.get(db.Dataset, job.dataset_id) if job.dataset_id else None
        model_row = session.get(db.Model, job.model_id) if job.model_id else None
        if dataset is None:
            raise AutoMLError("dataset_gone")
        if model_row is None:
            raise AutoMLError("model_gone")
        tenant = job.tenant
        dataset_key, filename = dataset.storage_key, dataset.filename
        model_key, signature, target = model_row.storage_key, model_row.signature, model_row.target
    storage = get_storage(settings)
    with tempfile.TemporaryDirectory(prefix="automl-job-") as tmp:
        model_path = Path(tmp) / "model.automl"
        storage.get_file(model_key, str(model_path))
        model = _load_model(str(model_path), signature, settings)
        data_path = Path(tmp) / ("data" + "".join(Path(filename).suffixes[-2:]))
        storage.get_file(dataset_key, str(data_path))
        frame = read_table(data_path, name=filename)
        features = frame.drop(columns=[target]) if target in frame.columns else frame
        check_columns(features, list(model.feature_names_in_))
        out = features.copy()
        out[f"predicted_{target}"] = model.predict(features)
        if model.task_ != "regression":
            proba = model.predict_proba(features)
            for k, label in enumerate(model.classes_):
                out[f"probability_{label}"] = proba[:, k]
        out_path = Path(tmp) / "predictions.csv"
        out.to_csv(out_path, index=False)
        key = artifact_key(tenant, "predictions", claim.job_id, "predictions.csv")
        storage.put_file(key, str(out_path))
    progress.stop()
    written = _finish(engine, claim.job_id, claim, status="succeeded", result_key=key,
                      progress={"phase": "done", "rows": len(out)})
    if not written:
        storage.delete(key)
        return "superseded"
    return "succeeded"


# --- the local runner (lives in the service process) ------------------------------


class LocalRunner:
    """The embedded default's executor: process pools on this machine. The Celery
    runner of the scale-out issue offers the same calls.

    A job child that dies (killed, out of memory) breaks its pool and takes the
    pool's other children with it: the next `reap` builds a new pool and runs
    `recover`, as after a restart. A child that hangs stops its heartbeat: `reap`
    takes its job back after STALE_SECONDS."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self._context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._broken = threading.Event()
        self.jobs = self._pool(self.settings.job_workers, self.settings)
        self.interactive = self._pool(1)
        self.uploads = self._pool(1)

    def _pool(self, workers: int, settings: Settings | None = None) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(workers, mp_context=self._context)
        for _ in range(workers):
            pool.submit(warm_up, settings)
        return pool

    def submit(self, job_id: str):
        future = self.jobs.submit(run_job, job_id, self.settings)
        future.add_done_callback(self._watch)
        return future

    def _watch(self, future):
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            self._broken.set()

    def call(self, function, *args):
        """Short interactive work (predictions, reports) in its warm child; returns
        a concurrent Future."""
        try:
            return self.interactive.submit(function, *args)
        except BrokenProcessPool:
            self.interactive = self._pool(1)
            return self.interactive.submit(function, *args)

    def parse(self, function, *args):
        """Parsing an upload, in a child of its own: a large file takes minutes and
        gigabytes, and predictions must not wait behind it."""
        try:
            return self.uploads.submit(function, *args)
        except BrokenProcessPool:
            self.uploads = self._pool(1)
            return self.uploads.submit(function, *args)

    def recover(self, engine) -> dict:
        """No process runs any job now (at start, or after the pool broke): jobs
        left `running` run again from the start (bounded by MAX_ATTEMPTS) or fail
        with the reason; queued jobs are submitted again. Nothing stays `running`."""
        from sqlalchemy import select

        from .db import models as db
        from .db.session import session_scope

        result = {"requeued": [], "failed": [], "queued": []}
        with session_scope(engine, immediate=True) as session:
            for job in session.scalars(select(db.Job).where(db.Job.status.in_(("running", "queued")))):
                if job.status == "queued":
                    result["queued"].append(job.id)
                else:
                    result[_take_back(job, "job_interrupted")].append(job.id)
        for job_id in result["requeued"] + result["queued"]:
            self.submit(job_id)
        return result

    def reap(self, engine, stale_after: float = None) -> dict:
        """Called periodically by the service: rebuild a broken pool, and take back
        running jobs whose heartbeat stopped."""
        from sqlalchemy import select

        from .db import models as db
        from .db.session import session_scope

        if self._broken.is_set():
            self._broken.clear()
            self.jobs.shutdown(wait=False, cancel_futures=True)
            self.jobs = self._pool(self.settings.job_workers, self.settings)
            return self.recover(engine)
        limit = now() - timedelta(seconds=STALE_SECONDS if stale_after is None else stale_after)
        result = {"requeued": [], "failed": [], "queued": []}
        with session_scope(engine, immediate=True) as session:
            stale = select(db.Job).where(db.Job.status == "running", db.Job.heartbeat_at < limit)
            for job in session.scalars(stale):
                result[_take_back(job, "job_lost")].append(job.id)
        for job_id in result["requeued"]:
            self.submit(job_id)
        return result

    def shutdown(self, wait: bool = False):
        for pool in (self.jobs, self.interactive, self.uploads):
            pool.shutdown(wait=wait, cancel_futures=True)


def _take_back(job, reason: str) -> str:
    """A running job whose process is gone: queued again while attempts remain,
    else failed with `reason` (or cancelled, if that was asked)."""
    if job.attempts < MAX_ATTEMPTS and not job.cancel_requested:
        job.status = "queued"
        return "requeued"
    job.status = "cancelled" if job.cancel_requested else "failed"
    job.error_code = None if job.cancel_requested else reason
    job.error_params = None if job.cancel_requested else {"attempts": job.attempts}
    job.finished_at = now()
    return "failed"


def metric_table() -> dict[str, list[str]]:
    """Metric name -> tasks, for validating a job request before it is queued."""
    from .engine.metrics import METRICS

    return {name: list(metric.tasks) for name, metric in METRICS.items()}


# --- reports (run in the interactive child) -----------------------------------------


def build_report(tenant: str, model_id: str, storage_key: str, signature: str, lang: str, settings: Settings) -> str:
    """The model's HTML report, rendered once per language and kept in storage;
    returns its key. Rendering unpickles the model: the signature is checked first."""
    from .reports import render_report
    from .signing import verify_file
    from .storage import artifact_key, get_storage

    storage = get_storage(settings)
    key = artifact_key(tenant, "reports", model_id, f"report-{lang}.html")
    if storage.exists(key):
        return key
    with tempfile.TemporaryDirectory(prefix="automl-report-") as tmp:
        model_path = Path(tmp) / "model.automl"
        storage.get_file(storage_key, str(model_path))
        verify_file(model_path, signature, settings=settings)
        html = render_report(model_path, Path(tmp) / "out" / "report.html", lang=lang)
        storage.put_file(key, str(html))
    return key


def build_notebook(filename: str, target: str, params: dict, lang: str) -> bytes:
    """The job as a plain notebook that trains the same model with the public API."""
    import nbformat

    from .reports import training_notebook

    notebook = training_notebook(data_path=filename, target=target, params=params, lang=lang)
    return nbformat.writes(notebook).encode()
