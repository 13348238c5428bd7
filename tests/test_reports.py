"""Per-model reports and the run's training notebook, executed for real:
a real kernel (this venv's Python) runs the notebooks, nbconvert writes the HTML."""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from html.parser import HTMLParser
from urllib.parse import urlparse

import nbformat
import numpy as np
import pandas as pd
import pytest

from automl import AutoML
from automl.datasets import make_churn
from automl.errors import ReportError
from automl.i18n import message
from automl.reports import execute, render_report, report_notebook, training_notebook
from automl.tables import read_table

QUICK = {"time_budget": None, "max_trials": 2, "seed": 0}


class Page(HTMLParser):
    """What a browser would fetch to show the page, its headings and its text."""

    RESOURCE_ATTRIBUTES = {"script": "src", "link": "href", "img": "src", "iframe": "src", "embed": "src",
                           "object": "data", "source": "src", "audio": "src", "video": "src", "track": "src"}

    def __init__(self, html: str):
        super().__init__()
        self.resources, self.scripts, self.headings, self.text, self.styles = [], 0, [], [], []
        self._heading = self._style = None
        self.feed(html)
        self.text = " ".join(" ".join(self.text).split())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag in self.RESOURCE_ATTRIBUTES and attrs.get(self.RESOURCE_ATTRIBUTES[tag]):
            self.resources.append(attrs[self.RESOURCE_ATTRIBUTES[tag]])
        if tag in ("h1", "h2"):
            self._heading = []
        if tag == "style":
            self._style = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2") and self._heading is not None:
            self.headings.append("".join(self._heading).replace("¶", "").strip())
            self._heading = None
        if tag == "style" and self._style is not None:
            self.styles.append("".join(self._style))
            self._style = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)
        if self._style is not None:
            self._style.append(data)
        else:
            self.text.append(data)


def guardrail_text(guard, lang):
    return message(guard["code"], lang, column=guard["column"], **guard["params"])


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "churn.automl"
    model = AutoML(**QUICK).fit(make_churn(300, seed=0), target="churned")
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def reports(churn_model, tmp_path_factory):
    _, path = churn_model
    out = tmp_path_factory.mktemp("reports")
    return {lang: render_report(path, out / f"report-{lang}.html", lang=lang) for lang in ("fr", "en")}


# --- the HTML report --------------------------------------------------------------


def test_report_shows_the_model(churn_model, reports):
    model, _ = churn_model
    html = reports["en"].read_text(encoding="utf-8")
    page = Page(html)
    assert html.startswith("<!DOCTYPE html>") and '<html lang="en">' in html
    for name in model.leaderboard_["model"]:
        assert name in page.text
    assert f"{model.best_score_:.4f}" in page.text
    assert message("report_task_binary", "en") in page.text
    # feature importance, confusion matrix, ROC curve: PNGs inside the page
    assert html.count('src="data:image/png;base64,') >= 3
    for guard in model.guardrails_:
        assert guardrail_text(guard, "en") in page.text
    # outputs only: none of the notebook's code is shown
    assert "AutoML.load" not in html and "import matplotlib" not in html


def test_report_writes_the_executed_notebook_beside_it(reports):
    nb = nbformat.read(str(reports["fr"].with_suffix(".ipynb")), as_version=4)
    nbformat.validate(nb)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    # nothing on stderr (library warnings) reaches the reader
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]


def test_report_needs_nothing_online(reports):
    """What is checked: no element makes the browser fetch anything from outside
    the file (script, stylesheet link, image, frame, media: every src/href/data
    must be a data: URI), there is no script at all (the content needs no
    JavaScript), and the inline CSS imports nothing and its url()s are data: URIs.
    Text links in CSS comments (credits) load nothing and are allowed."""
    for path in reports.values():
        page = Page(path.read_text(encoding="utf-8"))
        assert page.resources, "the charts are images"
        assert all(urlparse(src).scheme == "data" for src in page.resources), page.resources
        assert page.scripts == 0
        css = "\n".join(page.styles)
        assert "@import" not in css
        urls = [u.strip("'\" ") for u in pd.Series([css]).str.extractall(r"url\(([^)]*)\)")[0]]
        assert urls and all(u.startswith("data:") for u in urls)


