"""Per-model reports, and the notebook that trains a run's model again.

Both are plain notebooks, so that what the platform shows and what an expert
opens in JupyterLab are the same thing:

- `training_notebook` writes the training with the public API (`from automl
  import AutoML`), the data path and the seed included. With `time_budget=None`
  and `max_trials`, executing it gives the same model as the run.
- `report_notebook` loads a saved model and shows what it is and how good it
  is; `render_report` executes it and exports HTML without the code.

The report must read offline: charts are matplotlib PNGs embedded in the HTML,
tables are HTML, and the template drops the CDN scripts (require.js, MathJax,
Mermaid) that nbconvert's lab template links and that no content here needs.

Jupyter packages (nbformat, nbclient, nbconvert, ipykernel) are imported inside
the functions: the platform service imports `automl` without them.
"""

from __future__ import annotations

import html
import importlib.util
import math
import numbers
import sys
import tempfile
from pathlib import Path

from .errors import AutoMLError, ReportError
from .i18n import language, message

# AutoML's constructor arguments that a run's params may carry, in the order the
# notebook writes them; anything else in a job's params (name, target, ...) is
# bookkeeping of the platform, not a setting of the engine.
ENGINE_PARAMS = ("time_budget", "max_trials", "task", "metric", "seed", "cv", "ensemble_size", "device", "n_jobs")

KERNEL_SPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# nbconvert's lab page without its CDN scripts; its CSS is inlined by the lab
# template itself, and outputs' images are data: URIs.
OFFLINE_TEMPLATE = """\
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


# --- the training notebook ------------------------------------------------------


def training_notebook(*, data_path: str, target: str, params: dict, lang: str | None = None,
                      model_path: str = "model.automl"):
    """A notebook that trains the run's model again: same data, same settings.

    `params` are the run's settings (a job's params do: keys that are not
    AutoML's constructor arguments are ignored; device "gpu" means "cuda").
    """
    nbformat = _require("nbformat")
    lang = language(lang)
    settings = _engine_settings(params)
    if "time_budget" not in settings:
        settings = {"time_budget": _engine_default("time_budget"), **settings}
    if "seed" not in settings:
        settings["seed"] = _engine_default("seed")
    seed, budget = settings["seed"], settings["time_budget"]
    if budget is None:
        reproducible = message("train_nb_exact", lang, seed=seed)
    else:
        reproducible = message("train_nb_budget", lang, seconds=budget, seed=seed)
    data = message("train_nb_data", lang, path=_code_span(data_path), target=_code_span(target))
    arguments = "".join(f"    {name}={value!r},\n" for name, value in settings.items())
    cells = [
        _markdown(nbformat, "intro", f"# {message('train_nb_title', lang)}\n\n"
                                     f"{message('train_nb_intro', lang)}\n\n{data}\n\n{reproducible}"),
        _code(nbformat, "imports", "from automl import AutoML\nfrom automl.tables import read_table"),
        _markdown(nbformat, "read-title", f"## {message('train_nb_read', lang)}"),
        _code(nbformat, "read-data", f"DATA_PATH = {str(data_path)!r}\nTARGET = {str(target)!r}\n\n"
                                     "data = read_table(DATA_PATH)\ndata.head()"),
        _markdown(nbformat, "fit-title", f"## {message('train_nb_fit', lang)}"),
        _code(nbformat, "fit", f"model = AutoML(\n{arguments})\nmodel.fit(data, target=TARGET)\n"
                               "model.best_model_, model.best_score_"),
        _markdown(nbformat, "leaderboard-title", f"## {message('report_leaderboard', lang)}"),
        _code(nbformat, "leaderboard", "model.leaderboard_"),
        _markdown(nbformat, "importance-title", f"## {message('report_importance', lang)}\n\n"
                                                f"{message('report_importance_intro', lang)}"),
        _code(nbformat, "importance", "model.feature_importance_"),
        _markdown(nbformat, "save-title", f"## {message('train_nb_save', lang)}\n\n"
                                          f"{message('train_nb_save_intro', lang)}"),
        _code(nbformat, "save", f"MODEL_PATH = {str(model_path)!r}\nmodel.save(MODEL_PATH)"),
    ]
    return _notebook(nbformat, cells, title=message("train_nb_title", lang), lang=lang)


def _engine_default(name: str):
    """AutoML's own default, written out so that the notebook says what it does
    (the time budget and the seed decide whether a rerun gives the same model)."""
    import inspect

    from .engine import AutoML

    return inspect.signature(AutoML).parameters[name].default


def _engine_settings(params: dict) -> dict:
    """The run's engine settings as Python literals, refused when a value could
    not be written as one (the notebook is code: nothing but literals goes in)."""
    settings = {}
    for name in ENGINE_PARAMS:
        if name not in params:
            continue
        value = params[name]
        if name == "device" and value == "gpu":
            value = "cuda"
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)
        if not (value is None or isinstance(value, (str, bool, int)) or
                (isinstance(value, float) and math.isfinite(value))):
            raise ReportError("report_bad_param", name=name, value=value)
        settings[name] = value
    return settings


# --- the report notebook --------------------------------------------------------

_SETUP = """\
%matplotlib inline
import warnings

