"""MLflow tracking of training jobs, against a real sqlite tracking store and a
real `mlflow models serve` process."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

from automl import AutoML  # noqa: E402
from automl.datasets import make_churn  # noqa: E402
from automl.engine.persistence import _jsonable  # noqa: E402
from automl.errors import TrackingError  # noqa: E402
from automl.settings import from_environment  # noqa: E402
from automl.tracking import experiment_name, log_training  # noqa: E402

TARGET = "churned"


@pytest.fixture(scope="module")
def churn():
    return make_churn(300, seed=0)


@pytest.fixture(scope="module")
def model(churn):
    return AutoML(time_budget=None, max_trials=2, seed=0).fit(churn, target=TARGET)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("state")
    return from_environment({"AUTOML_STATE_DIR": str(state_dir)})


@pytest.fixture(scope="module")
def logged(model, settings, tmp_path_factory):
    path = model.save(tmp_path_factory.mktemp("model") / "model.automl")
    return log_training(model, settings=settings, experiment=experiment_name("acme"), run_name="job-1",
                        params={"dataset_id": "ds-1", "device": "cpu", "time_budget": 60},
                        tags={"tenant": "acme", "job_id": "job-1"}, model_path=path)


@pytest.fixture(scope="module")
def client(settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


@pytest.fixture
def tracking_env(monkeypatch, settings):
    """What a user of `mlflow.pyfunc.load_model("models:/...")` sets."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)


def rows(frame, n=40):
    return frame.drop(columns=TARGET).head(n)


def test_default_store_is_sqlite_under_the_state_dir(settings, logged, client):
    assert settings.mlflow_tracking_uri == f"sqlite:///{settings.state_dir / 'mlflow.sqlite'}"
    assert (settings.state_dir / "mlflow.sqlite").is_file()
    experiment = client.get_experiment(logged["experiment_id"])
    assert experiment.name == "tenant:acme"
    assert experiment.artifact_location.startswith((settings.state_dir / "mlruns").as_uri() + "/")


