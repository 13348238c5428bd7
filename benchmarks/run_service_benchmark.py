"""Platform service benchmark: job overhead, single-row predict latency (through
the service and through `mlflow models serve`, same model, same rows), and the
service's memory while a 1 GB CSV is uploaded.

    .venv/bin/python benchmarks/run_service_benchmark.py
    .venv/bin/python benchmarks/run_service_benchmark.py --jobs 3 --requests 300 --skip upload

Numbers, never assertions: the machine's load moves them (a test asserting them
would be flaky). It runs the real thing: JupyterHub, its proxy and the service
as `tests/service/conftest.py` starts them, in a temporary directory, with
the embedded default backends (SQLite, local artifacts, a local process pool).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
# tests/service/conftest.py imports `backends` from tests/, as pytest's rootdir insertion allows
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from automl.datasets import make_churn  # noqa: E402
from tests.service.conftest import free_port, start_hub  # noqa: E402

# The service's settings for the run: uploads up to 3 GB, and a per-user rate
# limit (requests per minute) far above what the benchmark sends, so that no
# 429 interrupts it. The tenant's plan is set to `enterprise` through the admin
# API for the same reason (the trial plan allows 1 job and 200 MB uploads).
SERVICE_ENV = {"MAX_UPLOAD_SIZE": "3GB", "DEFAULT_RATE_LIMIT": "100000"}
USER, ADMIN, TENANT, PLAN = "ana", "adm", "acme", "enterprise"
PHASES = ("jobs", "predict", "mlflow", "upload")
TARGETS = {"overhead_s": 1.5, "predict_p99_ms": 30.0, "upload_rss_mb": 256.0}
JOB_DEADLINE = 180  # seconds for one short job, start included
MLFLOW_DEADLINE = 180  # for the run's MLflow record to appear, and for the server to answer
WARMUP_REQUESTS = 5  # the first loads the model into the interactive child
PAIRED_BLOCK = 50  # requests per turn when the servers take turns
MB = 1e6
VERSIONS = ("jupyterhub", "fastapi", "starlette", "uvicorn", "httpx", "mlflow", "pandas", "scikit-learn",
            "xgboost", "xgboost-cpu", "psutil")


STARTED = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", file=sys.stderr, flush=True)


# --- small helpers ------------------------------------------------------------------


def stamp(text: str | None) -> float | None:
    """A server timestamp as epoch seconds (SQLite gives naive UTC times back)."""
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def latency_summary(seconds: list[float], wall: float) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms), "rps": len(ms) / wall}


def feature_rows(n: int, seed: int = 7) -> list[dict]:
    """Rows as a client sends them: JSON values, dates as ISO text."""
    frame = make_churn(n, seed=seed).drop(columns="churned")
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def service_process() -> psutil.Process:
    """The platform service: our hub's child running `-m hub.service` (its own
    children are the job and interactive pools)."""
    for child in psutil.Process().children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.Error:
            continue
        if "-m" in command and "hub.service" in command:
            return child
    raise RuntimeError("the service process (python -m hub.service) was not found under the hub")


def listening_port(process: psutil.Process) -> int:
    for conn in process.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN:
            return conn.laddr.port
    raise RuntimeError("the service listens on no TCP port")


def versions() -> dict:
    found = {"python": host.python_version()}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    package = ROOT / "node_modules" / "configurable-http-proxy" / "package.json"
    if package.exists():
        found["configurable-http-proxy"] = json.loads(package.read_text())["version"]
    return found


# --- job overhead ---------------------------------------------------------------------


def run_one_job(api: httpx.Client, dataset_id: str, budget: int, poll: float) -> dict:
    """Submit, then GET the job every `poll` seconds until it ends. The end is
    seen at most one poll interval plus one GET late: that is the resolution.
    (The SSE endpoint would push it, but it reads the DB every 0.5 s.)"""
    t0 = time.time()
    reply = api.post("jobs", json={"dataset_id": dataset_id, "target": "churned", "time_budget": budget})
    accepted = time.time()
    if reply.status_code != 202:
        raise RuntimeError(f"POST jobs: {reply.status_code} {reply.text[:300]}")
    job = reply.json()
    deadline = t0 + JOB_DEADLINE
    gets = 0
    while True:
        job = api.get(f"jobs/{job['id']}").json()
        seen = time.time()
        gets += 1
        if job["status"] not in ("queued", "running"):
            break
        if seen > deadline:
            raise RuntimeError(f"job {job['id']} still {job['status']} after {JOB_DEADLINE} s")
        time.sleep(poll)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    model = api.get(f"models/{job['model_id']}").json()
    fit = float(model["details"]["fit_time"])
    created, started, finished = (stamp(job[k]) for k in ("created_at", "started_at", "finished_at"))
    total = seen - t0
    return {
        "job_id": job["id"], "model_id": job["model_id"], "total_s": total, "fit_s": fit,
        "overhead_s": total - fit,
        # where the overhead goes, from the job's own timestamps (same clock, same machine)
        "submit_s": accepted - t0,  # POST answered (quota check, insert, hand-off to the pool)
        "queued_s": started - created,  # until the job child claimed it
        "child_besides_fit_s": finished - started - fit,  # data download, read, save, sign, store, DB
        "seen_after_s": seen - finished,  # until our poll saw `succeeded`
        "polls": gets, "finished_at": finished,
    }


def wait_for_tracking(api: httpx.Client, model_id: str, finished_at: float) -> dict:
    """The service logs the MLflow run after the job's end, in the same job child:
    the worker is busy until it appears."""
    deadline = time.time() + MLFLOW_DEADLINE
    while time.time() < deadline:
        details = api.get(f"models/{model_id}").json()["details"]
        if "mlflow" in details or "tracking_warning" in details:
            return {"tracking_s": time.time() - finished_at, "mlflow": details.get("mlflow"),
                    "tracking_warning": details.get("tracking_warning")}
        time.sleep(0.1)
    raise RuntimeError(f"no MLflow record for model {model_id} after {MLFLOW_DEADLINE} s")


def upload_small(api: httpx.Client) -> str:
    reply = api.post("datasets", params={"filename": "churn.csv"}, content=make_churn(1000).to_csv(index=False).encode(),
                     headers={"Content-Type": "application/octet-stream"})
    if reply.status_code != 201:
        raise RuntimeError(f"upload: {reply.status_code} {reply.text[:300]}")
    return reply.json()["id"]


def bench_jobs(api: httpx.Client, dataset_id: str, n_jobs: int, budget: int, poll: float) -> dict:
    isolated = []
    for k in range(n_jobs):
        result = run_one_job(api, dataset_id, budget, poll)
        isolated.append(result)
        log(f"job {k + 1}/{n_jobs}: total {result['total_s']:.2f} s, fit {result['fit_s']:.2f} s, "
            f"overhead {result['overhead_s']:.2f} s")
        if k < n_jobs - 1:  # the next one finds an idle worker
            result.update(wait_for_tracking(api, result["model_id"], result["finished_at"]))
            log(f"  MLflow record {result['tracking_s']:.2f} s after the job's end")
    # One more, submitted as soon as the previous reads `succeeded`: with one job
    # worker, it waits while the previous run is logged to MLflow in that worker.
    follow = run_one_job(api, dataset_id, budget, poll)
    log(f"back-to-back job: total {follow['total_s']:.2f} s, overhead {follow['overhead_s']:.2f} s, "
        f"queued {follow['queued_s']:.2f} s")
    warm = [r["overhead_s"] for r in isolated[1:]] or [isolated[0]["overhead_s"]]
    return {"dataset_id": dataset_id, "budget_s": budget, "poll_s": poll, "isolated": isolated,
            "back_to_back": follow, "first_overhead_s": isolated[0]["overhead_s"],
            "warm_median_s": statistics.median(warm), "warm_max_s": max(warm), "warm_n": len(warm)}


# --- predict latency ------------------------------------------------------------------


def sequential(post, payloads: list, cap: float) -> dict:
    """One request at a time, after a warm-up; stops after all `payloads` or
    `cap` seconds, whichever comes first (a slow model makes 1000 requests long)."""
    for payload in payloads[:WARMUP_REQUESTS]:
        post(payload)
    seconds = []
    began = time.perf_counter()
    for payload in payloads:
        t = time.perf_counter()
        post(payload)
        seconds.append(time.perf_counter() - t)
        if t - began > cap:
            break
    return latency_summary(seconds, time.perf_counter() - began)


def concurrent(make_post, payloads: list, clients: int, cap: float) -> dict:
    """`clients` threads, each with its own connection, share the requests."""
    posts = [make_post() for _ in range(clients)]
    for payload in payloads[:WARMUP_REQUESTS]:
        posts[0](payload)
    began = time.perf_counter()

    def worker(k):
        out = []
        for payload in payloads[k::clients]:
            t = time.perf_counter()
            posts[k](payload)
            out.append(time.perf_counter() - t)
            if t - began > cap:
                break
        return out

    with ThreadPoolExecutor(clients) as pool:
        seconds = [s for part in pool.map(worker, range(clients)) for s in part]
    return latency_summary(seconds, time.perf_counter() - began)


def paired(posts: dict, payloads: list, cap: float, block: int = PAIRED_BLOCK) -> dict:
    """The servers take turns, `block` requests each on the same rows, first one
    then the other in alternate blocks, so that a change in the machine's load
    (a burst elsewhere, a slow minute) falls on both alike; separate phases a
    minute apart differed by more than the servers did. Throughput is one over
    the mean latency."""
    for post in posts.values():
        for payload in payloads[:WARMUP_REQUESTS]:
            post(payload)
    seconds = {name: [] for name in posts}
    order = list(posts)
    began = time.perf_counter()
    for start in range(0, len(payloads), block):
        for name in order:
            for payload in payloads[start:start + block]:
                t = time.perf_counter()
                posts[name](payload)
                seconds[name].append(time.perf_counter() - t)
        order.reverse()
        if time.perf_counter() - began > cap * len(posts):
            break
    return {name: latency_summary(values, sum(values)) for name, values in seconds.items()}


def poster(base_url: str, path: str, token: str | None, wrap, timeout: float = 60):
    """A function that POSTs one payload on a kept-alive connection and checks the answer."""
    headers = {"Authorization": f"token {token}"} if token else {}
    client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def post(row):
        reply = client.post(path, json=wrap(row))
        if reply.status_code != 200:
            raise RuntimeError(f"POST {base_url}{path}: {reply.status_code} {reply.text[:300]}")
        return reply.json()

    return post


def engine_floor(api: httpx.Client, model_id: str, rows: list[dict], cap: float) -> dict:
    """The fitted model's own time for one row (predict + predict_proba, as the
    service does), in this process: the floor under both servers."""
    import pandas as pd

    from automl.engine import AutoML

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.automl"
        path.write_bytes(api.get(f"models/{model_id}/download").content)
        model = AutoML.load(path)
    results = {"bagged": sum(models is not None for _, models, _ in model._members), "refit": len(model._full),
               "ensemble": model.ensemble_, "best_model": model.best_model_}
    frames = [pd.DataFrame.from_records([row]) for row in rows]
    for name, call in (("predict", lambda f: model.predict(f)),
                       ("predict+proba", lambda f: (model.predict(f), model.predict_proba(f)))):
        for frame in frames[:WARMUP_REQUESTS]:
            call(frame)
        seconds = []
        for frame in frames:
            t = time.perf_counter()
            call(frame)
            seconds.append(time.perf_counter() - t)
            if sum(seconds) > cap:
                break
        results[name] = latency_summary(seconds, sum(seconds))
    return results


def bench_predict(hub, api, token: str, model_id: str, rows: list[dict], clients: int, direct_base: str,
                  cap: float) -> dict:
    path = f"models/{model_id}/predict"
    via_proxy = hub.service_url + "api/"
    wrap = lambda row: {"rows": [row]}  # noqa: E731
    results = {"model_id": model_id}
    results["service"] = sequential(poster(via_proxy, path, token, wrap), rows, cap)
    log(f"service predict, sequential: p50 {results['service']['p50_ms']:.1f} ms, "
        f"p99 {results['service']['p99_ms']:.1f} ms, {results['service']['rps']:.0f} req/s")
    results["service_concurrent"] = concurrent(lambda: poster(via_proxy, path, token, wrap), rows, clients, cap)
    log(f"service predict, {clients} clients: {results['service_concurrent']['rps']:.0f} req/s")
    # Where the time goes: the same call without the proxy, the proxy+service floor
    # (an anonymous health check), and the model's own time.
    results["service_direct"] = sequential(poster(direct_base, path, token, wrap), rows, cap)
    health = httpx.Client(timeout=10)
    n = min(len(rows), 300)
    for name, url in (("health_via_proxy", via_proxy + "health"), ("health_direct", direct_base + "health")):
        seconds = []
        began = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            health.get(url).raise_for_status()
            seconds.append(time.perf_counter() - t)
        results[name] = latency_summary(seconds, time.perf_counter() - began)
    results["engine"] = engine_floor(api, model_id, rows, cap / 2)
    return results


def start_mlflow(model_uri: str, tracking_uri: str, directory: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    output = open(directory / "mlflow-serve.log", "wb")
    began = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=directory, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    output.close()  # the server has its own copy
    base = f"http://127.0.0.1:{port}"
    deadline = began + MLFLOW_DEADLINE
    while True:
        if server.poll() is not None:
            raise RuntimeError("mlflow models serve exited:\n" + (directory / "mlflow-serve.log").read_text()[-3000:])
        try:
            if httpx.get(base + "/ping", timeout=2).status_code == 200:
                return server, base, time.monotonic() - began
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_mlflow(server)
            raise RuntimeError(f"mlflow models serve did not answer within {MLFLOW_DEADLINE} s")
        time.sleep(0.2)


def stop_mlflow(server: subprocess.Popen) -> None:
    """Its own session (start_new_session): the group is the server and its workers only."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def bench_mlflow(model_uri: str, tracking_uri: str, directory: Path, rows: list[dict], clients: int,
                 service_posts: dict, cap: float) -> dict:
    """`service_posts`: the service's predict through the hub's proxy ("service")
    and straight to its port ("service_direct"), as mlflow is reached."""
    server, base, startup = start_mlflow(model_uri, tracking_uri, directory)
    log(f"mlflow models serve answered after {startup:.1f} s")
    try:
        wrap = lambda row: {"dataframe_records": [row]}  # noqa: E731
        proba = lambda row: {"dataframe_records": [row], "params": {"predict_method": "predict_proba"}}  # noqa: E731
        post = poster(base, "/invocations", None, wrap)
        # same answers as the service, on a few rows: the comparison is of the same model
        for row in rows[:5]:
            ours, theirs = service_posts["service"](row)["predictions"], post(row)["predictions"]
            if ours != theirs:
                raise RuntimeError(f"the service and mlflow disagree on {row}: {ours} != {theirs}")
        results = {"startup_s": startup, "model_uri": model_uri}
        results["labels"] = sequential(post, rows, cap)
        log(f"mlflow predict, sequential: p50 {results['labels']['p50_ms']:.1f} ms, "
            f"p99 {results['labels']['p99_ms']:.1f} ms, {results['labels']['rps']:.0f} req/s")
        results["labels_concurrent"] = concurrent(lambda: poster(base, "/invocations", None, wrap), rows, clients, cap)
        log(f"mlflow predict, {clients} clients: {results['labels_concurrent']['rps']:.0f} req/s")
        results["proba"] = sequential(poster(base, "/invocations", None, proba), rows, cap)
        results["paired"] = paired({**service_posts, "mlflow": post}, rows, cap)
        log("paired, 1 client: " + ", ".join(f"{name} {r['rps']:.1f}" for name, r in results["paired"].items())
            + " req/s")
        return results
    finally:
        stop_mlflow(server)