warnings.simplefilter("ignore")  # libraries' hints to developers, not to the report's readers
from html import escape

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import HTML, display

from automl import AutoML
from automl.i18n import message

MODEL_PATH = {model_path!r}
LANG = {lang!r}
plt.rcParams.update({{"figure.dpi": 96, "text.parse_math": False}})


def text(code, **params):
    return message(code, LANG, **params)


def table(frame, **options):
    display(HTML(frame.to_html(float_format="{{:.4f}}".format, border=0, **options)))"""

_SUMMARY = """\
summary = {
    text("report_task"): text(f"report_task_{model.task_}"),
    text("report_target"): model.target_,
    text("report_metric"): model.metric_,
    text("report_best_score"): f"{model.best_score_:.4f}",
    text("report_best_model"): model.best_model_,
    text("report_ensemble"): ", ".join(f"{m['model']} ({m['weight']:.0%})" for m in model.ensemble_),
    text("report_trials"): model.n_trials_,
    text("report_fit_time"): text("report_seconds", seconds=model.fit_time_),
    text("report_stopped_by"): text(f"report_stopped_{model.stopped_by_}"),
}
table(pd.Series(summary).to_frame(), header=False)"""

_LEADERBOARD = """\
columns = {"rank": "report_col_rank", "model": "report_col_model", "family": "report_col_family",
           "score": "report_col_score", "fit_time": "report_col_fit_time",
           "predict_time": "report_col_predict_time", "weight": "report_col_weight"}
board = model.leaderboard_[list(columns)].rename(columns={c: text(code) for c, code in columns.items()})
table(board, index=False)"""

_VALIDATION = """\
scores = pd.DataFrame({text("report_metric"): list(model.validation_scores_),
                       text("report_col_score"): list(model.validation_scores_.values())})
