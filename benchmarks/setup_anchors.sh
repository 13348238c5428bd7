#!/usr/bin/env bash
# Creates the venvs the engine benchmark runs its systems in: the engine's own
# and the two anchors it compares against.
# They live apart from the project venv so that the anchors' pins (FLAML's
# xgboost<3, AutoGluon's pandas<2.4) never touch the engine's dependencies.
# Idempotent: a venv that exists and imports what it needs is left alone.
#
#   bash benchmarks/setup_anchors.sh            # all three
#   bash benchmarks/setup_anchors.sh flaml      # one
#   PYTHON=python3.11 bash benchmarks/setup_anchors.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3.11}"
FLAML_VERSION="2.7.0"
AUTOGLUON_VERSION="1.6.3"

log() { echo "[setup_anchors] $*" >&2; }

# A venv counts as ready only if its own python imports the packages the
# runner needs; a half-finished install is completed rather than trusted.
ready() {
    local venv="$1" imports="$2"
    [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$imports" 2>/dev/null
}

make_venv() {
    local venv="$1"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
}

# torch is never wanted in an anchor venv: it is 1+ GB of download and AutoGluon
# would add neural models that the engine does not have.
assert_absent() {
    local venv="$1"; shift
    for pkg in "$@"; do
        if "$venv/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1; then
            log "ERROR: $pkg is installed in $venv"; exit 1
        fi
    done
}

# The engine as `pip install automl-hub` installs it (no extras), like each
# anchor in a venv of its own requirements only: the project's dev venv also
# holds pyarrow (mlflow), which pandas imports in every process (~36 MB).
setup_engine() {
    local venv="$HERE/.venv-engine"
    if ready "$venv" "import automl.engine, xgboost, optuna"; then
        "$venv/bin/python" -m pip install -q --no-deps -e "$HERE/.."  # the engine's code as it is now
        log "engine venv ready: $venv"; return
    fi
    log "creating $venv"
    make_venv "$venv"
    "$venv/bin/python" -m pip install -q -e "$HERE/.."
    assert_absent "$venv" pyarrow
    log "engine venv done: $venv"
}

setup_flaml() {
    local venv="$HERE/.venv-flaml"
    if ready "$venv" "import flaml, lightgbm, xgboost, sklearn" \
        && ! "$venv/bin/python" -c "import catboost" 2>/dev/null; then
        log "flaml venv ready: $venv"; return
    fi
    log "creating $venv"
    make_venv "$venv"
    # These are the requirements of flaml[automl] with xgboost-cpu (same
    # import, same 2.1.x version) instead of xgboost: the xgboost<3 wheel
    # that flaml[automl] pins drags in ~300 MB of nvidia-nccl-cu12.
    # No catboost: when importable, FLAML adds it to its default estimators.
    "$venv/bin/python" -m pip install -q \
        "flaml==$FLAML_VERSION" "lightgbm>=2.3.1" "xgboost-cpu>=2.1,<3" \
        "scipy>=1.4.1" "pandas>=1.1.4" "scikit-learn>=1.0.0"
    assert_absent "$venv" catboost torch xgboost
    log "flaml venv done: $venv"
}

setup_autogluon() {
    local venv="$HERE/.venv-autogluon"
    if ready "$venv" "import autogluon.tabular, lightgbm, catboost, xgboost"; then
        log "autogluon venv ready: $venv"; return
    fi
    log "creating $venv"
    make_venv "$venv"
    # These extras stay torch-free; the fastai/tabm/mitra/tabpfn*/all extras
    # would pull torch.
    "$venv/bin/python" -m pip install -q \
        "autogluon.tabular[lightgbm,catboost,xgboost]==$AUTOGLUON_VERSION"
    assert_absent "$venv" torch
    log "autogluon venv done: $venv"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(engine flaml autogluon)
for t in "${targets[@]}"; do
    case "$t" in
        engine) setup_engine ;;
        flaml) setup_flaml ;;
        autogluon) setup_autogluon ;;
        *) log "unknown venv: $t (expected engine, flaml or autogluon)"; exit 2 ;;
    esac
done
