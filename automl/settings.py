"""The one reader of the environment.

Every component asks this module for its configuration, so that a variable name
of the deployment guide (`.env.example`) appears in exactly one place. With no
environment at all, the values describe the embedded default: SQLite, local
storage and a local job pool under one state directory.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import SettingsError

LANGUAGES = ("fr", "en")
ENVIRONMENTS = ("development", "production")
STORAGE_BACKENDS = ("local", "s3", "gcs", "none")
SECRETS_FILE = "secrets.json"

# Values that `.env.example` and the compose file ship with: a production
# deployment that still uses one of them is refused at start.
EXAMPLE_VALUES = frozenset({
    "minioadmin",
    "change-this-secret-key",
    "change-this-password",
    "change-me",
    "changeme",
    "password",
    "secret",
})

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mi": 1024**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
          "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4}


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    default_language: str = "fr"
    state_dir: Path = Path("automl-state")
    database_url: str = ""
    storage_backend: str = "local"
    storage_root: Path = Path("automl-state/artifacts")
    minio_endpoint: str = ""
    minio_access_key: str = ""
    minio_secret_key: str = field(default="", repr=False)
    minio_bucket: str = "automl"
    minio_secure: bool = True
    gcs_bucket: str = "automl"
    gcs_project: str = ""
    gcs_endpoint: str = ""  # an emulator's URL; empty for Google's own
    secret_key: str = field(default="", repr=False)
    max_upload_size: int = 2 * 1000**3
    rate_limit_enabled: bool = True
    default_rate_limit: int = 120  # requests per user per minute
    redis_url: str = ""
    trial_duration_days: int = 14
    mlflow_tracking_uri: str = ""
    job_workers: int = 1
    hub_url: str = "http://127.0.0.1:8000"  # where the proxy listens: the platform's address
    # Set by JupyterHub for the services it manages (its own contract).
    service_url: str = "http://127.0.0.1:10101"
    service_prefix: str = "/services/automl/"

    @property
    def production(self) -> bool:
        return self.environment == "production"


def _text(env, name, default=""):
    value = env.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def _flag(env, name, default: bool) -> bool:
    value = _text(env, name)
    if not value:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError("setting_not_boolean", name=name, value=value)


def _integer(env, name, default: int, low: int = 0) -> int:
    value = _text(env, name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError("setting_not_integer", name=name, value=value) from None
    if number < low:
        raise SettingsError("setting_too_small", name=name, value=value, low=low)
    return number


def parse_size(value: str, name: str = "size") -> int:
    """'2GB', '500MiB', '1048576' -> bytes (decimal units, binary with 'i')."""
    match = _SIZE.match(value)
    if not match:
        raise SettingsError("setting_not_size", name=name, value=value)
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def _choice(env, name, choices, default):
    value = _text(env, name, default).lower()
    if value not in choices:
        raise SettingsError("setting_bad_choice", name=name, value=value, choices=", ".join(choices))
    return value


def _language(value: str | None) -> str:
    value = (value or "fr").strip().lower()[:2]
    return value if value in LANGUAGES else "fr"


def from_environment(env=None) -> Settings:
    """Settings from `env` (os.environ by default); raises SettingsError on a value
    that cannot mean anything, naming the variable."""
    env = os.environ if env is None else env
    state_dir = Path(_text(env, "AUTOML_STATE_DIR", "automl-state")).expanduser().absolute()
    max_upload = _text(env, "MAX_UPLOAD_SIZE")
    return Settings(
        environment=_choice(env, "ENVIRONMENT", ENVIRONMENTS, "development"),
        default_language=_language(env.get("DEFAULT_LANGUAGE")),
        state_dir=state_dir,
        database_url=_text(env, "DATABASE_URL", f"sqlite:///{state_dir / 'automl.sqlite'}"),
        storage_backend=_choice(env, "STORAGE_BACKEND", STORAGE_BACKENDS, "local"),
        storage_root=Path(_text(env, "STORAGE_ROOT", str(state_dir / "artifacts"))).expanduser().absolute(),
        minio_endpoint=_text(env, "MINIO_ENDPOINT"),
        minio_access_key=_text(env, "MINIO_ACCESS_KEY"),
        minio_secret_key=_text(env, "MINIO_SECRET_KEY"),
        minio_bucket=_text(env, "MINIO_BUCKET", "automl"),
        minio_secure=_flag(env, "MINIO_SECURE", True),
        gcs_bucket=_text(env, "GCS_BUCKET", "automl"),
        gcs_project=_text(env, "GCS_PROJECT"),
        gcs_endpoint=_text(env, "GCS_ENDPOINT"),
        secret_key=_text(env, "SECRET_KEY"),
        max_upload_size=parse_size(max_upload, "MAX_UPLOAD_SIZE") if max_upload else Settings.max_upload_size,
        rate_limit_enabled=_flag(env, "RATE_LIMIT_ENABLED", True),
        default_rate_limit=_integer(env, "DEFAULT_RATE_LIMIT", 120, low=1),
        redis_url=_text(env, "REDIS_URL"),
        trial_duration_days=_integer(env, "TRIAL_DURATION_DAYS", 14, low=1),
        mlflow_tracking_uri=_text(env, "MLFLOW_TRACKING_URI", f"sqlite:///{state_dir / 'mlflow.sqlite'}"),
        job_workers=_integer(env, "JOB_WORKERS", 1, low=1),
        hub_url=_text(env, "HUB_URL", Settings.hub_url).rstrip("/"),
        service_url=_text(env, "JUPYTERHUB_SERVICE_URL", Settings.service_url),
        service_prefix="/" + _text(env, "JUPYTERHUB_SERVICE_PREFIX", Settings.service_prefix).strip("/") + "/",
    )


def to_environment(settings: Settings) -> dict[str, str]:
    """The settings, as the variables that `automl.settings` reads back.

    JupyterHub passes a managed service only a short whitelist of its own
    environment (PATH, VIRTUAL_ENV...), so the platform's settings go explicitly.
    """
    values = {
        "ENVIRONMENT": settings.environment,
        "DEFAULT_LANGUAGE": settings.default_language,
        "AUTOML_STATE_DIR": str(settings.state_dir),
        "DATABASE_URL": settings.database_url,
        "STORAGE_BACKEND": settings.storage_backend,
        "STORAGE_ROOT": str(settings.storage_root),
        "MINIO_ENDPOINT": settings.minio_endpoint,
        "MINIO_ACCESS_KEY": settings.minio_access_key,
        "MINIO_SECRET_KEY": settings.minio_secret_key,
        "MINIO_BUCKET": settings.minio_bucket,
        "MINIO_SECURE": "true" if settings.minio_secure else "false",
        "GCS_BUCKET": settings.gcs_bucket,
        "GCS_PROJECT": settings.gcs_project,
        "GCS_ENDPOINT": settings.gcs_endpoint,
        "SECRET_KEY": settings.secret_key,
        "MAX_UPLOAD_SIZE": str(settings.max_upload_size),
        "RATE_LIMIT_ENABLED": "true" if settings.rate_limit_enabled else "false",
        "DEFAULT_RATE_LIMIT": str(settings.default_rate_limit),
        "REDIS_URL": settings.redis_url,
        "TRIAL_DURATION_DAYS": str(settings.trial_duration_days),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "JOB_WORKERS": str(settings.job_workers),
    }
    return {name: value for name, value in values.items() if value != ""}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return from_environment()


def is_example(value: str) -> bool:
    return value.strip().lower() in EXAMPLE_VALUES or value.strip().lower().startswith("change-this")


def _url_password(url: str) -> str:
    match = re.match(r"^[a-z0-9+]+://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else ""


def check_secrets(settings: Settings) -> None:
    """In production, refuse a missing or example-valued critical secret: the
    deployment would otherwise run with a key that is printed in our docs."""
    if not settings.production:
        return
    critical = {"SECRET_KEY": settings.secret_key}
    if settings.storage_backend == "s3":
        critical["MINIO_ACCESS_KEY"] = settings.minio_access_key
        critical["MINIO_SECRET_KEY"] = settings.minio_secret_key
    if not settings.database_url.startswith("sqlite"):
        critical["DATABASE_URL"] = _url_password(settings.database_url) or "missing password"
    for name, value in critical.items():
        if not value:
            raise SettingsError("secret_missing", name=name)
        if is_example(value) or value == "missing password":
            raise SettingsError("secret_example", name=name)


# The embedded default's secrets, by name: what makes each.
EMBEDDED_SECRETS = {
    "secret_key": lambda: secrets.token_hex(32),  # signs artifacts
    "hub_password": lambda: secrets.token_urlsafe(18),  # local accounts' shared password
    "hub_admin_password": lambda: secrets.token_urlsafe(33),  # JupyterHub wants 32 characters or more
}


def embedded_secrets(settings: Settings | None = None) -> dict[str, str]:
    """The embedded default generates its secrets on first run into a 0600 file
    of the state directory, as JupyterHub does with its cookie secret, so a
    restart keeps them; a file from an older version gets the ones it lacks."""
    settings = settings or get_settings()
    path = settings.state_dir / SECRETS_FILE
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise SettingsError("secrets_file_open", path=str(path)) from None
        values = json.loads(path.read_text())
        missing = EMBEDDED_SECRETS.keys() - values.keys()
        if not missing:
            return values
        values.update({name: EMBEDDED_SECRETS[name]() for name in missing})
        partial = path.with_name(path.name + ".new")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle)
        os.replace(partial, path)
        return values
    values = {name: make() for name, make in EMBEDDED_SECRETS.items()}
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    return values


def platform_secret(settings: Settings | None = None) -> bytes:
    """The key that signs artifacts: SECRET_KEY in production, else the embedded default's own."""
    settings = settings or get_settings()
    if settings.secret_key:
        return settings.secret_key.encode()
    if settings.production:
        raise SettingsError("secret_missing", name="SECRET_KEY")
    return embedded_secrets(settings)["secret_key"].encode()