table(scores, index=False)"""

_IMPORTANCE = """\
top = model.feature_importance_.head(20).iloc[::-1]
fig, ax = plt.subplots(figsize=(7, 1 + 0.3 * len(top)))
ax.barh(top["feature"].astype(str), top["importance"], xerr=top["std"], color="#4c72b0")
ax.axvline(0, color="black", linewidth=0.8)
ax.set_xlabel(text("report_importance_axis"))
fig.tight_layout()
plt.show()"""

_CONFUSION = """\
labels = model.plot_data_["confusion_matrix"]["labels"]
matrix = np.asarray(model.plot_data_["confusion_matrix"]["matrix"])
side = min(12, 2.5 + 0.6 * len(labels))
fig, ax = plt.subplots(figsize=(side, side))
ax.imshow(matrix, cmap="Blues")
ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
ax.set_yticks(range(len(labels)), labels)
for (i, j), count in np.ndenumerate(matrix):
    ax.text(j, i, count, ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
ax.set_xlabel(text("report_predicted"))
ax.set_ylabel(text("report_actual"))
fig.tight_layout()
plt.show()"""

_ROC = """\
fig, ax = plt.subplots(figsize=(5, 5))
for label, curve in model.plot_data_["roc"].items():
    ax.plot(curve["fpr"], curve["tpr"], label=label)
ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label=text("report_chance"))
ax.set_xlabel(text("report_fpr"))
ax.set_ylabel(text("report_tpr"))
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()"""

_RESIDUALS = """\
points = model.plot_data_["residuals"]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
left.scatter(points["actual"], points["predicted"], s=8, alpha=0.5)
low = min(min(points["actual"]), min(points["predicted"]))
high = max(max(points["actual"]), max(points["predicted"]))
left.plot([low, high], [low, high], linestyle="--", color="grey")
left.set_xlabel(text("report_actual"))
left.set_ylabel(text("report_predicted"))
right.scatter(points["predicted"], points["residual"], s=8, alpha=0.5)
right.axhline(0, linestyle="--", color="grey")
right.set_xlabel(text("report_predicted"))
right.set_ylabel(text("report_residual"))
fig.tight_layout()
plt.show()"""

_GUARDRAILS = """\
severity = {"warning": text("report_severity_warning"), "info": text("report_severity_info")}
checks = [(severity.get(g["severity"], g["severity"]), text(g["code"], column=g["column"], **g["params"]))
          for g in model.guardrails_]
if checks:
    table(pd.DataFrame(checks), index=False, header=False)
else:
    display(HTML(f"<p>{escape(text('report_no_guardrails'))}</p>"))"""


def report_notebook(*, model_path: str, lang: str | None = None):
    """The report of one saved model, as a notebook to execute.

    The model file's metadata (readable without unpickling) decides which
    charts apply; the notebook itself unpickles the model, so give it only
    files the platform wrote (verify the signature first: `automl.signing`).
    """
    nbformat = _require("nbformat")
    lang = language(lang)
    meta = _model_metadata(model_path, lang)

    def t(code, **params):
        return message(code, lang, **params)

    def section(name, intro, source):
        return [_markdown(nbformat, f"{name}-title", f"## {t('report_' + name)}\n\n{intro}"),
                _code(nbformat, name, source)]

    intro = t("report_intro", file=_code_span(Path(model_path).name))
    cells = [
        _markdown(nbformat, "intro", f"# {t('report_title')}\n\n{intro}"),
        _code(nbformat, "setup", _SETUP.format(model_path=str(model_path), lang=lang)),
        _code(nbformat, "load-model", "model = AutoML.load(MODEL_PATH)"),
        _markdown(nbformat, "summary-title", f"## {t('report_summary')}"),
        _code(nbformat, "summary", _SUMMARY),
        *section("leaderboard", t("report_leaderboard_intro", metric=_code_span(meta["metric"])), _LEADERBOARD),
        *section("validation", t("report_validation_intro"), _VALIDATION),
        *section("importance", t("report_importance_intro"), _IMPORTANCE),
    ]
    if meta["task"] == "regression":
        cells += section("residuals", t("report_residuals_intro"), _RESIDUALS)
    else:
        cells += section("confusion", t("report_confusion_intro"), _CONFUSION)
        cells += section("roc", t("report_roc_intro"), _ROC)
    cells += section("guardrails", t("report_guardrails_intro"), _GUARDRAILS)
    title = f"{t('report_title')}: {meta['target']} ({meta['best_model']})"
    return _notebook(nbformat, cells, title=title, lang=lang)


def _model_metadata(model_path, lang) -> dict:
    """Refuse an unreadable or incompatible model file before any kernel starts."""
    from .engine.persistence import check_compatible, read_metadata

    try:
        meta = read_metadata(model_path)
        check_compatible(meta, str(model_path))
    except AutoMLError as error:
        raise ReportError("report_model_invalid", detail=error.message(lang)) from None
    return meta


# --- rendering ------------------------------------------------------------------


def render_report(model_path, out_html, *, lang: str | None = None, timeout: int = 120) -> Path:
    """Execute the report notebook of `model_path` and write it as HTML (code
    hidden), with the executed notebook beside it (same name, `.ipynb`).

    `timeout` bounds each cell, in seconds. Nothing is written when a step
    fails: a `ReportError` names the failing cell instead.
    """
    nbformat = _require("nbformat")
    _require("nbclient")
    _require("nbconvert")
    lang = language(lang)
    model_path = Path(model_path).resolve()
    out_html = Path(out_html)
    nb = report_notebook(model_path=str(model_path), lang=lang)
    with tempfile.TemporaryDirectory(prefix="automl-report-") as workdir:
        execute(nb, cwd=workdir, timeout=timeout)
    page = export_html(nb, lang=lang)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out_html.with_suffix(".ipynb")))
    out_html.write_text(page, encoding="utf-8")
    return out_html


def export_html(nb, *, lang: str | None = None) -> str:
    """An executed notebook as one self-contained HTML page, outputs only."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        raw_template=OFFLINE_TEMPLATE,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        language_code=language(lang),
    )
    page, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb.metadata.get("title", "")}})
    return page


