"""Command line: `automl train | predict | info`.

Every failure ends as one line on stderr, `automl: error: <message>`, in the
language of --lang (else the deployment's default language), never a
traceback: exit status 2 when the command line or the input is at fault,
1 for anything else, 130 when interrupted.

Ctrl-C during `train` asks the engine to stop and keep the best model found so
far, which is then saved as usual (exit status 0); a second Ctrl-C aborts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pandas as pd

from .errors import AutoMLError, DataError
from .i18n import language, message
from .settings import LANGUAGES
from .tables import read_table, writable_format, write_table

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TASKS = ("auto", "binary", "multiclass", "regression")
CLASSIFICATION = ("binary", "multiclass")
LEADERBOARD_ROWS = 10


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lang = language(_lang_in(argv))
    try:
        args = _parser(lang).parse_args(argv)
        return args.run(args, lang)
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else EXIT_OK
    except _UsageError as error:
        return _fail(message("cli_usage", lang, detail=str(error)), EXIT_USAGE)
    except AutoMLError as error:
        return _fail(error.message(lang), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail(message("cli_interrupted", lang), EXIT_INTERRUPTED)
    except BrokenPipeError:  # `automl info m.automl | head`: the reader has gone, nobody to tell
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as error:
        if error.filename is None:
            text = message("cli_unexpected", lang, kind=type(error).__name__, detail=_first_line(error))
        else:
            text = message("cli_os_error", lang, path=error.filename, reason=error.strerror or str(error))
        return _fail(text, EXIT_FAILURE)
    except Exception as error:  # noqa: BLE001 - the promise is one readable line, whatever breaks
        return _fail(message("cli_unexpected", lang, kind=type(error).__name__, detail=_first_line(error)), EXIT_FAILURE)


# --- commands -----------------------------------------------------------------


def _train(args, lang: str) -> int:
    out = Path(args.out) if args.out else default_model_path(args.data)
    _require_folder(out)
    df = read_table(args.data)
    _note_first_sheet(df, args.data, lang)
    automl_class = _automl_class()
    progress = Progress(lang, time_budget=args.time_budget, max_trials=args.max_trials)
    model = automl_class(
        time_budget=args.time_budget,
        task=args.task,
        metric=args.metric,
        seed=args.seed,
        max_trials=args.max_trials,
        callback=progress,
    )
    with CancelOnInterrupt(model, lang) as interrupt, progress:
        # Printed once Ctrl-C is handled: a caller that waits for this line may interrupt.
        print(message("cli_training", lang, rows=len(df), columns=df.shape[1], target=args.target), flush=True)
        model.fit(df, target=args.target)
    if interrupt.cancelled:
        print(message("cli_cancelled", lang))
    _print_guardrails(model.guardrails_, lang)
    print(message("cli_leaderboard", lang, metric=model.metric_))
    print(leaderboard_table(model.leaderboard_, lang))
    model.save(out)
    print(message("cli_saved", lang, path=out))
    return EXIT_OK


def _predict(args, lang: str) -> int:
    writable_format(args.out)
    _require_folder(Path(args.out))
    _require_file(args.model)
    model = _automl_class().load(args.model)
    df = read_table(args.data)
    _note_first_sheet(df, args.data, lang)
    predictions = pd.DataFrame({"prediction": pd.Series(model.predict(df)).to_numpy()})
    if model.task_ in CLASSIFICATION:
        proba = model.predict_proba(df)
        for i, label in enumerate(model.classes_):
            predictions[f"proba_{label}"] = proba[:, i]
    write_table(predictions, args.out)
    print(message("cli_predictions_written", lang, rows=len(predictions), path=args.out))
    return EXIT_OK


def _info(args, lang: str) -> int:
    _require_file(args.model)
    from .engine import read_metadata

    metadata = read_metadata(args.model)
    if args.json:
        print(json.dumps(metadata, indent=2, ensure_ascii=False, default=str))
    else:
        print(format_metadata(metadata, lang))
    return EXIT_OK


def _automl_class():
    """The one place that names the engine class, so that tests can stand in for it."""
    from . import AutoML

    return AutoML


# --- argument parsing ---------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse prints usage on several lines and exits; we want one line and a status."""

    def error(self, text):
        raise _UsageError(text)


def _lang_in(argv: list[str]) -> str | None:
    """--lang is needed before parsing, to word the parsing errors."""
    found = None
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--lang="):
            found = arg.split("=", 1)[1]
    return found


