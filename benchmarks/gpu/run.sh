#!/usr/bin/env bash
# The whole GPU check in one command, on a bare GPU machine, from the repository root:
#
#     bash benchmarks/gpu/run.sh [RESULTS_DIR] [--carry DIR] [--budget SECONDS] [--cpu-dry-run]
#
# Needs the folder made by benchmarks/gpu/prepare.sh (default .gpu-carry). Installs its wheels
# offline (pip --no-index --find-links), the project with --no-deps, points OPTUNA_BOCR_DATA at
# the carried data, then runs, each step under its own `timeout` and all within --budget
# seconds (default 540): the GPU-marked tests, benchmarks.trial_speed on CUDA, and a short
# side-by-side pruning run (BOCR vs Optuna's GPSampler) on CUDA. The full grid:
# benchmarks/gpu/grid.sh. A failing step is recorded
# and the next one runs. RESULTS_DIR (default $OUT if set, else ./gpu-results) receives at
# most 8 files: summary.txt (one line per step: name, exit status, seconds), setup.log,
# pytest.log, trial_speed.log, pruning.log, pruning_results.md and pruning.tar.gz (the
# pruning run's storage, report and plot).
#
# --cpu-dry-run: exercise everything up to CUDA on a machine without a GPU: install into a
# throwaway venv (the current interpreter's packages minus the carried ones stand in for the
# GPU image), run the steps on the CPU with minimal sizes. Build its carry for this
# machine's Python: `bash benchmarks/gpu/prepare.sh --dest /tmp/carry --python-version 3.11`.
set -uo pipefail

CARRY=.gpu-carry
BUDGET=540
DRY=0
RESULTS=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --carry) CARRY=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        --cpu-dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
        *) RESULTS=$1; shift ;;
    esac
done
RESULTS=${RESULTS:-${OUT:-./gpu-results}}
[[ -f setup.cfg && -d optuna_bocr ]] || {
    echo "run.sh: run it from the repository root (no setup.cfg/optuna_bocr here)" >&2; exit 2; }
[[ -d $CARRY/wheels && -d $CARRY/data ]] || {
    echo "run.sh: $CARRY/wheels or $CARRY/data missing; run benchmarks/gpu/prepare.sh first" \
        "and carry its folder" >&2; exit 2; }
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "run.sh: --budget wants whole seconds" >&2; exit 2; }
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
CARRY=$(cd "$CARRY" && pwd)
SCRATCH=$(mktemp -d)
START=$(date +%s)
LAST_RC=0
SUMMARY=$RESULTS/summary.txt
export PYTHONUNBUFFERED=1
printf '%-22s %4s %6s  %s\n' step rc secs note > "$SUMMARY"

# step NAME LOGFILE TIMEOUT CMD...: run CMD under min(TIMEOUT, time left) and record it.
step() {
    local name=$1 log=$2 limit=$3; shift 3
    local left=$((BUDGET - ($(date +%s) - START) - 10))
    ((limit > left)) && limit=$left
    if ((limit < 15)); then
        printf '%-22s %4s %6s  %s\n' "$name" - 0 "skipped: budget spent" >> "$SUMMARY"
        LAST_RC=0
        return 0
    fi
    echo "== $name (timeout ${limit}s): $*" | tee -a "$log"
    local t0=$SECONDS rc note=
    timeout -k 10 "$limit" "$@" >> "$log" 2>&1
    rc=$?
    LAST_RC=$rc
    ((rc == 124 || rc == 137)) && note="timed out after ${limit}s"
    printf '%-22s %4s %6s  %s\n' "$name" "$rc" $((SECONDS - t0)) "$note" >> "$SUMMARY"
    echo "   -> rc=$rc in $((SECONDS - t0))s $note" | tee -a "$log"
    return 0
}
skip() { printf '%-22s %4s %6s  %s\n' "$1" - 0 "skipped: $2" >> "$SUMMARY"; }