def test_french_and_english_reports_differ_in_headings(reports):
    fr = Page(reports["fr"].read_text(encoding="utf-8"))
    en = Page(reports["en"].read_text(encoding="utf-8"))
    assert '<html lang="fr">' in reports["fr"].read_text(encoding="utf-8")
    for code in ("report_title", "report_summary", "report_leaderboard", "report_validation",
                 "report_importance", "report_confusion", "report_roc", "report_guardrails"):
        assert message(code, "fr") in fr.headings
        assert message(code, "en") in en.headings
    assert not set(fr.headings) & set(en.headings)
    assert message("report_best_score", "fr") in fr.text and message("report_best_score", "en") not in fr.text


def test_regression_report_shows_errors_and_escapes_names(regression_df, tmp_path):
    # A hostile target name: shown as text, never as markup.
    hostile = '<script>alert("price")</script>'
    model = AutoML(**QUICK).fit(regression_df.rename(columns={"price": hostile}), target=hostile)
    model.save(tmp_path / "price.automl")
    out = render_report(tmp_path / "price.automl", tmp_path / "out" / "report.html", lang="fr")
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    assert message("report_residuals", "fr") in page.headings
    assert message("report_confusion", "fr") not in page.headings
    assert message("report_task_regression", "fr") in page.text
    assert html.count('src="data:image/png;base64,') >= 2  # importance, residuals
    assert "<script" not in html and hostile in page.text


# --- bad input: a readable error, nothing written --------------------------------


def test_missing_model_file_is_refused(tmp_path):
    missing = tmp_path / "nowhere.automl"
    with pytest.raises(ReportError) as caught:
        render_report(missing, tmp_path / "out" / "report.html", lang="en")
    assert caught.value.code == "report_model_invalid"
    assert str(missing) in caught.value.message("en") and "not an AutoML model file" in caught.value.message("en")
    assert caught.value.message("fr").startswith("Le rapport ne peut pas être produit")
    assert not (tmp_path / "out").exists()


def test_file_that_is_not_a_model_is_refused(tmp_path):
    bogus = tmp_path / "data.csv"
    bogus.write_text("a,b\n1,2\n")
    with pytest.raises(ReportError) as caught:
        report_notebook(model_path=str(bogus), lang="en")
    assert caught.value.code == "report_model_invalid"
    assert "data.csv" in caught.value.message("en")


def test_failing_cell_is_named(churn_model, tmp_path):
    """A file whose metadata reads well but whose model does not unpickle fails
    inside the kernel: the error names that cell and says why."""
    _, path = churn_model
    broken = tmp_path / "broken.automl"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        target.writestr("metadata.json", source.read("metadata.json"))
        target.writestr("model.pkl", b"this is not a pickle")
    out = tmp_path / "out" / "report.html"
    with pytest.raises(ReportError) as caught:
        render_report(broken, out, lang="en")
    error = caught.value
    assert error.code == "report_cell_failed"
    assert error.params["step"] == "load-model" and error.params["number"] == 2
    assert "UnpicklingError" in error.params["error"]
    assert error.message("en").startswith("The report stopped at cell 2 (load-model): UnpicklingError")
    assert not out.exists() and not out.with_suffix(".ipynb").exists()


def test_slow_cell_is_stopped_and_named(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", id="quick"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(30)", id="slow"),
    ])
    with pytest.raises(ReportError) as caught:
        execute(nb, cwd=tmp_path, timeout=3)
    assert caught.value.code == "report_timeout"
    assert caught.value.params == {"seconds": 3, "number": 2, "step": "slow"}


