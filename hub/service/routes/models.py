"""Models: list, inspect, download, delete, and predict on JSON rows.

Prediction runs in the warm interactive child, which keeps recently used models
loaded; the file is verified against its signature before it is unpickled.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from automl.db import models as db
from automl.db import get_owned
from automl.jobs import forget_model, predict_rows

from ..auth import Caller, require
from ..schemas import ModelDetail, ModelOut, PredictIn, PredictOut
from .deps import platform, session

router = APIRouter(tags=["models"])
CHUNK = 1 << 20


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
    handle = platform(request).storage.open(key)

    def chunks():
        with handle:
            while block := handle.read(CHUNK):
                yield block

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "model"
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{safe}.automl"', "Content-Length": str(size)})


@router.delete("/models/{model_id}", status_code=204)
def delete_model(model_id: str, request: Request, caller: Caller = Depends(require("train"))):
    with session(request) as s:
        row = get_owned(s, db.Model, caller.tenant, model_id)
        key = row.storage_key
        s.delete(row)
    platform(request).storage.delete(key)
    platform(request).runner.call(forget_model, model_id)
    return Response(status_code=204)


@router.post("/models/{model_id}/predict", response_model=PredictOut)
async def predict(model_id: str, body: PredictIn, request: Request, caller: Caller = Depends(require("read"))):
    p = platform(request)

    def lookup():
        with session(request) as s:
            row = get_owned(s, db.Model, caller.tenant, model_id)
            return row.storage_key, row.signature

    key, signature = await run_in_threadpool(lookup)
    future = p.runner.call(predict_rows, model_id, key, signature, body.rows, p.settings)
    return await asyncio.wrap_future(future)
