"""Exceptions that carry a catalogue code, so each interface can render them."""

from __future__ import annotations


class AutoMLError(Exception):
    """An error a person can act on: `code` + `params`, text from the catalogue."""

    def __init__(self, code: str, **params):
        self.code = code
        self.params = params
        super().__init__(code)

    def message(self, lang: str | None = None) -> str:
        from .i18n import message  # late: i18n reads settings, which raise these errors

        return message(self.code, lang, **self.params)

    def __str__(self) -> str:
        return self.message()


class DataError(AutoMLError, ValueError):
    """The data cannot be used as given."""


class ParameterError(AutoMLError, ValueError):
    """A parameter of AutoML is out of its domain."""


class NotFittedError(AutoMLError, AttributeError):
    """The model is used before `fit`."""


class ModelFileError(AutoMLError, ValueError):
    """A model file cannot be loaded."""


class SettingsError(AutoMLError, ValueError):
    """The deployment's configuration cannot be used: named variable, reason."""


class QuotaError(AutoMLError):
    """A job or an upload is refused by the tenant's plan or state. `http_status`
    says how the API answers: 429 for a limit that frees up with time (running
    jobs, monthly minutes), 403 for one that needs an administrator, 413 for a
    file larger than allowed."""

    def __init__(self, code: str, *, http_status: int = 403, **params):
        super().__init__(code, **params)
        self.http_status = http_status


class NotFoundError(AutoMLError, LookupError):
    """A row is missing or belongs to another tenant: the two read the same, so
    that an id never reveals whether another tenant's object exists (API: 404)."""

    http_status = 404


class StorageError(AutoMLError, OSError):
    """An artifact cannot be stored or read: missing, storage disabled or unreachable."""


class ArtifactKeyError(StorageError, ValueError):
    """A storage key or prefix is malformed; raised before any byte is written."""


class ArtifactSignatureError(AutoMLError, ValueError):
    """A model file lacks the platform's signature or does not match it: refused
    before unpickling, since unpickling runs code."""


class ConflictError(AutoMLError):
    """The request is valid but the object's state forbids it now (API: 409)."""

    http_status = 409


class AuthError(AutoMLError):
    """401/403 from the platform service's gate: the caller is unknown to the hub
    (401), or known but outside a team or without the permission asked (403)."""

    def __init__(self, code: str, *, http_status: int = 401, **params):
        super().__init__(code, **params)
        self.http_status = http_status


class RateLimitError(AutoMLError):
    """A user sent more requests than the rate limit allows (DEFAULT_RATE_LIMIT
    per minute): API 429, and `headers` carries Retry-After, the whole seconds
    until a request would pass, so that clients back off by themselves."""

    http_status = 429

    def __init__(self, code: str = "rate_limited", *, retry_after: int, **params):
        super().__init__(code, retry_after=retry_after, **params)
        self.headers = {"Retry-After": str(retry_after)}


class ReportError(AutoMLError):
    """A model report or a run's notebook cannot be built: unreadable model file,
    a notebook cell that failed (named), a kernel that did not start or answer."""


class TrackingError(AutoMLError):
    """A trained model could not be recorded in MLflow (not installed, no
    address, store unreachable). Raised by `automl.tracking` after training:
    callers record it as a warning of the job, never as the job's failure."""