def test_run_records_params_metrics_and_tags(model, logged, client):
    run = client.get_run(logged["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "job-1"
    assert run.info.experiment_id == logged["experiment_id"]
    params = run.data.params
    assert params["target"] == TARGET
    assert params["task"] == model.task_ == "binary"
    assert params["metric"] == model.metric_ == "roc_auc"
    assert params["seed"] == "0"
    assert params["max_trials"] == "2"
    assert params["dataset_id"] == "ds-1"
    assert params["device"] == "cpu"  # the caller's value wins over the model's "auto"
    assert params["time_budget"] == "60"
    metrics = run.data.metrics
    assert metrics[model.metric_] == model.best_score_
    for name, value in model.validation_scores_.items():
        assert metrics[name] == pytest.approx(value, rel=1e-12)
    assert metrics["fit_time"] == model.fit_time_
    assert metrics["n_trials"] == model.n_trials_
    assert run.data.tags["tenant"] == "acme"
    assert run.data.tags["job_id"] == "job-1"
    assert run.data.tags["automl.best_model"] == model.best_model_


def test_run_holds_leaderboard_and_feature_importance(model, logged, client, tmp_path):
    names = {item.path for item in client.list_artifacts(logged["run_id"])}
    assert names == {"leaderboard.json", "leaderboard.csv", "feature_importance.json", "feature_importance.csv"}
    folder = client.download_artifacts(logged["run_id"], "", str(tmp_path))
    board = json.loads(open(os.path.join(folder, "leaderboard.json")).read())
    assert board == _jsonable(model.leaderboard_.to_dict(orient="records"))
    table = pd.read_csv(os.path.join(folder, "leaderboard.csv"))
    assert list(table.columns) == list(model.leaderboard_.columns)
    assert table["model"].tolist() == model.leaderboard_["model"].tolist()
    np.testing.assert_allclose(table["score"], model.leaderboard_["score"])
    importance = json.loads(open(os.path.join(folder, "feature_importance.json")).read())
    assert importance == _jsonable(model.feature_importance_.to_dict(orient="records"))


def test_model_is_a_finished_logged_model_of_the_run(logged, client):
    model_id = logged["model_uri"].removeprefix("models:/")
    logged_model = client.get_logged_model(model_id)
    assert str(logged_model.status) in ("READY", "LoggedModelStatus.READY")
    assert logged_model.source_run_id == logged["run_id"]
    assert logged_model.experiment_id == logged["experiment_id"]
    assert logged_model.tags["tenant"] == "acme"
    outputs = client.get_run(logged["run_id"]).outputs.model_outputs
    assert [output.model_id for output in outputs] == [model_id]


def test_logged_model_predicts_like_the_model(model, churn, logged, tracking_env, tmp_path):
    import mlflow

    loaded = mlflow.pyfunc.load_model(logged["model_uri"])
    X = rows(churn)
    predicted = loaded.predict(X)
    assert predicted.tolist() == model.predict(X).tolist()
    proba = loaded.predict(X, params={"predict_method": "predict_proba"})
    assert list(proba.columns) == ["no", "yes"]
    np.testing.assert_array_equal(proba.to_numpy(), model.predict_proba(X))
    with pytest.raises(Exception, match="predict_method"):
        loaded.predict(X, params={"predict_method": "decision_function"})
    requirements = mlflow.pyfunc.get_model_dependencies(logged["model_uri"])
    assert "automl-hub==0.1.0" in open(requirements).read().split("\n")


def test_logged_model_takes_missing_values_and_json_types(model, churn, logged, tracking_env):
    """What a JSON request becomes: integers with a null are floats, dates are
    strings (parsed by the signature's datetime type in the scoring server)."""
    import mlflow
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    loaded = mlflow.pyfunc.load_model(logged["model_uri"])
    X = rows(churn, 10)
    X.loc[0, "age"] = np.nan
    X.loc[1, "city"] = None
    payload = json.loads(X.to_json(orient="split", index=False, date_format="iso"))
    payload["data"][2][payload["columns"].index("support_calls")] = None
    parsed = infer_and_parse_data({"dataframe_split": payload}, loaded.metadata.get_input_schema())
    expected = X.copy()
    expected["support_calls"] = expected["support_calls"].astype(float)
    expected.loc[2, "support_calls"] = np.nan
    assert loaded.predict(parsed).tolist() == model.predict(expected).tolist()


def test_regression_model_predicts_values(regression_df, settings, tracking_env):
    import mlflow

    regressor = AutoML(time_budget=None, max_trials=1, seed=0).fit(regression_df, target="price")
    result = log_training(regressor, settings=settings, experiment=experiment_name("regress"), run_name="r",
                          params={}, tags={})
    X = regression_df.drop(columns="price").head(20)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(result["model_uri"]).predict(X), regressor.predict(X))


def test_tenants_get_their_own_experiment(model, settings, client):
    first = log_training(model, settings=settings, experiment=experiment_name("north"), run_name="a",
                         params={}, tags={"tenant": "north"})
    other = log_training(model, settings=settings, experiment=experiment_name("south"), run_name="b",
                         params={}, tags={"tenant": "south"})
    second = log_training(model, settings=settings, experiment=experiment_name("north"), run_name="c",
                          params={}, tags={"tenant": "north"})
    assert first["experiment_id"] == second["experiment_id"] != other["experiment_id"]
    assert first["run_id"] != second["run_id"]
    north = client.search_runs([first["experiment_id"]])
    assert {run.info.run_id for run in north} == {first["run_id"], second["run_id"]}
    south = client.search_runs([other["experiment_id"]])
    assert [run.info.run_id for run in south] == [other["run_id"]]
    locations = {client.get_experiment(e).artifact_location for e in (first["experiment_id"], other["experiment_id"])}
    assert len(locations) == 2
    assert all(location.startswith((settings.state_dir / "mlruns").as_uri()) for location in locations)


def test_a_deleted_tenant_experiment_is_restored(model, settings, client):
    first = log_training(model, settings=settings, experiment=experiment_name("gone"), run_name="a",
                         params={}, tags={})
    client.delete_experiment(first["experiment_id"])
    second = log_training(model, settings=settings, experiment=experiment_name("gone"), run_name="b",
                          params={}, tags={})
    assert second["experiment_id"] == first["experiment_id"]
    assert client.get_experiment(first["experiment_id"]).lifecycle_stage == "active"


def test_leaves_no_global_mlflow_state(model, settings, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    log_training(model, settings=settings, experiment=experiment_name("global"), run_name="g", params={}, tags={})
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == before != settings.mlflow_tracking_uri
    assert mlflow.active_run() is None


def test_a_model_that_cannot_be_logged_fails_its_run(model, settings, client, tmp_path):
    with pytest.raises(TrackingError) as caught:
        log_training(model, settings=settings, experiment=experiment_name("broken"), run_name="x",
                     params={}, tags={}, model_path=str(tmp_path / "missing.automl"))
    assert caught.value.code == "tracking_failed"
    experiment = client.get_experiment_by_name("tenant:broken")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("uri", ["nosuch://tracking", "http://127.0.0.1:{port}"])
def test_broken_tracking_uri_is_a_readable_error(model, tmp_path, uri):
    uri = uri.format(port=free_port())
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": uri})
    started = time.monotonic()
    with pytest.raises(TrackingError) as caught:
        log_training(model, settings=settings, experiment="tenant:acme", run_name="x", params={}, tags={})
    assert time.monotonic() - started < 10  # not MLflow's minutes of retries
    assert caught.value.code == "tracking_failed"
    text = caught.value.message("en")
    assert uri in text and "model itself can be used" in text
    assert uri in caught.value.message("fr")
    assert list(tmp_path.iterdir()) == []


def test_password_of_tracking_uri_is_not_shown(model, tmp_path):
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    settings = from_environment({"AUTOML_STATE_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": uri})
    with pytest.raises(TrackingError) as caught:
        log_training(model, settings=settings, experiment="tenant:acme", run_name="x", params={}, tags={})
    assert "s3cret" not in caught.value.message("en")


def test_no_tracking_uri(model, settings):
    with pytest.raises(TrackingError) as caught:
        log_training(model, settings=dataclasses.replace(settings, mlflow_tracking_uri=""),
                     experiment="tenant:acme", run_name="x", params={}, tags={})
    assert caught.value.code == "tracking_not_configured"
    assert "MLFLOW_TRACKING_URI" in caught.value.message("en")


def test_importing_tracking_does_not_load_mlflow():
    code = "import sys, automl.tracking; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_the_model(model, churn, logged, settings, tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", logged["model_uri"], "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        X = rows(churn, 25)
        split = json.loads(X.to_json(orient="split", index=False, date_format="iso"))
        for params, expected in ((None, model.predict(X).tolist()), ({"predict_method": "predict_proba"}, None)):
            body = {"dataframe_split": split, **({"params": params} if params else {})}
            request = urllib.request.Request(base + "/invocations", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                predictions = json.loads(answer.read())["predictions"]
            if expected is not None:
                assert predictions == expected
            else:
                got = np.array([[row["no"], row["yes"]] for row in predictions])
                np.testing.assert_allclose(got, model.predict_proba(X), rtol=1e-12)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
