"""Datasets: a streaming upload, parsed and profiled once, then stored once.

The body is written to a scratch file as it arrives (never held in memory) and
cut off at the limit; the file is parsed in the interactive child, with the
same reader as training, so a file that would fail training fails here, with a
4xx, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from automl import quotas
from automl.db import models as db
from automl.db import get_owned
from automl.errors import ConflictError, DataError, QuotaError
from automl.jobs import now, profile_upload
from automl.storage import artifact_key

from ..auth import Caller, require
from ..schemas import DatasetDetail, DatasetOut
from .deps import platform, session

router = APIRouter(tags=["datasets"])

FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,199}$")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".xlsx": "excel", ".xlsm": "excel"}


def upload_extension(filename: str) -> str:
    """The extension the stored file keeps ('.csv.gz' included): the reader decides
    the format from it and from the content. Path-like names are refused."""
    if not FILENAME.match(filename) or ".." in filename:
        raise DataError("bad_filename", name=filename[:100])
    suffixes = [s.lower() for s in Path(filename).suffixes]
    gz = suffixes[-1:] == [".gz"]
    ext = suffixes[-2] if gz and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if ext not in FORMATS:
        raise DataError("file_format_unsupported", path=filename, found=ext or "?",
                        formats="CSV, TSV, Parquet, Excel (.xlsx)")
    return ext + (".gz" if gz else "")


DRAIN_BYTES = 64 * 1000**2  # read and drop this much of a refused body, so the client reads our 413


async def _refuse(request: Request, error: QuotaError, received: int = 0):
    """Answer 413 only once the client has stopped sending: a server that replies
    mid-body and closes makes most clients (and the proxy) report a reset
    connection instead of our message. Past DRAIN_BYTES, we stop listening."""
    async for chunk in request.stream():
        received += len(chunk)
        if received > DRAIN_BYTES:
            break
    error.headers = {"Connection": "close"}
    raise error


async def _receive(request: Request, path: Path, limit: int) -> int:
    size = 0
    with open(path, "wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                await _refuse(request, QuotaError("upload_too_large", http_status=413, limit_mb=round(limit / 1e6, 1)), size)
            handle.write(chunk)
    return size


@router.post("/datasets", response_model=DatasetDetail, status_code=201)
async def upload_dataset(
    request: Request,
    filename: str = Query(min_length=1, max_length=200, description="the file's own name: its extension tells the format"),
    name: str | None = Query(None, min_length=1, max_length=200),
    caller: Caller = Depends(require("train")),
):
    """Send the file as the raw request body (Content-Type application/octet-stream)."""
    p = platform(request)
    ext = upload_extension(filename)

    def limit_for(size):
        with session(request, write=True) as s:  # a first upload may create the tenant
            quotas.check_upload_size(s, caller.tenant, size, p.settings)
            return quotas.upload_limit(s, caller.tenant, p.settings)

    declared = int(request.headers.get("content-length") or 0)
    try:
        limit = await run_in_threadpool(limit_for, declared)
    except QuotaError as error:
        await _refuse(request, error)
    scratch = p.settings.state_dir / "uploads"
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"{uuid.uuid4().hex}{ext}"
    try:
        size = await _receive(request, path, limit)
        if size == 0:
            raise DataError("file_empty", path=filename)
        future = p.runner.parse(profile_upload, str(path), filename, limit)
        info = await asyncio.wrap_future(future)
        return await run_in_threadpool(_store, request, caller, path, filename, name, ext, size, info)
    finally:
        path.unlink(missing_ok=True)


def _store(request, caller, path, filename, name, ext, size, info) -> db.Dataset:
    p = platform(request)
    with session(request) as s:
        quotas.check_storage(s, caller.tenant, size)
    dataset_id = db.new_id()
    key = artifact_key(caller.tenant, "datasets", dataset_id, "data" + ext)
    p.storage.put_file(key, str(path))
    try:
        with session(request, write=True) as s:
            row = db.Dataset(
                id=dataset_id, tenant=caller.tenant, owner=caller.name, name=name or filename, filename=filename,
                format=FORMATS[ext.removesuffix(".gz")], size_bytes=size, storage_key=key, created_at=now(), **info,
            )
            s.add(row)
            quotas.record_usage(s, caller.tenant, caller.name, "upload", size)
            s.flush()
            return DatasetDetail.model_validate(row, from_attributes=True)
    except BaseException:
        p.storage.delete(key)
        raise


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(request: Request, caller: Caller = Depends(require("read"))):
    with session(request) as s:
        rows = s.scalars(select(db.Dataset).where(db.Dataset.tenant == caller.tenant)
                         .order_by(db.Dataset.created_at.desc()))
        return [DatasetOut.model_validate(r, from_attributes=True) for r in rows]


@router.get("/datasets/{dataset_id}", response_model=DatasetDetail)
def get_dataset(dataset_id: str, request: Request, caller: Caller = Depends(require("read"))):
    with session(request) as s:
        return DatasetDetail.model_validate(get_owned(s, db.Dataset, caller.tenant, dataset_id), from_attributes=True)


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, request: Request, caller: Caller = Depends(require("train"))):
    with session(request, write=True) as s:
        row = get_owned(s, db.Dataset, caller.tenant, dataset_id)
        active = s.scalar(select(db.Job.id).where(db.Job.dataset_id == row.id,
                                                  db.Job.status.in_(("queued", "running"))).limit(1))
        if active:
            raise ConflictError("dataset_in_use", job=active)
        key = row.storage_key
        s.delete(row)
    platform(request).storage.delete(key)
    return Response(status_code=204)

