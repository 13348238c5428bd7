"""The platform API through the real hub and proxy: datasets, jobs, models,
tenant isolation and the bad-input catalogue."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from automl.datasets import make_churn

DEADLINE = 120  # seconds for a short training job, start of the job child included


@pytest.fixture(scope="module")
def api(hub):
    clients = {}

    def client(user: str, lang: str = "en") -> httpx.Client:
        if (user, lang) not in clients:
            clients[user, lang] = httpx.Client(
                base_url=hub.service_url + "api/", timeout=60,
                headers={"Authorization": f"token {hub.tokens[user]}", "Accept-Language": lang})
        return clients[user, lang]

    yield client
    for c in clients.values():
        c.close()


def json_rows(n: int, seed: int) -> list[dict]:
    """Rows as a client sends them: JSON values, dates as ISO text."""
    frame = make_churn(n, seed=seed).drop(columns="churned")
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def csv_bytes(rows: int = 300, seed: int = 0) -> bytes:
    return make_churn(rows, seed=seed).to_csv(index=False).encode()


def upload(client, data: bytes, filename: str = "churn.csv", **params):
    return client.post("datasets", params={"filename": filename, **params}, content=data,
                       headers={"Content-Type": "application/octet-stream"})


def poll(client, path, done, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while True:
        body = client.get(path).json()
        if done(body) or time.monotonic() > end:
            return body
        time.sleep(0.2)


@pytest.fixture(scope="module")
def dataset(api):
    response = upload(api("ana"), csv_bytes())
    assert response.status_code == 201, response.text
    return response.json()


def test_health_needs_no_login(hub):
    response = httpx.get(hub.service_url + "api/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_me_tells_tenant_roles_and_plan(api):
    body = api("ana").get("me").json()
    assert body["user"] == "ana" and body["tenant"] == "acme"
    assert "custom:automl:train" in body["scopes"]
    assert body["quota"]["plan"] == "trial" and body["quota"]["trial_expires_at"]


def test_openapi_document_matches_the_real_routes(hub, api):
    """Each operation of the served document answers (no route-not-found), and
    the routes the clients rely on are documented."""
    document = httpx.get(hub.service_url + "api/openapi.json").json()
    prefix = "/services/automl/api"
    for path, operations in document["paths"].items():
        assert path.startswith(prefix + "/")
        concrete = re.sub(r"\{(\w+)\}", lambda m: "acme" if m.group(1) == "name" else "0" * 32, path)
        for method in operations:
            response = api("vic").request(method.upper(), concrete[len(prefix) + 1:])
            body = response.json()
            assert (response.status_code, body.get("error") if isinstance(body, dict) else None) not in (
                (404, "route_not_found"), (405, "method_not_allowed")), (method, path)
    for path in ("/health", "/me", "/datasets", "/datasets/{dataset_id}", "/jobs", "/jobs/{job_id}",
                 "/jobs/{job_id}/cancel", "/jobs/{job_id}/events", "/models", "/models/{model_id}",
                 "/models/{model_id}/download", "/models/{model_id}/predict", "/models/{model_id}/report"):
        assert prefix + path in document["paths"]
    assert "JobCreate" in document["components"]["schemas"]
    unknown = api("vic").get("no/such/route")
    assert unknown.status_code == 404 and unknown.json()["error"] == "route_not_found"


def test_upload_profiles_the_file(dataset):
    assert dataset["n_rows"] == 300 and dataset["format"] == "csv"
    names = [c["name"] for c in dataset["columns"]]
    assert "churned" in names
    assert dataset["profile"]["monthly_charges"]["max"] > 0
    assert dataset["profile"]["contract"]["top"]
    assert len(dataset["preview"]) == 20


def test_datasets_are_scoped_by_tenant(api, dataset):
    assert dataset["id"] in [d["id"] for d in api("vic").get("datasets").json()]
    assert dataset["id"] not in [d["id"] for d in api("bob").get("datasets").json()]
    response = api("bob").get(f"datasets/{dataset['id']}")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_a_viewer_cannot_upload(api):
    response = upload(api("vic"), csv_bytes(50))
    assert response.status_code == 403 and response.json()["error"] == "missing_scope"


BAD_FILES = [
    ("empty.csv", b"", "file_empty"),
    ("binary.csv", bytes(range(256)) * 40, "file_not_text"),
    ("latin.csv", b"a,b\n\x81\x8d,2\n", "file_encoding"),
    ("colons.csv", b"a:b:c\n1:2:3\n4:5:6\n", "file_one_column"),
    ("oneline.csv", b"a" * 2_000_000, "file_no_rows"),
    ("dupes.csv", b"a,a,b\n1,2,3\n4,5,6\n", "file_duplicate_columns"),
    ("header.csv", b"a,b,c\n", "file_no_rows"),
    ("../x.csv", b"a,b\n1,2\n", "bad_filename"),
    ("x.exe", b"a,b\n1,2\n", "file_format_unsupported"),
    ("fake.parquet", b"a,b\n1,2\n", "file_wrong_content"),
]


@pytest.mark.parametrize("filename, data, code", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_and_change_nothing(api, filename, data, code):
    before = api("ana").get("datasets").json()
    response = upload(api("ana"), data, filename)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"] == code, response.json()
    assert response.json()["message"]
    assert api("ana").get("datasets").json() == before


def test_a_file_over_the_limit_is_cut_off_with_413(api):
    big = b"a,b\n" + b"1,2\n" * (6 * 1000**2 // 4)  # 6 MB: over the test hub's MAX_UPLOAD_SIZE of 5MB
    response = upload(api("ana"), big, "big.csv")
    assert response.status_code == 413
    assert response.json()["error"] in ("quota_upload_too_large", "upload_too_large")


def test_messages_follow_accept_language(api):
    response = upload(api("ana", "fr"), b"", "empty.csv")
    assert "vide" in response.json()["message"]


def job_request(dataset, **overrides):
    return {"dataset_id": dataset["id"], "target": "churned", "time_budget": 5, **overrides}


BAD_JOBS = [
    ({"target": "nope"}, 422, "target_missing"),
    ({"time_budget": 0}, 422, "field_too_small"),
    ({"time_budget": -1}, 422, "field_too_small"),
    ({"time_budget": 10**9}, 422, "field_too_large"),
    ({"task": "clustering"}, 422, "field_not_a_choice"),
    ({"metric": "accuracy", "task": "regression"}, 422, "bad_metric"),
    ({"dataset_id": "0" * 32}, 404, "not_found"),
    ({"dataset_id": "../../etc"}, 422, "field_bad_format"),
    ({"colour": "red"}, 422, "field_unknown"),
    ({"device": "gpu"}, 403, "quota_gpu_not_allowed"),
]


@pytest.mark.parametrize("overrides, status, code", BAD_JOBS, ids=[b[2] + str(i) for i, b in enumerate(BAD_JOBS)])
def test_bad_job_requests_are_refused_and_queue_nothing(api, dataset, overrides, status, code):
    before = len(api("ana").get("jobs").json())
    response = api("ana").post("jobs", json=job_request(dataset, **overrides))
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert len(api("ana").get("jobs").json()) == before


def test_jobs_filter_by_a_known_status_only(api):
    assert api("ana").get("jobs", params={"status": "succeeded"}).status_code == 200
    response = api("ana").get("jobs", params={"status": "done"})
    assert response.status_code == 422 and response.json()["error"] == "field_not_a_choice"


def test_malformed_json_is_a_422(api):
    response = api("ana").post("jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"] == "invalid_json"


def test_constant_target_is_refused(api):
    data = b"x,y\n" + b"".join(f"{i},1\n".encode() for i in range(50))
    dataset = upload(api("ana"), data, "constant.csv").json()
    response = api("ana").post("jobs", json={"dataset_id": dataset["id"], "target": "y", "time_budget": 5})
    assert response.status_code == 422 and response.json()["error"] == "target_constant"
    assert api("ana").delete(f"datasets/{dataset['id']}").status_code == 204


def test_another_tenants_dataset_cannot_be_trained_on(api, dataset):
    response = api("bob").post("jobs", json=job_request(dataset))
    assert response.status_code == 404


@pytest.fixture(scope="module")
def trained(api, dataset):
    response = api("ana").post("jobs", json=job_request(dataset))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running")
    job = poll(api("ana"), f"jobs/{job['id']}", lambda j: j["status"] not in ("queued", "running"))
    assert job["status"] == "succeeded", job
    return job


def test_training_job_reports_progress_and_makes_a_model(api, trained):
    assert trained["progress"]["trials"] >= 2
    assert trained["progress"]["best_score"] is not None
    assert trained["leaderboard"][0]["model"]
    model = api("ana").get(f"models/{trained['model_id']}").json()
    assert model["task"] == "binary" and model["metric"] == "roc_auc"
    assert model["details"]["feature_importance"]
    assert "roc" in model["details"]["plot_data"]


def test_predict_on_json_rows(api, trained):
    rows = json_rows(5, seed=3)
    response = api("ana").post(f"models/{trained['model_id']}/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 5 and len(body["probabilities"]) == 5


@pytest.mark.parametrize("change, code", [("drop", "predict_columns_missing"), ("add", "predict_columns_extra")])
def test_predict_rows_with_wrong_columns_are_refused(api, trained, change, code):
    row = json_rows(1, seed=4)[0]
    if change == "drop":
        row.pop(next(iter(row)))
    else:
        row["surprise"] = 1
    response = api("ana").post(f"models/{trained['model_id']}/predict", json={"rows": [row]})
    assert response.status_code == 422 and response.json()["error"] == code


def test_download_gives_a_model_that_loads(api, trained, tmp_path):
    from automl import AutoML

    response = api("ana").get(f"models/{trained['model_id']}/download")
    assert response.status_code == 200
    path = tmp_path / "m.automl"
    path.write_bytes(response.content)
    model = AutoML.load(path)
    assert model.task_ == "binary"


def test_models_of_another_tenant_are_invisible(api, trained):
    model_id = trained["model_id"]
    for method, path in (("get", f"models/{model_id}"), ("get", f"models/{model_id}/download"),
                         ("delete", f"models/{model_id}")):
        assert getattr(api("bob"), method)(path).status_code == 404
    assert api("bob").post(f"models/{model_id}/predict", json={"rows": [{"a": 1}]}).status_code == 404


def test_report_is_one_offline_html_page_per_language(api, trained):
    english = api("ana").get(f"models/{trained['model_id']}/report", params={"lang": "en"})
    assert english.status_code == 200 and english.headers["content-type"].startswith("text/html")
    assert "data:image/png;base64," in english.text and "<script" not in english.text
    french = api("ana").get(f"models/{trained['model_id']}/report", params={"lang": "fr"})
    assert french.status_code == 200 and 'lang="fr"' in french.text and french.text != english.text
    assert api("bob").get(f"models/{trained['model_id']}/report").status_code == 404


def test_notebook_reproduces_the_job_with_the_public_api(api, trained):
    response = api("ana").get(f"models/{trained['model_id']}/notebook")
    assert response.status_code == 200
    source = "".join("".join(cell["source"]) for cell in response.json()["cells"])
    assert "from automl import AutoML" in source and "churned" in source and "churn.csv" in source
    assert "seed=0" in source.replace(" ", "")


def test_events_stream_the_job_until_it_ends(api, trained):
    with api("ana").stream("GET", f"jobs/{trained['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]
    assert events and events[-1]["status"] == "succeeded"
    assert api("bob").get(f"jobs/{trained['id']}/events").status_code == 404


def test_the_job_is_an_mlflow_run(api, trained):
    model = poll(api("ana"), f"models/{trained['model_id']}",
                 lambda m: "mlflow" in m["details"] or "tracking_warning" in m["details"], deadline=60)
    assert model["details"]["mlflow"]["run_id"], model["details"].get("tracking_warning")


def test_batch_predictions_are_a_job_with_a_csv_output(api, trained, dataset):
    response = api("ana").post(f"models/{trained['model_id']}/batch", json={"dataset_id": dataset["id"]})
    assert response.status_code == 202, response.text
    job = poll(api("ana"), f"jobs/{response.json()['id']}", lambda j: j["status"] not in ("queued", "running"))
    assert job["status"] == "succeeded" and job["kind"] == "predict", job
    output = api("ana").get(f"jobs/{job['id']}/output")
    assert output.status_code == 200
    lines = output.text.splitlines()
    assert len(lines) == 301 and "predicted_churned" in lines[0]
    assert api("bob").get(f"jobs/{job['id']}/output").status_code == 404
    assert api("ana").get(f"jobs/{trained['id']}/output").json()["error"] == "job_no_output"


def test_cancel_a_finished_job_is_a_409(api, trained):
    response = api("ana").post(f"jobs/{trained['id']}/cancel")
    assert response.status_code == 409 and response.json()["error"] == "job_finished"


def test_a_deleted_model_is_gone_for_predictions_too(api, dataset):
    job = api("ana").post("jobs", json=job_request(dataset, time_budget=3)).json()
    job = poll(api("ana"), f"jobs/{job['id']}", lambda j: j["status"] not in ("queued", "running"))
    model_id = job["model_id"]
    row = json_rows(1, seed=5)
    assert api("ana").post(f"models/{model_id}/predict", json={"rows": row}).status_code == 200  # now known
    assert api("bob").delete(f"models/{model_id}").status_code == 404
    assert api("ana").delete(f"models/{model_id}").status_code == 204
    assert api("ana").post(f"models/{model_id}/predict", json={"rows": row}).status_code == 404
    for path in (f"models/{model_id}", f"models/{model_id}/download", f"models/{model_id}/report"):
        assert api("ana").get(path).status_code == 404
    assert model_id not in [m["id"] for m in api("ana").get("models").json()]


def test_cancel_stops_a_running_job(api, dataset):
    job = api("ana").post("jobs", json=job_request(dataset, time_budget=600)).json()
    poll(api("ana"), f"jobs/{job['id']}", lambda j: j["status"] == "running" and j["progress"].get("trials"))
    assert api("ana").post(f"jobs/{job['id']}/cancel").status_code == 202
    job = poll(api("ana"), f"jobs/{job['id']}", lambda j: j["status"] not in ("queued", "running"), deadline=60)
    assert job["status"] == "cancelled"


def test_the_trial_plan_runs_one_job_at_a_time(api, dataset):
    first = api("ana").post("jobs", json=job_request(dataset, time_budget=600)).json()
    second = api("ana").post("jobs", json=job_request(dataset))
    assert second.status_code == 429 and second.json()["error"] == "quota_jobs_running"
    api("ana").post(f"jobs/{first['id']}/cancel")
    poll(api("ana"), f"jobs/{first['id']}", lambda j: j["status"] not in ("queued", "running"), deadline=60)




def test_admin_sees_every_tenant_and_changes_a_plan(api):
    admin = api("adm")
    names = [t["name"] for t in admin.get("admin/tenants").json()]
    assert "acme" in names
    plans = {p["name"]: p for p in admin.get("admin/plans").json()}
    assert plans["trial"]["trial_days"] == 14
    response = admin.put("admin/plans/pilot", json={"max_concurrent_jobs": 2, "monthly_compute_minutes": 100,
                                                    "gpu_allowed": False})
    assert response.status_code == 200 and response.json()["name"] == "pilot"
    response = admin.put("admin/tenants/globex", json={"plan": "pilot"})
    assert response.status_code == 200 and response.json()["quota"]["plan"] == "pilot"
    assert api("bob").get("me").json()["quota"]["max_concurrent_jobs"] == 2
    usage = admin.get("admin/usage").json()
    assert any(row["tenant"] == "acme" and row["kind"] == "compute_seconds" for row in usage)


@pytest.mark.parametrize("method, path, body, status, code", [
    ("put", "admin/tenants/globex", {"plan": "platinum"}, 404, "not_found"),
    ("put", "admin/tenants/Bad..Name", {"disabled": True}, 422, "tenant_name_invalid"),
    ("put", "admin/plans/x", {"max_concurrent_jobs": 0}, 422, "field_too_small"),
    ("get", "admin/usage?month=2026-13", None, 422, "field_bad_format"),
])
def test_admin_bad_inputs(api, method, path, body, status, code):
    response = getattr(api("adm"), method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


def test_admin_routes_need_the_admin_scope(api):
    assert api("ana").get("admin/tenants").status_code == 403
    assert api("ana").put("admin/tenants/acme", json={"plan": "enterprise"}).status_code == 403


def test_rate_limit_answers_429_with_retry_after(api):
    """The test hub allows 300 calls a minute per user; adm made a few already."""
    client = api("adm")
    statuses = [client.get("me").status_code for _ in range(301)]
    assert 429 in statuses
    first = statuses.index(429)
    assert 280 <= first <= 300 and set(statuses[:first]) == {200}
    refused = client.get("me")
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
