"""Models: list, inspect, download, delete, and predict on JSON rows.

Prediction runs in the warm interactive child, which keeps recently used models
loaded; the file is verified against its signature before it is unpickled.
"""

from __future__ import annotations

import asyncio

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from automl.db import models as db
from automl.db import get_owned
from automl.i18n import language as default_language
from automl.jobs import build_notebook, build_report, forget_model, predict_rows
from automl.storage import artifact_prefix

from ..app import language
from ..auth import Caller, require
from ..schemas import ModelDetail, ModelOut, PredictIn, PredictOut
from .deps import platform, session

router = APIRouter(tags=["models"])
CHUNK = 1 << 20
MODEL_FILES_KEPT = 10_000


@router.get("/models", response_model=list[ModelOut])
def list_models(request: Request, caller: Caller = Depends(require("read"))):
    with session(request) as s:
        rows = s.scalars(select(db.Model).where(db.Model.tenant == caller.tenant).order_by(db.Model.created_at.desc()))
        return [ModelOut.model_validate(r, from_attributes=True) for r in rows]


@router.get("/models/{model_id}", response_model=ModelDetail)
def get_model(model_id: str, request: Request, caller: Caller = Depends(require("read"))):
    with session(request) as s:
        return ModelDetail.model_validate(get_owned(s, db.Model, caller.tenant, model_id), from_attributes=True)


@router.get("/models/{model_id}/download", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def download_model(model_id: str, request: Request, caller: Caller = Depends(require("read"))):
    """The model file, for `AutoML.load` in the caller's own Python."""
    with session(request) as s:
        row = get_owned(s, db.Model, caller.tenant, model_id)
        key, name, size = row.storage_key, row.name, row.size_bytes
    return StreamingResponse(stream(platform(request).storage, key), media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{safe_name(name)}.automl"',
                                      "Content-Length": str(size)})


def stream(storage, key):
    """An artifact's bytes, read from storage a chunk at a time."""
    handle = storage.open(key)

    def chunks():
        with handle:
            while block := handle.read(CHUNK):
                yield block

    return chunks()


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "model"


@router.delete("/models/{model_id}", status_code=204)
def delete_model(model_id: str, request: Request, caller: Caller = Depends(require("train"))):
    with session(request, write=True) as s:
        row = get_owned(s, db.Model, caller.tenant, model_id)
        key = row.storage_key
        s.delete(row)
    platform(request).model_files.pop((caller.tenant, model_id), None)
    storage = platform(request).storage
    storage.delete(key)
    storage.delete_prefix(artifact_prefix(caller.tenant, "reports", model_id))
    platform(request).runner.call(forget_model, model_id)
    return Response(status_code=204)


@router.post("/models/{model_id}/predict", response_model=PredictOut)
async def predict(model_id: str, body: PredictIn, request: Request, caller: Caller = Depends(require("read"))):
    p = platform(request)
    place = (caller.tenant, model_id)
    if place not in p.model_files:
        def lookup():
            with session(request) as s:
                row = get_owned(s, db.Model, caller.tenant, model_id)
                return row.storage_key, row.signature

        p.model_files[place] = await run_in_threadpool(lookup)
        while len(p.model_files) > MODEL_FILES_KEPT:
            p.model_files.popitem(last=False)
    key, signature = p.model_files[place]
    future = p.runner.call(predict_rows, model_id, key, signature, body.rows, p.settings)
    return await asyncio.wrap_future(future)


@router.get("/models/{model_id}/report", response_class=StreamingResponse,
            responses={200: {"content": {"text/html": {}}}})
async def model_report(model_id: str, request: Request, lang: Literal["fr", "en"] | None = Query(None),
                       caller: Caller = Depends(require("read"))):
    """The model's report as one HTML page, readable offline (images embedded, no
    scripts). Rendered on first request in each language, then kept."""
    p = platform(request)
    lang = lang or language(request) or default_language()

    def lookup():
        with session(request) as s:
            row = get_owned(s, db.Model, caller.tenant, model_id)
            return row.storage_key, row.signature

    key, signature = await run_in_threadpool(lookup)
    future = p.runner.call(build_report, caller.tenant, model_id, key, signature, lang, p.settings)
    report_key = await asyncio.wrap_future(future)
    return StreamingResponse(stream(p.storage, report_key), media_type="text/html; charset=utf-8")


@router.get("/models/{model_id}/notebook", responses={200: {"content": {"application/x-ipynb+json": {}}}})
async def model_notebook(model_id: str, request: Request, lang: Literal["fr", "en"] | None = Query(None),
                         caller: Caller = Depends(require("read"))):
    """A plain notebook that trains this model again with the public Python API:
    put the data file beside it and run it."""
    p = platform(request)
    lang = lang or language(request) or default_language()

    def lookup():
        with session(request) as s:
            row = get_owned(s, db.Model, caller.tenant, model_id)
            job = s.get(db.Job, row.job_id) if row.job_id else None
            dataset = s.get(db.Dataset, row.dataset_id) if row.dataset_id else None
            params = dict(job.params) if job else {"seed": 0}
            if job is not None:
                params["device"] = job.device
            return (dataset.filename if dataset else "data.csv"), row.target, params, row.name

    filename, target, params, name = await run_in_threadpool(lookup)
    body = await asyncio.wrap_future(p.runner.call(build_notebook, filename, target, params, lang))
    return Response(body, media_type="application/x-ipynb+json",
                    headers={"Content-Disposition": f'attachment; filename="{safe_name(name)}.ipynb"'})
