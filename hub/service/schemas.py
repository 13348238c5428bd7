"""Request and response models: they validate every input and generate the
OpenAPI document, which is therefore never written by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_BUDGET = 24 * 3600  # seconds: a day; longer work belongs to a batch plan, not a click
MAX_PREDICT_ROWS = 1000
ID = Field(pattern=r"^[0-9a-f]{32}$", description="an id returned by this API")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    error: str = Field(description="stable code, for programs")
    message: str = Field(description="text for people, in the caller's language")


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class QuotaOut(BaseModel):
    """Usage against the plan's limits; None means unlimited."""

    plan: str
    disabled: bool
    trial_expires_at: datetime | None
    active_jobs: int
    max_concurrent_jobs: int
    compute_minutes_used: float
    monthly_compute_minutes: int | None
    storage_used_bytes: int
    storage_bytes: int | None
    max_upload_size: int
    gpu_allowed: bool


class PlanIn(Strict):
    max_concurrent_jobs: int = Field(ge=1, le=1000)
    monthly_compute_minutes: int | None = Field(None, ge=0, description="None: unlimited")
    storage_bytes: int | None = Field(None, ge=0, description="None: unlimited")
    max_upload_size: int | None = Field(None, ge=1, description="None: the deployment's MAX_UPLOAD_SIZE")
    gpu_allowed: bool = False
    trial_days: int | None = Field(None, ge=1, le=3650, description="set for a trial plan")


class PlanOut(PlanIn):
    name: str


class TenantUpdate(Strict):
    plan: str | None = Field(None, min_length=1, max_length=64)
    disabled: bool | None = None
    extend_trial_days: int | None = Field(None, ge=1, le=3650)


class TenantOut(BaseModel):
    name: str
    created_at: datetime
    quota: QuotaOut


class UsageRow(BaseModel):
    month: str
    tenant: str
    user: str
    kind: str
    amount: float
    events: int


class MeOut(BaseModel):
    user: str
    tenant: str
    roles: list[str]
    scopes: list[str]
    quota: QuotaOut


class DatasetOut(BaseModel):
    id: str
    name: str
    filename: str
    format: str
    size_bytes: int
    n_rows: int
    n_columns: int
    owner: str
    created_at: datetime
    columns: list[dict[str, Any]]
    guardrails: list[dict[str, Any]]


class DatasetDetail(DatasetOut):
    profile: dict[str, Any]
    preview: list[dict[str, Any]]


class JobCreate(Strict):
    dataset_id: str = ID
    target: str = Field(min_length=1, max_length=256)
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    metric: str = Field("auto", min_length=1, max_length=64)
    time_budget: int = Field(60, ge=1, le=MAX_BUDGET, description="seconds")
    device: Literal["cpu", "gpu"] = "cpu"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    name: str | None = Field(None, min_length=1, max_length=200)


class JobOut(BaseModel):
    id: str
    kind: str
    status: str
    owner: str
    dataset_id: str | None
    model_id: str | None
    params: dict[str, Any]
    device: str
    progress: dict[str, Any] | None
    leaderboard: list[dict[str, Any]] | None
    error: ErrorOut | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int


class ModelOut(BaseModel):
    id: str
    name: str
    owner: str
    job_id: str | None
    dataset_id: str | None
    task: str
    metric: str
    target: str
    best_score: float
    size_bytes: int
    created_at: datetime


class ModelDetail(ModelOut):
    leaderboard: list[dict[str, Any]]
    details: dict[str, Any]


class BatchCreate(Strict):
    dataset_id: str = ID


class PredictIn(Strict):
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_PREDICT_ROWS)


class PredictOut(BaseModel):
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None = None