def _parser(lang: str) -> argparse.ArgumentParser:
    def h(code, **params):
        return message(code, lang, **params).replace("%", "%%")

    common = _Parser(add_help=False)
    common.add_argument("--lang", choices=LANGUAGES, help=h("cli_help_lang"))

    parser = _Parser(prog="automl", description=h("cli_help_description"), parents=[common])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,predict,info}")

    train = commands.add_parser("train", parents=[common], help=h("cli_help_train"), description=h("cli_help_train"))
    train.add_argument("data", metavar="DATA", help=h("cli_help_data"))
    train.add_argument("--target", required=True, metavar="COL", help=h("cli_help_target"))
    train.add_argument("--time-budget", type=float, default=60.0, metavar="S", help=h("cli_help_time_budget"))
    train.add_argument("--metric", default="auto", metavar="M", help=h("cli_help_metric"))
    train.add_argument("--task", choices=TASKS, default="auto", help=h("cli_help_task"))
    train.add_argument("--seed", type=int, default=0, metavar="N", help=h("cli_help_seed"))
    train.add_argument("--max-trials", type=int, default=None, metavar="N", help=h("cli_help_max_trials"))
    train.add_argument("--out", metavar="MODEL", help=h("cli_help_model_out"))
    train.set_defaults(run=_train)

    predict = commands.add_parser(
        "predict", parents=[common], help=h("cli_help_predict"), description=h("cli_help_predict")
    )
    predict.add_argument("model", metavar="MODEL", help=h("cli_help_model"))
    predict.add_argument("data", metavar="DATA", help=h("cli_help_data"))
    predict.add_argument("--out", required=True, metavar="PREDICTIONS", help=h("cli_help_predictions_out"))
    predict.set_defaults(run=_predict)

    info = commands.add_parser("info", parents=[common], help=h("cli_help_info"), description=h("cli_help_info"))
    info.add_argument("model", metavar="MODEL", help=h("cli_help_model"))
    info.add_argument("--json", action="store_true", help=h("cli_help_json"))
    info.set_defaults(run=_info)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("automl-hub")
    except PackageNotFoundError:
        return "?"


# --- training feedback ------------------------------------------------------------


class Progress:
    """A tqdm bar fed by the engine's callback: over the trials when their number
    is capped, else over the time budget; the postfix shows the best score.

    The bar appears with the first event, after whatever was printed before fit."""

    def __init__(self, lang: str, *, time_budget: float | None, max_trials: int | None, file=None, disable=None):
        self.lang = lang
        self.by_trials = max_trials is not None
        # The engine evaluates a constant baseline before the `max_trials` models.
        self.total = max_trials + 1 if self.by_trials else time_budget
        self.file = file
        self.disable = disable
        self.bar = None

    def _open(self):
        from tqdm import tqdm

        count = "{n_fmt}/{total_fmt}" if self.by_trials else "{n:.0f}/{total:.0f} s"
        return tqdm(
            total=self.total,
            desc=message("cli_progress", self.lang),
            file=self.file if self.file is not None else sys.stderr,
            disable=self.disable,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| " + count + "{postfix}",
        )

    def __call__(self, event: dict) -> None:
        if self.bar is None:
            self.bar = self._open()
        kind = event.get("event")
        done = event.get("n_trials") if self.by_trials else event.get("elapsed")
        if kind == "done" and self.total is not None:
            done = self.total
        if done is not None and self.total is not None:
            self.bar.n = min(done, self.total)
        if kind == "ensemble":
            self.bar.set_description_str(message("cli_progress_ensemble", self.lang), refresh=False)
        best = event.get("best_score")
        if best is not None:
            postfix = message("cli_progress_postfix", self.lang, best=best, count=event.get("n_trials") or 0)
            self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.close()


class CancelOnInterrupt:
    """First Ctrl-C: ask the model to stop and keep what it has; second: abort.

    Signal handlers can only be installed from the main thread; elsewhere
    Ctrl-C keeps its usual meaning."""

    def __init__(self, model, lang: str | None = None):
        self.model = model
        self.lang = lang
        self.cancelled = False
        self._previous = None
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)

    def _handle(self, signum, frame):
        if self.cancelled:
            raise KeyboardInterrupt
        self.cancelled = True
        _write_now(message("cli_cancelling", self.lang))
        self.model.cancel()


def _write_now(text: str) -> None:
    """Straight to the file descriptor: a signal handler may interrupt a write
    of the buffered stream, and re-entering it raises."""
    try:
        os.write(sys.stderr.fileno(), ("\n" + text + "\n").encode(sys.stderr.encoding or "utf-8", "replace"))
    except (AttributeError, OSError, ValueError):
        pass


# --- output -----------------------------------------------------------------------


def default_model_path(data) -> Path:
    """Next to the data, named after it: 'sales.csv.gz' -> 'sales.automl'."""
    path = Path(data)
    name = path.name
    for _ in range(2):
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            break
        name = stem
        if suffix.lower() != "gz":
            break
    return path.with_name(name + ".automl")