# --- upload memory --------------------------------------------------------------------


def big_csv(size_gb: float, directory: Path) -> Path:
    """About `size_gb` GB of churn rows, written in chunks (never held whole), and
    kept between runs: 1 GB takes ~15 s to write."""
    target = int(size_gb * 1e9)
    path = directory / f"automl-service-bench-churn-{size_gb:g}GB.csv"
    if path.exists() and path.stat().st_size >= target:
        return path
    log(f"writing {path} ({size_gb:g} GB)")
    chunks = [make_churn(100_000, seed=seed).to_csv(index=False) for seed in range(4)]
    header = chunks[0].split("\n", 1)[0] + "\n"
    bodies = [chunk.split("\n", 1)[1] for chunk in chunks]
    partial = path.with_suffix(".partial")
    written, k = 0, 0
    with open(partial, "w") as handle:
        handle.write(header)
        while written < target:
            body = bodies[k % len(bodies)]
            handle.write(body)
            written += len(body)
            k += 1
    partial.rename(path)
    return path


class Sampler(threading.Thread):
    """RSS of the service and of each of its children, and the children's CPU
    time, every `interval` seconds (psutil reads /proc)."""

    def __init__(self, service: psutil.Process, interval: float = 0.02):
        super().__init__(daemon=True)
        self.service, self.interval = service, interval
        self.samples: list[tuple[float, int, dict]] = []  # (time, service rss, {pid: (rss, cpu)})
        self.names: dict[int, str] = {}
        self._done = threading.Event()

    def run(self):
        children, k = [], 0
        while not self._done.is_set():
            if k % 25 == 0:  # the list of children, twice a second
                children = self.service.children(recursive=True)
                for child in children:
                    if child.pid not in self.names:
                        try:
                            self.names[child.pid] = " ".join(child.cmdline())[-80:]
                        except psutil.Error:
                            self.names[child.pid] = "?"
            k += 1
            now = time.time()
            try:
                rss = self.service.memory_info().rss
            except psutil.Error:
                break
            kids = {}
            for child in children:
                try:
                    with child.oneshot():
                        cpu = child.cpu_times()
                        kids[child.pid] = (child.memory_info().rss, cpu.user + cpu.system)
                except psutil.Error:
                    pass
            self.samples.append((now, rss, kids))
            self._done.wait(self.interval)

    def stop(self):
        self._done.set()
        self.join()


