"""save/load: one file, checked before unpickling."""

import json
import zipfile

import numpy as np
import pytest

from automl import AutoML
from automl.engine import read_metadata
from automl.errors import ModelFileError


@pytest.fixture(scope="module")
def saved(binary_df, tmp_path_factory):
    model = AutoML(time_budget=None, max_trials=2, callback=lambda e: None).fit(binary_df, target="bought")
    path = tmp_path_factory.mktemp("models") / "model.automl"
    model.save(path)
    return model, path


def test_round_trip_predicts_the_same(saved, binary_df):
    model, path = saved
    loaded = AutoML.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(binary_df), model.predict_proba(binary_df))
    assert loaded.callback is None
    assert loaded.leaderboard_.equals(model.leaderboard_)


def test_metadata_is_readable_without_unpickling(saved):
    model, path = saved
    meta = read_metadata(path)
    assert meta["task"] == "binary" and meta["metric"] == "roc_auc" and meta["target"] == "bought"
    assert meta["classes"] == ["no", "yes"]
    assert meta["schema"]["city"]["kind"] == "categorical"
    assert {"python", "scikit-learn", "xgboost", "numpy", "pandas"} <= set(meta["versions"])
    assert len(meta["leaderboard"]) == len(model.leaderboard_)
    assert meta["ensemble"] == model.ensemble_


def _rewrite_metadata(source, target, change):
    with zipfile.ZipFile(source) as archive:
        meta = json.loads(archive.read("metadata.json"))
        payload = archive.read("model.pkl")
    change(meta)
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("model.pkl", payload)


def test_other_library_versions_give_a_clear_message(saved, tmp_path):
    _, path = saved
    other = tmp_path / "old.automl"
    _rewrite_metadata(path, other, lambda meta: meta["versions"].update({"scikit-learn": "0.24.2"}))
    with pytest.raises(ModelFileError) as error:
        AutoML.load(other)
    assert error.value.code == "model_file_versions"
    message = error.value.message("en")
    assert "scikit-learn 0.24.2" in message and "scikit-learn==0.24.2" in message


def test_other_file_format_is_refused(saved, tmp_path):
    _, path = saved
    other = tmp_path / "future.automl"
    _rewrite_metadata(path, other, lambda meta: meta.update({"format": 99}))
    with pytest.raises(ModelFileError) as error:
        AutoML.load(other)
    assert error.value.code == "model_file_format"


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_files_that_are_not_models_are_refused(tmp_path, content):
    path = tmp_path / "x.automl"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as error:
        AutoML.load(path)
    assert error.value.code == "model_file_invalid"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError) as error:
        AutoML.load(tmp_path / "nope.automl")
    assert "no such file" in error.value.message("en")
