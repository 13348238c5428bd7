import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from automl import cli
from automl.datasets import make_churn
from automl.settings import get_settings
from automl.tables import read_table

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "DEFAULT_LANGUAGE": "fr"}


@pytest.fixture(autouse=True)
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def churn_csv(tmp_path):
    path = tmp_path / "churn.csv"
    make_churn(300, seed=0).to_csv(path, index=False)
    return path


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("automl: error: ")
    assert "Traceback" not in err
    return lines[0]


# --- a stand-in engine, for the CLI's own behaviour ---------------------------------


class FakeAutoML:
    instances: ClassVar[list] = []
    interrupts = 0  # Ctrl-C presses during fit

    def __init__(self, **params):
        self.params = params
        self.cancel_calls = 0
        FakeAutoML.instances.append(self)

    def fit(self, df, target):
        emit = self.params["callback"]
        emit({"event": "start", "n_trials": 0, "elapsed": 0.0, "remaining": 60.0})
        for _ in range(FakeAutoML.interrupts):
            signal.raise_signal(signal.SIGINT)
        emit({"event": "trial", "n_trials": 1, "model": "linear", "score": 0.8, "best_score": 0.8,
              "best_model": "linear", "elapsed": 1.0, "remaining": 59.0})
        emit({"event": "done", "n_trials": 1, "best_score": 0.8, "best_model": "linear", "elapsed": 1.5})
        self.fitted_on = (df.shape, target)
        self.task_, self.metric_, self.target_ = "binary", "roc_auc", target
        self.classes_ = np.array(["no", "yes"])
        self.leaderboard_ = pd.DataFrame([
            {"rank": 1, "model": "linear", "family": "linear", "score": 0.81234, "fit_time": 1.25,
             "predict_time": 0.01, "weight": 1.0, "params": {"C": 1.0}},
            {"rank": 2, "model": "baseline", "family": "baseline", "score": 0.5, "fit_time": 0.0,
             "predict_time": 0.0, "weight": 0.0, "params": {}},
        ])
        self.guardrails_ = [{"code": "guard_missing_values", "severity": "warning", "column": "age",
                             "params": {"percent": 6.0}, "message": "texte déjà rendu en français"}]
        return self

    def cancel(self):
        self.cancel_calls += 1

    def save(self, path):
        Path(path).write_text("fake model")

    @classmethod
    def load(cls, path):
        return FakeModel(Path(path).read_text())


class FakeModel:
    def __init__(self, task):
        self.task_ = task
        self.classes_ = None if task == "regression" else np.array(["no", "yes"])

    def predict(self, df):
        if self.task_ == "regression":
            return np.arange(len(df), dtype=float)
        return np.where(np.arange(len(df)) % 2, "yes", "no")

    def predict_proba(self, df):
        p = np.linspace(0, 1, len(df))
        return np.column_stack([1 - p, p])


@pytest.fixture
def fake_engine(monkeypatch):
    FakeAutoML.instances = []
    FakeAutoML.interrupts = 0
    monkeypatch.setattr(cli, "_automl_class", lambda: FakeAutoML)
    return FakeAutoML


# --- command line -----------------------------------------------------------------------


def test_no_command_is_one_line_usage_error(capsys):
    assert cli.main([]) == 2
    assert "train" in one_error_line(capsys.readouterr().err)


def test_help_in_both_languages(capsys):
    assert cli.main(["train", "--help", "--lang", "en"]) == 0
    assert "column to predict" in capsys.readouterr().out
    assert cli.main(["train", "--help", "--lang", "fr"]) == 0
    assert "colonne à prédire" in capsys.readouterr().out


def test_missing_required_option(churn_csv, capsys):
    assert cli.main(["train", str(churn_csv)]) == 2
    assert "--target" in one_error_line(capsys.readouterr().err)


def test_bad_choice_and_bad_number(churn_csv, capsys):
    assert cli.main(["train", str(churn_csv), "--target", "churned", "--task", "ranking"]) == 2
    one_error_line(capsys.readouterr().err)
    assert cli.main(["train", str(churn_csv), "--target", "churned", "--seed", "x"]) == 2
    one_error_line(capsys.readouterr().err)