def test_kernel_is_this_python_whatever_kernelspecs_say(tmp_path, monkeypatch):
    """A "python3" kernelspec found first on the Jupyter path (a user's own, or
    another environment's) must not decide which Python runs the report."""
    decoy = tmp_path / "jupyter" / "kernels" / "python3"
    decoy.mkdir(parents=True)
    (decoy / "kernel.json").write_text(json.dumps({
        "argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.executable)", id="which")])
    execute(nb, cwd=tmp_path, timeout=60)
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable


# --- the training notebook -------------------------------------------------------


def test_training_notebook_gives_the_same_model(tmp_path):
    data = tmp_path / "churn.csv"
    make_churn(300, seed=0).to_csv(data, index=False)
    job_params = {**QUICK, "task": "auto", "metric": "auto", "target": "churned", "name": "churn"}
    nb = training_notebook(data_path=str(data), target="churned", params=job_params, lang="en")
    nbformat.validate(nb)
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "from automl import AutoML" in source and repr(str(data)) in source and "seed=0" in source
    assert "max_trials=2" in source and "time_budget=None" in source and "name=" not in source
    assert message("train_nb_exact", "en", seed=0) in nb.cells[0].source

    execute(nb, cwd=tmp_path, timeout=300)
    from_notebook = AutoML.load(tmp_path / "model.automl")
    frame = read_table(data)
    direct = AutoML(**QUICK, task="auto", metric="auto").fit(frame, target="churned")
    rows = frame.drop(columns="churned")
    np.testing.assert_array_equal(from_notebook.predict(rows), direct.predict(rows))
    np.testing.assert_array_equal(from_notebook.predict_proba(rows), direct.predict_proba(rows))
    columns = ["model", "score"]
    pd.testing.assert_frame_equal(from_notebook.leaderboard_[columns], direct.leaderboard_[columns])
    # and the notebook shows the leaderboard it trained
    shown = {cell.id: cell.outputs for cell in nb.cells if cell.cell_type == "code"}
    assert "linear" in json.dumps(shown["leaderboard"])


def test_training_notebook_with_a_time_budget_says_it_may_differ():
    nb = training_notebook(data_path="sales.parquet", target="amount",
                           params={"time_budget": 120, "seed": 7, "device": "gpu"}, lang="fr")
    assert message("train_nb_budget", "fr", seconds=120, seed=7) in nb.cells[0].source
    fit = next(cell.source for cell in nb.cells if cell.get("id") == "fit")
    assert "time_budget=120" in fit and "seed=7" in fit and "device='cuda'" in fit
    assert message("train_nb_title", "fr") in nb.cells[0].source


def test_training_notebook_writes_user_text_as_literals():
    """Paths and column names go in as Python literals and Markdown-escaped text:
    neither can turn into code or markup."""
    target = "it's \"odd\"\nprint('pwned')"
    path = "data/<b>q3</b>.csv"
    nb = training_notebook(data_path=path, target=target, params=QUICK, lang="en")
    for cell in nb.cells:
        if cell.cell_type == "code":
            ast.parse(cell.source)
    read = next(cell.source for cell in nb.cells if cell.get("id") == "read-data")
    assigned = {node.targets[0].id: ast.literal_eval(node.value)
                for node in ast.parse(read).body if isinstance(node, ast.Assign) and node.targets[0].id.isupper()}
    assert assigned == {"DATA_PATH": path, "TARGET": target}
    assert "<b>" not in nb.cells[0].source and "&lt;b&gt;q3&lt;/b&gt;" in nb.cells[0].source


@pytest.mark.parametrize("params", [
    {"seed": [1, 2]},
    {"time_budget": float("nan")},
    {"metric": {"name": "auc"}},
    {"task": object()},
])
def test_training_notebook_refuses_values_that_are_not_literals(params):
    with pytest.raises(ReportError) as caught:
        training_notebook(data_path="d.csv", target="y", params=params, lang="en")
    assert caught.value.code == "report_bad_param"
    assert next(iter(params)) in caught.value.message("en")
