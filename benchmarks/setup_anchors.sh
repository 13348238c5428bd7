#!/usr/bin/env bash
# Creates the two anchor venvs the engine benchmark compares against.
# They live apart from the project venv so that the anchors' pins (FLAML's
# xgboost<3, AutoGluon's pandas<2.4) never touch the engine's dependencies.
# Idempotent: a venv that exists and imports what it needs is left alone.
#
#   bash benchmarks/setup_anchors.sh            # both
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
[ ${#targets[@]} -gt 0 ] || targets=(flaml autogluon)
for t in "${targets[@]}"; do
    case "$t" in
        flaml) setup_flaml ;;
        autogluon) setup_autogluon ;;
        *) log "unknown anchor: $t (expected flaml or autogluon)"; exit 2 ;;
    esac
done