PROBE_AFTER_S = 10  # into the upload: the file is sent and is being parsed


def bench_upload(api: httpx.Client, service: psutil.Process, path: Path, probe=None) -> dict:
    """`probe`, when given, is one single-row predict call, made PROBE_AFTER_S
    seconds into the upload: the interactive child that predicts is the one
    that parses the upload."""
    size = path.stat().st_size
    marks = {}

    def probing():
        if not sampler_done.wait(PROBE_AFTER_S):
            t = time.perf_counter()
            try:
                probe()
                marks["probe_s"] = time.perf_counter() - t
            except (httpx.HTTPError, RuntimeError) as error:
                marks["probe_error"] = f"{type(error).__name__} after {time.perf_counter() - t:.1f} s"

    def body():
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                yield chunk
        marks["sent"] = time.time()

    baseline = service.memory_info().rss
    sampler = Sampler(service)
    sampler.start()
    sampler_done = threading.Event()
    prober = threading.Thread(target=probing, daemon=True)
    if probe is not None:
        prober.start()
    t0 = time.time()
    try:
        reply = api.post("datasets", params={"filename": "big.csv"}, content=body(),
                         headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                         timeout=httpx.Timeout(900, connect=10))
        done = time.time()
    finally:
        sampler_done.set()
        sampler.stop()
        if probe is not None:
            prober.join()
    if reply.status_code != 201:
        raise RuntimeError(f"upload: {reply.status_code} {reply.text[:300]}")
    dataset = reply.json()
    sent = marks.get("sent", done)
    samples = [s for s in sampler.samples if t0 <= s[0] <= done]
    peak = max(s[1] for s in samples)
    receiving = [s[1] for s in samples if s[0] <= sent] or [baseline]
    # the child that parsed is the one whose CPU time grew the most
    first_cpu = {pid: cpu for pid, (_, cpu) in samples[0][2].items()}
    last_cpu = {pid: cpu for pid, (_, cpu) in samples[-1][2].items()}
    grown = {pid: last_cpu[pid] - first_cpu.get(pid, 0.0) for pid in last_cpu}
    parser = max(grown, key=grown.get)
    children = {}
    for pid in sorted({pid for s in samples for pid in s[2]}):
        rss = [s[2][pid][0] for s in samples if pid in s[2]]
        children[pid] = {"name": sampler.names.get(pid, "?"), "peak_rss_mb": max(rss) / MB,
                         "start_rss_mb": rss[0] / MB, "end_rss_mb": rss[-1] / MB, "cpu_s": grown.get(pid, 0.0), "parsed": pid == parser}
    busy = [s[0] for prev, s in zip(samples, samples[1:])
            if parser in s[2] and parser in prev[2] and s[2][parser][1] > prev[2][parser][1] + 1e-3]
    parse_began = busy[0] if busy else sent
    parse_ended = busy[-1] if busy else done
    # (samples whose time is after the parse: the service copying the file into storage)
    return {
        "bytes": size, "n_rows": dataset["n_rows"], "dataset_id": dataset["id"],
        "service_baseline_mb": baseline / MB, "service_peak_mb": peak / MB,
        "service_peak_receiving_mb": max(receiving) / MB,
        "send_s": sent - t0, "send_mb_s": size / MB / (sent - t0), "total_s": done - t0,
        "parse_s": parse_ended - parse_began, "after_parse_s": done - parse_ended,
        "parse_started_after_send_s": parse_began - sent, "samples": len(samples),
        "predict_during_upload_s": marks.get("probe_s"), "predict_during_upload_error": marks.get("probe_error"),
        "children": children,
    }


