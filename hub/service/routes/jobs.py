"""Training jobs: submit (202 + the job), follow, list, cancel.

The quota check and the insert are one locked transaction (automl.quotas), so
two submissions cannot both take a tenant's last slot.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from automl import quotas
from automl.db import models as db
from automl.db import get_owned
from automl.errors import ConflictError, DataError
from automl.i18n import message

from ..app import language
from ..auth import Caller, require
from ..schemas import BatchCreate, JobCreate, JobOut
from .deps import platform, session
from .models import stream

router = APIRouter(tags=["jobs"])

ACTIVE = ("queued", "running")


def job_out(job: db.Job, request: Request) -> JobOut:
    error = None
    if job.error_code:
        error = {"error": job.error_code, "message": message(job.error_code, language(request), **(job.error_params or {}))}
    return JobOut(
        id=job.id, kind=job.kind, status=job.status, owner=job.owner, dataset_id=job.dataset_id,
        model_id=job.model_id, params=job.params or {}, device=job.device, progress=job.progress,
        leaderboard=job.leaderboard, error=error, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, attempts=job.attempts,
    )


def check_request(body: JobCreate, dataset: db.Dataset, metrics: dict) -> None:
    """What can be known before queuing is refused now, with the engine's own words."""
    names = [c["name"] for c in dataset.columns]
    if body.target not in names:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise DataError("target_missing", target=body.target, columns=shown)
    stats = dataset.profile.get(body.target, {})
    if stats.get("unique", 2) < 2:
        value = (stats.get("top") or [{}])[0].get("value", stats.get("min"))
        if stats.get("unique", 0) == 0:
            raise DataError("target_all_missing", target=body.target)
        raise DataError("target_constant", target=body.target, value=value)
    if body.metric != "auto":
        tasks = metrics.get(body.metric)
        if tasks is None or (body.task != "auto" and body.task not in tasks):
            choices = sorted(m for m, t in metrics.items() if body.task == "auto" or body.task in t)
            raise DataError("bad_metric", value=body.metric, task=body.task, choices=", ".join(choices))


@router.post("/jobs", response_model=JobOut, status_code=202)
def submit_job(body: JobCreate, request: Request, caller: Caller = Depends(require("train"))):
    p = platform(request)
    with session(request) as s:
        dataset = get_owned(s, db.Dataset, caller.tenant, body.dataset_id)
        check_request(body, dataset, p.metrics)
    params = body.model_dump(exclude={"dataset_id", "device"})
    job = quotas.submit_job(p.engine, caller.tenant, caller.name, kind="train", dataset_id=body.dataset_id,
                            params=params, device=body.device, settings=p.settings)
    p.runner.submit(job.id)
    with session(request) as s:
        return job_out(s.get(db.Job, job.id), request)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(request: Request, status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
              caller: Caller = Depends(require("read"))):
    with session(request) as s:
        query = select(db.Job).where(db.Job.tenant == caller.tenant)
        if status:
            query = query.where(db.Job.status == status)
        return [job_out(j, request) for j in s.scalars(query.order_by(db.Job.created_at.desc()).limit(500))]


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, request: Request, caller: Caller = Depends(require("read"))):
    with session(request) as s:
        return job_out(get_owned(s, db.Job, caller.tenant, job_id), request)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, status_code=202)
def cancel_job(job_id: str, request: Request, caller: Caller = Depends(require("train"))):
    """A queued job is cancelled at once; a running one stops at its next
    heartbeat and keeps the best model found so far."""
    with session(request, write=True) as s:
        job = get_owned(s, db.Job, caller.tenant, job_id)
        if job.status not in ACTIVE:
            raise ConflictError("job_finished", status=job.status)
        s.execute(update(db.Job).where(db.Job.id == job_id, db.Job.status == "queued")
                  .values(status="cancelled", finished_at=db.utcnow()))
        s.execute(update(db.Job).where(db.Job.id == job_id).values(cancel_requested=True))
    with session(request) as s:
        return job_out(s.get(db.Job, job_id), request)


EVENT_POLL_SECONDS = 0.5
EVENT_KEEPALIVE_SECONDS = 15


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request, caller: Caller = Depends(require("read"))):
    """Server-Sent Events: the job each time it changes, until it ends. The
    EventSource of a browser reconnects by itself; each event is the whole job,
    so a reconnect needs no replay."""

    def read():
        with session(request) as s:
            return job_out(get_owned(s, db.Job, caller.tenant, job_id), request)

    first = await run_in_threadpool(read)  # a 404 before the stream starts

    async def stream():
        job, last, quiet = first, None, 0.0
        while True:
            text = job.model_dump_json()
            if text != last:
                yield f"event: job\ndata: {text}\n\n"
                last, quiet = text, 0.0
            elif quiet >= EVENT_KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet = 0.0
            if job.status not in ACTIVE or await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)
            quiet += EVENT_POLL_SECONDS
            job = await run_in_threadpool(read)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/models/{model_id}/batch", response_model=JobOut, status_code=202, tags=["models"])
def batch_predict(model_id: str, body: BatchCreate, request: Request, caller: Caller = Depends(require("train"))):
    """Predict every row of an uploaded data set, as a job; its output is a CSV
    file at `jobs/{id}/output`."""
    p = platform(request)
    with session(request) as s:
        model = get_owned(s, db.Model, caller.tenant, model_id)
        get_owned(s, db.Dataset, caller.tenant, body.dataset_id)
        params = {"model_id": model.id, "dataset_id": body.dataset_id}
    job = quotas.submit_job(p.engine, caller.tenant, caller.name, kind="predict", dataset_id=body.dataset_id,
                            model_id=model_id, params=params, device="cpu", settings=p.settings)
    p.runner.submit(job.id)
    with session(request) as s:
        return job_out(s.get(db.Job, job.id), request)


@router.get("/jobs/{job_id}/output", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}}})
def job_output(job_id: str, request: Request, caller: Caller = Depends(require("read"))):
    with session(request) as s:
        job = get_owned(s, db.Job, caller.tenant, job_id)
        if job.result_key is None:
            raise ConflictError("job_no_output", status=job.status)
        key = job.result_key
    return StreamingResponse(stream(platform(request).storage, key), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="predictions-{job_id}.csv"'})