def leaderboard_table(board, lang: str | None = None, limit: int = LEADERBOARD_ROWS) -> str:
    board = pd.DataFrame(board)
    columns = [c for c in ("rank", "model", "family", "score", "fit_time", "weight") if c in board.columns]
    shown = board[columns].head(limit)
    formats = {"score": "{:.4f}", "fit_time": "{:.1f}", "weight": "{:.2f}"}
    text = shown.to_string(index=False, formatters={c: _formatter(f) for c, f in formats.items() if c in shown})
    if len(board) > limit:
        text += "\n" + message("cli_leaderboard_more", lang, count=len(board) - limit)
    return text


def _formatter(template: str):
    return lambda value: template.format(value) if pd.notna(value) else ""


def format_metadata(metadata: dict, lang: str | None = None) -> str:
    """Human-readable `automl info`; keys it does not know are shown as JSON."""
    lines = []
    shown = set()

    def label(key):
        return message("cli_label", lang, label=message("cli_info_" + key, lang))

    def line(key, text):
        lines.append(f"{label(key)} {text}")
        shown.add(key)

    def section(key, rows):
        if rows:
            lines.append(label(key))
            lines.extend("  " + row for row in rows)
        shown.add(key)

    for key in ("format", "task", "metric", "target", "classes", "best_model", "best_score"):
        if key in metadata:
            line(key, _plain(metadata[key]))
    if isinstance(metadata.get("versions"), dict):
        line("versions", ", ".join(f"{k} {v}" for k, v in metadata["versions"].items()))
    if isinstance(metadata.get("schema"), dict):
        section("schema", [f"{name}: {_column(spec)}" for name, spec in metadata["schema"].items()])
    if isinstance(metadata.get("validation_scores"), dict):
        section("validation_scores", [f"{k}: {_plain(v)}" for k, v in metadata["validation_scores"].items()])
    if isinstance(metadata.get("leaderboard"), list):
        section("leaderboard", leaderboard_table(metadata["leaderboard"], lang).splitlines() if metadata["leaderboard"] else [])
    if isinstance(metadata.get("ensemble"), list):
        section("ensemble", [_ensemble_member(m) for m in metadata["ensemble"]])
    if isinstance(metadata.get("feature_importance"), list):
        section("feature_importance", [
            f"{row.get('feature')}: {_plain(row.get('importance'))}"
            for row in metadata["feature_importance"][:LEADERBOARD_ROWS] if isinstance(row, dict)
        ])
    if isinstance(metadata.get("guardrails"), list):
        section("guardrails", [_guardrail_text(g, lang) for g in metadata["guardrails"] if isinstance(g, dict)])
    for key, value in metadata.items():
        if key not in shown:
            lines.append(f"{message('cli_label', lang, label=key)} {_plain(value)}")
    return "\n".join(lines)


def _column(spec) -> str:
    if isinstance(spec, dict) and "kind" in spec:
        return f"{spec['kind']} ({spec['dtype']})" if spec.get("dtype") else str(spec["kind"])
    return _plain(spec)


def _ensemble_member(member) -> str:
    if not isinstance(member, dict):
        return _plain(member)
    weight = member.get("weight")
    weight = f"{weight:.2f}" if isinstance(weight, (int, float)) else _plain(weight)
    return f"{member.get('model')} ({member.get('family')}): {weight}"


def _plain(value) -> str:
    if isinstance(value, (list, tuple)) and not any(isinstance(v, (dict, list)) for v in value):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "-" if value is None else str(value)


def _guardrail_text(guard: dict, lang: str | None) -> str:
    """Rendered again in `lang`: the engine rendered it in the default language."""
    params = {"column": guard.get("column"), **(guard.get("params") or {})}
    text = message(guard.get("code", ""), lang, **params)
    if text == guard.get("code", ""):  # a code the catalogue does not know
        text = guard.get("message") or text
    return text


def _print_guardrails(guardrails, lang: str) -> None:
    if guardrails:
        print(message("cli_warnings", lang))
        for guard in guardrails:
            print(f"  - {_guardrail_text(guard, lang)}")


def _note_first_sheet(df: pd.DataFrame, path, lang: str) -> None:
    sheets = df.attrs.get("source", {}).get("sheets") or []
    if len(sheets) > 1:
        print(message("cli_first_sheet", lang, path=path, count=len(sheets), sheet=sheets[0]))


def _require_file(path) -> None:
    path = Path(path)
    if not path.exists():
        raise DataError("file_not_found", path=str(path))
    if not path.is_file():
        raise DataError("file_not_a_file", path=str(path))


def _require_folder(out: Path) -> None:
    """Checked before the work, so that a typo does not cost a whole training."""
    folder = out.parent
    if not folder.is_dir():
        raise DataError("file_out_folder_missing", path=str(out), folder=str(folder))


def _fail(text: str, status: int) -> int:
    sys.stdout.flush()
    print(f"automl: error: {' '.join(text.split())}", file=sys.stderr)
    return status


def _silence_stdout() -> None:
    """Python flushes stdout at exit; into a closed pipe that fails once more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


if __name__ == "__main__":
    sys.exit(main())