# -- Setup: interpreter, offline install, environment -------------------------------------
SETUP=$RESULTS/setup.log
PYTHON=${PYTHON:-python3}
if ((DRY)); then
    # Stand-in for the GPU image: a fresh venv that sees this interpreter's packages except
    # those the carry brings (and the project itself).
    BASE_SITE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$PYTHON" -m venv --without-pip "$SCRATCH/venv" || exit 1
    "$SCRATCH/venv/bin/python" -c 'import sys' || exit 1
    mkdir -p "$SCRATCH/base"
    for entry in "$BASE_SITE"/*; do
        n=$(basename "$entry" | tr 'A-Z-' 'a-z_')
        case "$n" in
            optuna*|alembic*|sqlalchemy*|colorlog*|mako*|bottle*|torch_pruning*|gpytorch*| \
            linear_operator*|cmaes*|__editable__*optuna_bocr*|_optuna_bocr*|*.pth) continue ;;
        esac
        ln -s "$entry" "$SCRATCH/base/"
    done
    SITE=$("$SCRATCH/venv/bin/python" -c \
        'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$SCRATCH/base" > "$SITE/zz_gpu_image_standin.pth"
    PYTHON=$SCRATCH/venv/bin/python
    DEVICE=cpu
    echo "CPU DRY RUN: throwaway venv $SCRATCH/venv; CUDA-only work runs on the CPU" \
        "with minimal sizes" | tee -a "$SETUP"
else
    DEVICE=cuda
fi
{
    echo "date: $(date -u)"; echo "python: $PYTHON ($("$PYTHON" -V 2>&1))"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
} >> "$SETUP"
step install "$SETUP" 120 "$PYTHON" -m pip install --no-index --no-cache-dir --no-compile \
    --find-links "$CARRY/wheels" "$CARRY"/wheels/*.whl
if ((LAST_RC != 0)); then  # a dependency the image lacks: install the wheels as they are
    step install_nodeps "$SETUP" 60 "$PYTHON" -m pip install --no-index --no-cache-dir \
        --no-compile --no-deps "$CARRY"/wheels/*.whl
fi
step install_project "$SETUP" 60 "$PYTHON" -m pip install --no-index --no-cache-dir \
    --no-deps --no-build-isolation -e .
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the repository, should the editable fail
export OPTUNA_BOCR_DATA=$CARRY/data
"$PYTHON" - >> "$SETUP" 2>&1 <<'EOF'
import importlib
for name in ("torch", "torchvision", "numpy", "scipy", "optuna", "gpytorch", "torch_pruning",
             "optuna_dashboard", "optuna_bocr"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')} {getattr(m, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name} MISSING: {exc!r}")
import torch
print("cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
CUDA_OK=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null)
if ((!DRY)) && [[ $CUDA_OK != 1 ]]; then
    echo "run.sh: torch sees no CUDA device here; use --cpu-dry-run on a CPU machine" \
        | tee -a "$SETUP" >&2
    skip cuda "torch sees no CUDA device"
fi

# -- 1. GPU-marked tests -----------------------------------------------------------------
step pytest_gpu "$RESULTS/pytest.log" 150 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider

# -- 2. Time per trial ---------------------------------------------------------------------
LOG=$RESULTS/trial_speed.log
if ((DRY)); then
    step trial_speed_cpu "$LOG" 120 env OMP_NUM_THREADS=1 "$PYTHON" -m benchmarks.trial_speed \
        --devices cpu --models resnet20 --repeats 1
else
    step trial_speed_cuda "$LOG" 120 "$PYTHON" -m benchmarks.trial_speed --devices cuda \
        --models resnet20 resnet56 mobilenet_v1 --repeats 5 --evaluation pruned masked
    step trial_speed_autocast "$LOG" 60 "$PYTHON" -m benchmarks.trial_speed --devices cuda \
        --models resnet20 resnet56 mobilenet_v1 --repeats 5 --autocast
fi

# -- 3. Side-by-side pruning run (BOCR vs GPSampler) ---------------------------------------
LOG=$RESULTS/pruning.log
PRUNE=$SCRATCH/pruning
mkdir -p "$PRUNE"
# The committed checkpoint (benchmarks/checkpoints/, --train-epochs 6): no training.
if ((DRY)); then
    SIZES=(--seeds 1 --n-trials 3 --val-size 500 --n-calibration-images 500 --test-size 1000
        --finetune-max-images 1000 --jobs 1 --threads 1)
else
    SIZES=(--seeds 2 --n-trials 40 --val-size 5000 --n-calibration-images 3000
        --test-size 10000 --finetune-max-images 10000 --jobs 4 --threads 4)
fi
ARGS=(--tasks resnet20 --methods bocr-trust,gp --device "$DEVICE" --train-epochs 6
    --storage "sqlite:///$PRUNE/studies.db" --out "$PRUNE" --log-every 10 "${SIZES[@]}")
step pruning "$LOG" 270 "$PYTHON" -m benchmarks.pruning "${ARGS[@]}"
if [[ ! -f $PRUNE/results.md && -f $PRUNE/studies.db ]]; then
    # The run was cut short: rebuild the report from what the storage holds.
    step pruning_report "$LOG" 60 "$PYTHON" -m benchmarks.pruning "${ARGS[@]}" --report-only
fi
[[ -f $PRUNE/results.md ]] && cp "$PRUNE/results.md" "$RESULTS/pruning_results.md"
tar -C "$SCRATCH" -czf "$RESULTS/pruning.tar.gz" pruning 2>> "$SETUP"

echo "total $(($(date +%s) - START))s of the ${BUDGET}s budget" >> "$SUMMARY"
cat "$SUMMARY"
rm -rf "$SCRATCH"