def test_messages_follow_lang_then_default_language(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "nope.csv")
    assert cli.main(["train", missing, "--target", "y", "--lang", "en"]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("DEFAULT_LANGUAGE", "fr")
    get_settings.cache_clear()
    assert cli.main(["train", missing, "--target", "y"]) == 2
    assert "n'existe pas" in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("DEFAULT_LANGUAGE", "en")
    get_settings.cache_clear()
    assert cli.main(["train", missing, "--target", "y"]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("garbage.csv", np.random.default_rng(0).bytes(4000), "binary"),
        ("empty.csv", b"", "empty"),
        ("dup.csv", b"a,b,a\n1,2,3\n", "'a'"),
        ("data.json", b"{}", ".json"),
    ],
)
def test_unreadable_data_is_one_line(tmp_path, capsys, fake_engine, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    assert cli.main(["train", str(path), "--target", "a", "--lang", "en"]) == 2
    assert words in one_error_line(capsys.readouterr().err)
    assert fake_engine.instances == []


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, capsys, fake_engine, monkeypatch):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_parquet(path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if the `parquet` extra were not installed
    assert cli.main(["train", str(path), "--target", "a", "--lang", "en"]) == 2
    assert "automl-hub[parquet]" in one_error_line(capsys.readouterr().err)
    assert fake_engine.instances == []


def test_missing_output_folder_is_refused_before_training(churn_csv, tmp_path, capsys, fake_engine):
    out = tmp_path / "no" / "such" / "m.automl"
    assert cli.main(["train", str(churn_csv), "--target", "churned", "--out", str(out), "--lang", "en"]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    assert fake_engine.instances == []


def test_unexpected_failure_is_one_line_exit_1(churn_csv, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line of detail")

    monkeypatch.setattr(cli, "read_table", broken)
    assert cli.main(["train", str(churn_csv), "--target", "churned", "--lang", "en"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "RuntimeError" in line and "boom" in line and "second line" not in line


def test_os_error_is_one_line_exit_1(churn_csv, capsys, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/churn.csv")

    monkeypatch.setattr(cli, "read_table", denied)
    assert cli.main(["train", str(churn_csv), "--target", "churned", "--lang", "en"]) == 1
    assert "Permission denied" in one_error_line(capsys.readouterr().err)


def test_closed_output_pipe_is_silent(tmp_path, capsys, monkeypatch):
    def reader_gone(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "format_metadata", reader_gone)
    path = model_file_with_poisoned_pickle(tmp_path / "m.automl")
    assert cli.main(["info", str(path)]) == 1
    assert capsys.readouterr().err == ""


def test_interrupt_outside_training(churn_csv, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "read_table", interrupted)
    assert cli.main(["train", str(churn_csv), "--target", "churned"]) == 130
    one_error_line(capsys.readouterr().err)


# --- train, with the stand-in engine --------------------------------------------------------


def test_train_passes_options_and_reports(churn_csv, capsys, fake_engine):
    argv = ["train", str(churn_csv), "--target", "churned", "--time-budget", "30", "--metric", "log_loss",
            "--task", "binary", "--seed", "7", "--max-trials", "3", "--lang", "en"]
    assert cli.main(argv) == 0
    (model,) = fake_engine.instances
    params = {k: v for k, v in model.params.items() if k != "callback"}
    assert params == {"time_budget": 30.0, "task": "binary", "metric": "log_loss", "seed": 7, "max_trials": 3}
    assert model.fitted_on == ((300, 13), "churned")
    out = capsys.readouterr().out
    assert "Column 'age' has 6% missing values" in out  # guardrails re-rendered in --lang
    assert "0.8123" in out and "baseline" in out
    default_path = churn_csv.with_name("churn.automl")
    assert default_path.read_text() == "fake model"
    assert str(default_path) in out


def test_train_on_workbook_says_which_sheet(tmp_path, capsys, fake_engine):
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as writer:
        make_churn(50).to_excel(writer, sheet_name="clients", index=False)
        pd.DataFrame({"notes": ["x"]}).to_excel(writer, sheet_name="notes", index=False)
    assert cli.main(["train", str(path), "--target", "churned", "--lang", "en"]) == 0
    assert "2 sheets; only the first one, 'clients', is read" in capsys.readouterr().out
    assert fake_engine.instances[0].fitted_on == ((50, 13), "churned")


def test_ctrl_c_keeps_best_model(churn_csv, tmp_path, capsys, fake_engine):
    fake_engine.interrupts = 1
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "m.automl"
    assert cli.main(["train", str(churn_csv), "--target", "churned", "--out", str(out), "--lang", "en"]) == 0
    assert fake_engine.instances[0].cancel_calls == 1
    assert out.exists()
    assert "stopped early" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is before


def test_second_ctrl_c_aborts(churn_csv, tmp_path, capsys, fake_engine):
    fake_engine.interrupts = 2
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "m.automl"
    assert cli.main(["train", str(churn_csv), "--target", "churned", "--out", str(out), "--lang", "en"]) == 130
    assert fake_engine.instances[0].cancel_calls == 1
    assert not out.exists()
    assert "interrupted" in one_error_line(capsys.readouterr().err)
    assert signal.getsignal(signal.SIGINT) is before


# --- predict and info, with stand-ins ----------------------------------------------------------


@pytest.mark.parametrize("name", ["p.csv", "p.tsv", "p.parquet", "p.xlsx"])
def test_predict_classification_writes_prediction_and_probabilities(churn_csv, tmp_path, capsys, fake_engine, name):
    model = tmp_path / "m.automl"
    model.write_text("binary")
    assert cli.main(["predict", str(model), str(churn_csv), "--out", str(tmp_path / name), "--lang", "en"]) == 0
    predictions = read_table(tmp_path / name)
    assert predictions.columns.tolist() == ["prediction", "proba_no", "proba_yes"]
    assert len(predictions) == 300
    assert predictions["prediction"].iloc[:2].tolist() == ["no", "yes"]
    assert np.allclose(predictions["proba_no"] + predictions["proba_yes"], 1)
    assert "300" in capsys.readouterr().out


def test_predict_regression_writes_prediction_only(churn_csv, tmp_path, fake_engine):
    model = tmp_path / "m.automl"
    model.write_text("regression")
    assert cli.main(["predict", str(model), str(churn_csv), "--out", str(tmp_path / "p.csv")]) == 0
    assert read_table(tmp_path / "p.csv").columns.tolist() == ["prediction"]


def test_predict_checks_output_name_first(churn_csv, tmp_path, capsys, fake_engine):
    absent_model = tmp_path / "absent.automl"
    assert cli.main(["predict", str(absent_model), str(churn_csv), "--out", str(tmp_path / "p.json"),
                     "--lang", "en"]) == 2
    assert ".parquet" in one_error_line(capsys.readouterr().err)
    assert cli.main(["predict", str(absent_model), str(churn_csv), "--out", str(tmp_path / "p.csv"),
                     "--lang", "en"]) == 2
    assert "absent.automl" in one_error_line(capsys.readouterr().err)


METADATA = {
    "format": 1,
    "versions": {"python": "3.11.7", "scikit-learn": "1.9.1"},
    "task": "binary",
    "metric": "roc_auc",
    "target": "churned",
    "classes": ["no", "yes"],
    "schema": {"age": {"kind": "numeric", "dtype": "float64"}, "city": {"kind": "high_cardinality", "dtype": "str"}},
    "leaderboard": [{"rank": 1, "model": "linear", "family": "linear", "score": 0.8, "fit_time": 1.0,
                     "predict_time": 0.0, "weight": 1.0, "params": {}}],
    "ensemble": [{"model": "linear", "family": "linear", "weight": 1.0}],
    "guardrails": [{"code": "guard_constant_column", "severity": "warning", "column": "plan", "params": {},
                    "message": "déjà rendu"}],
    "something_new": {"a": 1},
}


def model_file_with_poisoned_pickle(path):
    """Unpickling `model.pkl` would fail: `info` must not try."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(METADATA))
        archive.writestr("model.pkl", b"not a pickle")
    return path


def test_info_reads_metadata_without_unpickling(tmp_path, capsys):
    path = model_file_with_poisoned_pickle(tmp_path / "m.automl")
    assert cli.main(["info", str(path), "--lang", "en"]) == 0
    out = capsys.readouterr().out
    for expected in ("Task: binary", "Target: churned", "Classes: no, yes", "age: numeric (float64)",
                     "scikit-learn 1.9.1", "linear (linear): 1.00", "Column 'plan' has a single value",
                     "something_new"):
        assert expected in out, expected
    assert cli.main(["info", str(path), "--lang", "fr"]) == 0
    assert "Tâche : binary" in capsys.readouterr().out


def test_info_json(tmp_path, capsys):
    path = model_file_with_poisoned_pickle(tmp_path / "m.automl")
    assert cli.main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == METADATA


def test_info_on_files_that_are_not_models(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "absent.automl"), "--lang", "en"]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    (tmp_path / "text.automl").write_text("hello")
    assert cli.main(["info", str(tmp_path / "text.automl"), "--lang", "en"]) == 2
    assert "not an AutoML model file" in one_error_line(capsys.readouterr().err)


# --- pieces ---------------------------------------------------------------------------------------


def test_progress_over_trials_counts_the_baseline():
    stream = io.StringIO()
    with cli.Progress("en", time_budget=60, max_trials=3, file=stream, disable=False) as progress:
        progress({"event": "start", "n_trials": 0, "elapsed": 0.0})
        progress({"event": "trial", "n_trials": 2, "best_score": 0.75, "elapsed": 3.0})
        assert progress.bar.n == 2 and progress.bar.total == 4
        progress({"event": "ensemble", "n_trials": 4, "best_score": 0.8, "elapsed": 5.0})
        progress({"event": "done", "n_trials": 4, "best_score": 0.8, "elapsed": 6.0})
        assert progress.bar.n == 4
    text = stream.getvalue()
    assert "best 0.7500, 2 model(s)" in text and "Ensemble" in text and "100%" in text


def test_progress_over_time_budget():
    stream = io.StringIO()
    with cli.Progress("fr", time_budget=10, max_trials=None, file=stream, disable=False) as progress:
        progress({"event": "trial", "n_trials": 1, "best_score": 0.5, "elapsed": 4.0})
        assert progress.bar.n == 4.0
        progress({"event": "trial", "n_trials": 2, "best_score": 0.5, "elapsed": 12.0})
        assert progress.bar.n == 10
    assert "meilleur 0.5000" in stream.getvalue()


@pytest.mark.parametrize(
    "data, model",
    [("dir/sales.csv", "dir/sales.automl"), ("dir/sales.csv.gz", "dir/sales.automl"),
     ("a.b.parquet", "a.b.automl"), ("data", "data.automl"), (".hidden", ".hidden.automl")],
)
def test_default_model_path(data, model):
    assert cli.default_model_path(data) == Path(model)


def test_leaderboard_table_is_short():
    board = pd.DataFrame({"rank": range(1, 16), "model": [f"m{i}" for i in range(15)], "family": "x",
                          "score": np.linspace(0.9, 0.5, 15), "fit_time": 1.0, "weight": 0.0, "params": [{}] * 15})
    text = cli.leaderboard_table(board, "en")
    assert "m9" in text and "m10" not in text and "params" not in text
    assert text.splitlines()[-1] == "… and 5 more model(s)."


# --- with the real engine ---------------------------------------------------------------------------


def test_engine_refuses_unknown_target(churn_csv, tmp_path, capsys):
    out = tmp_path / "m.automl"
    assert cli.main(["train", str(churn_csv), "--target", "nope", "--out", str(out), "--lang", "en"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'nope'" in line and "customer_id" in line
    assert not out.exists()


@pytest.mark.parametrize("option, value, words", [("--time-budget", "0", "time budget"), ("--metric", "bogus", "bogus")])
def test_engine_refuses_bad_parameters(churn_csv, tmp_path, capsys, option, value, words):
    argv = ["train", str(churn_csv), "--target", "churned", option, value, "--out", str(tmp_path / "m.automl"),
            "--lang", "en"]
    assert cli.main(argv) == 2
    assert words in one_error_line(capsys.readouterr().err)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "automl.cli", *map(str, args)], check=False, capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


def test_subprocess_errors_are_one_line(tmp_path):
    (tmp_path / "garbage.csv").write_bytes(np.random.default_rng(0).bytes(2000))
    for argv, status in [
        (["train", "missing.csv", "--target", "y"], 2),
        (["train", "garbage.csv", "--target", "y"], 2),
        (["train"], 2),
        (["info", "missing.automl"], 2),
        (["frobnicate"], 2),
    ]:
        result = run_cli(*argv, cwd=tmp_path)
        assert result.returncode == status, (argv, result.stderr)
        one_error_line(result.stderr)


@pytest.mark.slow
def test_train_predict_info_end_to_end(tmp_path):
    make_churn(300, seed=1).to_csv(tmp_path / "churn.csv", index=False)
    new = make_churn(40, seed=2).drop(columns="churned")
    new.to_parquet(tmp_path / "new.parquet")

    trained = run_cli("train", "churn.csv", "--target", "churned", "--max-trials", "2", "--lang", "en", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "Leaderboard" in trained.stdout and (tmp_path / "churn.automl").exists()

    predicted = run_cli("predict", "churn.automl", "new.parquet", "--out", "p.csv", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    predictions = read_table(tmp_path / "p.csv")
    assert predictions.columns.tolist() == ["prediction", "proba_no", "proba_yes"]
    assert len(predictions) == 40 and set(predictions["prediction"]) <= {"yes", "no"}
    assert np.allclose(predictions["proba_no"] + predictions["proba_yes"], 1)

    info = run_cli("info", "churn.automl", "--lang", "en", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "Target: churned" in info.stdout and "Task: binary" in info.stdout

    as_json = json.loads(run_cli("info", "churn.automl", "--json", cwd=tmp_path).stdout)
    assert as_json["target"] == "churned" and as_json["classes"] == ["no", "yes"]


@pytest.mark.slow
def test_ctrl_c_end_to_end_saves_best_model(tmp_path):
    make_churn(1000, seed=3).to_csv(tmp_path / "churn.csv", index=False)
    budget = 120
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "automl.cli", "train", "churn.csv", "--target", "churned", "--time-budget",
         str(budget), "--out", "m.automl", "--lang", "en"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = process.stdout.readline()  # printed once Ctrl-C is handled
    assert first.startswith("Training on"), first
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=budget)
    assert process.returncode == 0, err
    assert "stopped early" in out and (tmp_path / "m.automl").exists()
    assert time.monotonic() - started < 0.75 * budget