# --- report ---------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def lat(summary: dict) -> str:
    return f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f} ms (n={summary['n']})"


def table(results: dict, clients: int) -> list[tuple[str, str, str, str]]:
    rows = []
    if "jobs" in results:
        j = results["jobs"]
        target = TARGETS["overhead_s"]
        rows.append((f"job overhead, median of {j['warm_n']} warm jobs", f"{j['warm_median_s']:.2f} s",
                     f"<= {target} s", verdict(j["warm_median_s"] <= target)))
        rows.append((f"job overhead, max of {j['warm_n']} warm jobs", f"{j['warm_max_s']:.2f} s",
                     f"<= {target} s", verdict(j["warm_max_s"] <= target)))
        rows.append(("job overhead, first job after start", f"{j['first_overhead_s']:.2f} s", "", "info"))
        parts = {k: statistics.median(r[k] for r in j["isolated"])
                 for k in ("submit_s", "queued_s", "child_besides_fit_s", "seen_after_s", "fit_s")}
        rows.append(("  median parts: POST / queued / child besides fit / seen",
                     f"{parts['submit_s']:.2f} / {parts['queued_s']:.2f} / {parts['child_besides_fit_s']:.2f} / "
                     f"{parts['seen_after_s']:.2f} s (fit {parts['fit_s']:.2f} s)", "", "info"))
        tracked = [r["tracking_s"] for r in j["isolated"] if "tracking_s" in r]
        if tracked:
            later = f", then median {statistics.median(tracked[1:]):.2f} s" if len(tracked) > 1 else ""
            rows.append(("  MLflow logging after the job's end (worker busy)", f"first job {tracked[0]:.2f} s{later}",
                         "", "info"))
        b = j["back_to_back"]
        rows.append(("job overhead, submitted as the previous one ends", f"{b['overhead_s']:.2f} s "
                     f"(queued {b['queued_s']:.2f} s)", "", "info"))
    if "predict" in results:
        p = results["predict"]
        rows.append(("predict via service (hub proxy), p50 / p99", lat(p["service"]),
                     f"p99 <= {TARGETS['predict_p99_ms']:g} ms", verdict(p["service"]["p99_ms"] <= TARGETS["predict_p99_ms"])))
        rows.append(("  same, direct to the service (no proxy)", lat(p["service_direct"]), "", "info"))
        rows.append(("  GET health via proxy / direct, p50", f"{p['health_via_proxy']['p50_ms']:.1f} / "
                     f"{p['health_direct']['p50_ms']:.1f} ms", "", "info"))
        e = p["engine"]
        members = "+".join(m["model"] for m in e["ensemble"])
        rows.append((f"  model alone in-process ({members}; {e['refit']} refit, {e['bagged']} bagged), predict+proba",
                     lat(e["predict+proba"]), "", "info"))
        rows.append(("  model alone in-process, predict", lat(p["engine"]["predict"]), "", "info"))
    if "mlflow" in results:
        m, p = results["mlflow"], results["predict"]
        rows.append(("predict via mlflow models serve (labels)", lat(m["labels"]), "", "info"))
        rows.append(("  same with predict_proba", lat(m["proba"]), "", "info"))
        s, sc, ml, mc = p["service"], p["service_concurrent"], m["labels"], m["labels_concurrent"]
        ps, pd_, pm = m["paired"]["service"], m["paired"]["service_direct"], m["paired"]["mlflow"]
        # Server against server on the same path (client -> server); the hub's
        # proxy in front of the service is JupyterHub's hop, printed apart.
        rows.append(("throughput, 1 client, paired (taking turns), each server direct: service vs mlflow",
                     f"{pd_['rps']:.1f} vs {pm['rps']:.1f} req/s", ">= mlflow", verdict(pd_["rps"] >= pm["rps"])))
        rows.append(("  same turns, the service through the hub's proxy", f"{ps['rps']:.1f} req/s", "", "info"))
        rows.append(("  p50 / p99 in the paired run: service direct; via proxy; mlflow",
                     f"{lat(pd_)}; {lat(ps)}; {lat(pm)}", "", "info"))
        rows.append(("  throughput, 1 client, separate phases: service vs mlflow",
                     f"{s['rps']:.1f} vs {ml['rps']:.1f} req/s", "", "info"))
        rows.append((f"throughput, {clients} clients: service vs mlflow", f"{sc['rps']:.1f} vs {mc['rps']:.1f} req/s",
                     ">= mlflow", verdict(sc["rps"] >= mc["rps"])))
    if "upload" in results:
        u = results["upload"]
        rows.append((f"upload {u['bytes'] / 1e9:.2f} GB: service peak RSS", f"{u['service_peak_mb']:.0f} MB "
                     f"(before {u['service_baseline_mb']:.0f} MB)", f"<= {TARGETS['upload_rss_mb']:g} MB",
                     verdict(u["service_peak_mb"] <= TARGETS["upload_rss_mb"])))
        rows.append(("  send rate / time to 201", f"{u['send_mb_s']:.0f} MB/s / {u['total_s']:.1f} s "
                     f"(sent {u['send_s']:.1f}, parse {u['parse_s']:.1f}, after it {u['after_parse_s']:.1f} s)",
                     "", "info"))
        parser = next(c for c in u["children"].values() if c["parsed"])
        rows.append(("  RSS of the child that parsed: peak / after", f"{parser['peak_rss_mb']:.0f} / "
                     f"{parser['end_rss_mb']:.0f} MB ({u['n_rows']} rows)", "", "info"))
        if u.get("predict_during_upload_s") is not None:
            rows.append((f"  one predict sent {PROBE_AFTER_S} s into the upload", f"answered in "
                         f"{u['predict_during_upload_s']:.1f} s", "", "info"))
        elif u.get("predict_during_upload_error"):
            rows.append((f"  one predict sent {PROBE_AFTER_S} s into the upload",
                         f"failed: {u['predict_during_upload_error']}", "", "info"))
    return rows