def execute(nb, *, cwd, timeout: int = 120):
    """Run every cell of `nb` in place, in `cwd`, with this Python's kernel;
    `timeout` bounds each cell in seconds. A failure is a `ReportError` naming
    the cell (its number among code cells, and its id)."""
    _require("nbclient")
    if importlib.util.find_spec("ipykernel") is None:  # the kernel's side: not imported here
        raise ReportError("report_unavailable", package="ipykernel")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    current = {"index": None}

    def on_cell_start(cell, cell_index):
        current["index"] = cell_index

    def where():
        index = current["index"]
        if index is None:
            return {"number": 0, "step": ""}
        number = sum(1 for cell in nb.cells[: index + 1] if cell.cell_type == "code")
        return {"number": number, "step": nb.cells[index].get("id", "")}

    with tempfile.TemporaryDirectory(prefix="automl-kernel-") as private:
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(private) / "kernel.json"),
            timeout=timeout,
            startup_timeout=60,
            resources={"metadata": {"path": str(cwd)}},
            on_cell_start=on_cell_start,
        )
        try:
            client.execute()
        except CellExecutionError as error:
            raise ReportError("report_cell_failed", error=f"{error.ename}: {error.evalue}", **where()) from None
        except CellTimeoutError:
            raise ReportError("report_timeout", seconds=timeout, **where()) from None
        except (DeadKernelError, RuntimeError) as error:  # the kernel died, or did not start or answer
            raise ReportError("report_kernel_failed", reason=str(error) or type(error).__name__) from None
    return nb


def _kernel_manager(connection_file: Path):
    """A kernel manager that runs ipykernel with this very interpreter.

    Looking up "python3" among installed kernelspecs can find a user-level or
    system one pointing at another Python (without automl); this spec cannot.
    """
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name=KERNEL_SPEC["display_name"], language="python")

    # IPC: the kernel's sockets are files in the private work directory, not
    # TCP ports that any local user could reach.
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPython(),
                              connection_file=str(connection_file), transport="ipc")


# --- notebook building blocks ---------------------------------------------------


def _require(package: str):
    try:
        return __import__(package)
    except ImportError:
        raise ReportError("report_unavailable", package=package) from None


def _notebook(nbformat, cells, *, title: str, lang: str):
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata.update({
        "kernelspec": dict(KERNEL_SPEC),
        "language_info": {"name": "python"},
        "title": title,
        "automl": {"language": lang},
    })
    return nb


def _code_span(value) -> str:
    """User-given text (file names, columns) inside Markdown: escaped, never markup."""
    return f"<code>{html.escape(str(value))}</code>"


def _markdown(nbformat, cell_id: str, source: str):
    return nbformat.v4.new_markdown_cell(source, id=cell_id)


def _code(nbformat, cell_id: str, source: str):
    return nbformat.v4.new_code_cell(source, id=cell_id)
