import json
import os
import stat

import pytest

from automl.errors import SettingsError
from automl.settings import check_secrets, embedded_secrets, from_environment, parse_size, platform_secret


def test_no_environment_is_the_embedded_default(tmp_path):
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path)})
    assert settings.environment == "development"
    assert settings.database_url == f"sqlite:///{tmp_path / 'automl.sqlite'}"
    assert settings.storage_backend == "local"
    assert settings.storage_root == tmp_path / "artifacts"
    assert settings.service_prefix == "/services/automl/"


@pytest.mark.parametrize("text, size", [("2GB", 2 * 10**9), ("500MiB", 500 * 2**20), ("1048576", 2**20), ("1.5kb", 1500)])
def test_sizes_take_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("env, name", [
    ({"MAX_UPLOAD_SIZE": "big"}, "MAX_UPLOAD_SIZE"),
    ({"RATE_LIMIT_ENABLED": "maybe"}, "RATE_LIMIT_ENABLED"),
    ({"DEFAULT_RATE_LIMIT": "0"}, "DEFAULT_RATE_LIMIT"),
    ({"TRIAL_DURATION_DAYS": "two"}, "TRIAL_DURATION_DAYS"),
    ({"STORAGE_BACKEND": "ftp"}, "STORAGE_BACKEND"),
    ({"ENVIRONMENT": "prod"}, "ENVIRONMENT"),
])
def test_a_meaningless_value_names_its_variable(env, name):
    with pytest.raises(SettingsError) as caught:
        from_environment(env)
    assert name in caught.value.message("en")


PRODUCTION = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": "4f1c0ffee4f1c0ffee4f1c0ffee",
    "DATABASE_URL": "postgresql+psycopg://automl:s3cr3t-pw@db:5432/automl",
    "STORAGE_BACKEND": "s3",
    "MINIO_ACCESS_KEY": "platform",
    "MINIO_SECRET_KEY": "a-real-long-secret",
}


def test_production_with_real_secrets_starts():
    check_secrets(from_environment(PRODUCTION))


@pytest.mark.parametrize("name, value, code", [
    ("SECRET_KEY", "", "secret_missing"),
    ("SECRET_KEY", "change-this-secret-key", "secret_example"),
    ("MINIO_SECRET_KEY", "minioadmin", "secret_example"),
    ("MINIO_ACCESS_KEY", "minioadmin", "secret_example"),
    ("MINIO_SECRET_KEY", "", "secret_missing"),
    ("DATABASE_URL", "postgresql+psycopg://automl:change-this-password@db/automl", "secret_example"),
    ("DATABASE_URL", "postgresql+psycopg://automl@db/automl", "secret_example"),
])
def test_production_refuses_missing_or_example_secrets(name, value, code):
    with pytest.raises(SettingsError) as caught:
        check_secrets(from_environment({**PRODUCTION, name: value}))
    assert caught.value.code == code
    assert caught.value.params["name"] == name


def test_every_example_value_of_env_example_is_refused_in_production():
    """The shipped example file must never start a production deployment as is."""
    path = os.path.join(os.path.dirname(__file__), "..", ".env.example")
    env = {}
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition("=")
            env[key] = value
    with pytest.raises(SettingsError):
        check_secrets(from_environment(env))


def test_embedded_default_generates_a_private_secret_once(tmp_path):
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path)})
    first = platform_secret(settings)
    assert len(first) == 64
    mode = stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode)
    assert mode == 0o600
    assert platform_secret(settings) == first  # a restart keeps it


def test_a_secrets_file_of_an_older_version_gets_the_secrets_it_lacks(tmp_path):
    """The hub's passwords came after the signing key: an existing state dir
    keeps its key (its signed models stay readable) and gains the passwords."""
    path = tmp_path / "secrets.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps({"secret_key": "ab" * 32}))
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path)})
    values = embedded_secrets(settings)
    assert values["secret_key"] == "ab" * 32 and platform_secret(settings) == b"ab" * 32
    assert len(values["hub_admin_password"]) >= 32 and len(values["hub_password"]) >= 8
    assert json.loads(path.read_text()) == values and embedded_secrets(settings) == values
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.json"]


def test_a_secrets_file_readable_by_others_is_refused(tmp_path):
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path)})
    platform_secret(settings)
    (tmp_path / "secrets.json").chmod(0o644)
    with pytest.raises(SettingsError) as caught:
        platform_secret(settings)
    assert caught.value.code == "secrets_file_open"


def test_production_never_generates_a_secret(tmp_path):
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path), "ENVIRONMENT": "production"})
    with pytest.raises(SettingsError):
        platform_secret(settings)
    assert not (tmp_path / "secrets.json").exists()
