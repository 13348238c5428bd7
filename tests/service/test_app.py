"""The app factory, without a hub: what happens before any request."""

import pytest

from automl.errors import SettingsError
from automl.settings import from_environment
from hub.service.app import create_app, describe_validation


def test_production_refuses_to_start_on_an_example_secret(tmp_path):
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path), "ENVIRONMENT": "production",
                                 "SECRET_KEY": "change-this-secret-key"})
    with pytest.raises(SettingsError) as caught:
        create_app(settings)
    assert caught.value.code == "secret_example"
    assert not (tmp_path / "automl.sqlite").exists()  # refused before touching anything


def test_validation_errors_name_the_field_in_words():
    code, params = describe_validation([{"type": "greater_than_equal", "loc": ("body", "time_budget"),
                                         "msg": "Input should be greater than or equal to 1", "ctx": {"ge": 1}}])
    assert code == "field_too_small" and params["field"] == "time_budget" and params["ge"] == 1