def print_table(rows) -> None:
    widths = [max(len(r[i]) for r in rows + [("measure", "value", "target", "")]) for i in range(4)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    print(line(("measure", "value", "target", "")))
    print(line(tuple("-" * w for w in widths)))
    for row in rows:
        print(line(row))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5, help="jobs measured one after the other (default 5)")
    parser.add_argument("--budget", type=int, default=5, help="time_budget of each job, s (default 5)")
    parser.add_argument("--predict-budget", type=int, default=30,
                        help="time_budget of the job whose model serves the predict measures, s (default 30)")
    parser.add_argument("--poll", type=float, default=0.02, help="GET interval while a job runs, s (default 0.02)")
    parser.add_argument("--requests", type=int, default=1000, help="single-row predict requests per path (1000)")
    parser.add_argument("--path-seconds", type=float, default=15.0,
                        help="stop measuring one path after this many seconds even if requests remain (15)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput (4)")
    parser.add_argument("--upload-gb", type=float, default=1.0, help="size of the uploaded CSV, GB (1.0)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the big CSV is written and kept between runs (the temp dir)")
    parser.add_argument("--skip", default="", help=f"comma list of phases to skip: {', '.join(PHASES)}")
    parser.add_argument("--results", type=Path, help="append the results as one JSON line to this file")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(PHASES):
        parser.error(f"--skip takes {', '.join(PHASES)}; not {', '.join(sorted(skip - set(PHASES)))}")
    if "predict" in skip and "mlflow" not in skip:
        parser.error("the mlflow phase compares with the predict phase: skip both or neither")
    if args.jobs < 1 or args.requests < WARMUP_REQUESTS:
        parser.error(f"--jobs must be >= 1 and --requests >= {WARMUP_REQUESTS}")

    run = {"benchmark": "service", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
                       "platform": host.platform(), "loadavg_start": os.getloadavg()},
           "versions": versions(),
           "settings": {**SERVICE_ENV, "plan": PLAN, "jobs": args.jobs, "budget_s": args.budget, "predict_budget_s": args.predict_budget,
                        "poll_s": args.poll, "requests": args.requests, "path_seconds": args.path_seconds, "clients": args.clients,
                        "upload_gb": args.upload_gb, "skip": sorted(skip), "storage": "local", "database": "sqlite"}}
    results = {}
    big = None if "upload" in skip else big_csv(args.upload_gb, args.data_dir)
    with tempfile.TemporaryDirectory(prefix="automl-service-bench-") as tmp:
        directory = Path(tmp)
        with start_hub(directory, "hub.service", service_env=SERVICE_ENV) as hub:
            log(f"hub and service up in {hub.start_seconds:.1f} s")
            service = service_process()
            direct_base = f"http://127.0.0.1:{listening_port(service)}/services/automl/api/"
            admin = httpx.Client(base_url=hub.service_url + "api/", timeout=60,
                                 headers={"Authorization": f"token {hub.tokens[ADMIN]}"})
            admin.put(f"admin/tenants/{TENANT}", json={"plan": PLAN}).raise_for_status()
            api = httpx.Client(base_url=hub.service_url + "api/", timeout=60,
                               headers={"Authorization": f"token {hub.tokens[USER]}"})
            dataset_id = upload_small(api)
            if "jobs" not in skip:
                results["jobs"] = bench_jobs(api, dataset_id, args.jobs, args.budget, args.poll)
            if "predict" not in skip:
                # The model that predictions are measured on is trained like a user's, with a
                # budget that leaves the engine time to refit its ensemble (a 5 s job keeps
                # some members as bags of fold models: several times slower to predict).
                if "jobs" in results:  # the job worker is free once the last job is logged
                    wait_for_tracking(api, results["jobs"]["back_to_back"]["model_id"], time.time())
                model_job = run_one_job(api, dataset_id, args.predict_budget, args.poll)
            if "predict" not in skip:
                rows = feature_rows(args.requests)
                results["predict"] = bench_predict(hub, api, hub.tokens[USER], model_job["model_id"], rows,
                                                   args.clients, direct_base, args.path_seconds)
            if "mlflow" not in skip:
                tracked = wait_for_tracking(api, model_job["model_id"], model_job["finished_at"])
                if tracked["mlflow"] is None:
                    log(f"no MLflow model to serve: {tracked['tracking_warning']}")
                else:
                    tracking_uri = f"sqlite:///{directory / 'state' / 'mlflow.sqlite'}"
                    path = f"models/{model_job['model_id']}/predict"
                    service_posts = {
                        "service": poster(hub.service_url + "api/", path, hub.tokens[USER], lambda row: {"rows": [row]}),
                        "service_direct": poster(direct_base, path, hub.tokens[USER], lambda row: {"rows": [row]})}
                    results["mlflow"] = bench_mlflow(tracked["mlflow"]["model_uri"], tracking_uri, directory, rows,
                                                     args.clients, service_posts, args.path_seconds)
            if "upload" not in skip:
                log(f"uploading {big} ({big.stat().st_size / 1e9:.2f} GB)")
                probe = None
                if "predict" in results:
                    probe_post = poster(hub.service_url + "api/", f"models/{model_job['model_id']}/predict",
                                        hub.tokens[USER], lambda row: {"rows": [row]}, timeout=900)
                    probe = lambda: probe_post(rows[0])  # noqa: E731
                results["upload"] = bench_upload(api, service, big, probe)
                log(f"upload answered after {results['upload']['total_s']:.1f} s")
            run["start_seconds"] = hub.start_seconds
    run["machine"]["loadavg_end"] = os.getloadavg()
    run["results"] = results
    rows = table(results, args.clients)
    run["verdicts"] = [{"measure": r[0], "value": r[1], "target": r[2], "verdict": r[3]} for r in rows]

    m = run["machine"]
    print(f"\nAutoML Hub platform service benchmark, {run['date']}")
    print(f"machine: {m['cpus']} CPUs, {m['memory_gb']} GB, load average {m['loadavg_start'][0]:.2f} at start, "
          f"{m['loadavg_end'][0]:.2f} at end (1 min)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items() if v))
    print(f"settings: service env {SERVICE_ENV} (DEFAULT_RATE_LIMIT is per user per minute), plan {PLAN}, "
          f"SQLite + local storage, JOB_WORKERS=1; {args.jobs} jobs of time_budget={args.budget} s polled every "
          f"{args.poll * 1000:.0f} ms; up to {args.requests} single-row requests or {args.path_seconds:g} s per path "
          f"after {WARMUP_REQUESTS} warm-up ones (n below), {args.clients} clients for the concurrent throughput\n")
    print_table(rows)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as handle:
            handle.write(json.dumps(run, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
