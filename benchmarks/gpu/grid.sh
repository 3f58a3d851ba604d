#!/usr/bin/env bash
# The pruning benchmark's grid on a bare GPU machine, in one command and a time budget:
#
#     bash benchmarks/gpu/grid.sh [--carry DIR] [--budget SECONDS] [--resume JOURNAL[.gz]]
#         [--checkpoint e6|e15-autocast] [--seeds N|A-B|A,B,...] [--cpu-dry-run] WAVE...
#
# WAVE is TASKS/METHODS, e.g. resnet56,mobilenet_v1/bocr-trust,cmaes,gp. Waves run one after
# the other; within a wave every (task, method, seed) study runs at once, one process and one
# CPU thread each, all sharing the GPU. Every study: seeds 0-4 (--seeds: N for 0..N-1, A-B,
# or a list A,B,...; A, is seed A alone), 200 trials, 5000 validation and 3000 calibration
# images, the product's budget rule (`--budget-rule scale`), the committed checkpoints
# (`--train-epochs 6`), float32 on CUDA: the targets' scale. All raw trials go to one
# JournalStorage file, pruning-val5000-cuda/studies.log, packed into
# RESULTS/val5000-cuda.tar.gz at the end, also when the budget cuts a wave short (the journal
# resumes: run the same command again, here or on the GPU). RESULTS is $OUT when set, else
# ./gpu-results; it also receives setup.log and one log per wave.
#
# Needs the folder made by benchmarks/gpu/prepare.sh (default .gpu-carry: wheels and the
# Fashion-MNIST files), carried with the device run. benchmarks/results/ is too large to
# travel; leave it out of the index for the call (see benchmarks/gpu/prepare.sh).
#
# --cpu-dry-run: the same steps on this machine's CPU at minimal sizes (seed 0 unless --seeds,
# 3 trials, 500 images), with the installed packages instead of the carried wheels. --resume:
# an earlier run's journal (its val5000-cuda.tar.gz unpacked, gzipped to travel) to resume.
# --checkpoint e15-autocast: ResNet-56's 15-epoch checkpoint (92.60% test top-1; the other
# networks have none of that name), its studies in pruning-val5000-e15-cuda/ and
# RESULTS/val5000-e15-cuda.tar.gz, never mixed with the 6-epoch networks' journal.
set -uo pipefail

CARRY=.gpu-carry
BUDGET=500
DRY=0
RESUME=
CHECKPOINT=e6
SEEDS=
WAVES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --carry) CARRY=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        --cpu-dry-run) DRY=1; shift ;;
        --resume) RESUME=$2; shift 2 ;;
        --checkpoint) CHECKPOINT=$2; shift 2 ;;
        --seeds) SEEDS=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "grid.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
        */*) WAVES+=("$1"); shift ;;
        *) echo "grid.sh: a wave is TASKS/METHODS, got '$1'; see --help" >&2; exit 2 ;;
    esac
done
((${#WAVES[@]})) || { echo "grid.sh: name at least one wave (TASKS/METHODS)" >&2; exit 2; }
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "grid.sh: --budget wants whole seconds" >&2; exit 2; }
NSEEDS=0  # how many studies per (task, method): the seeds --seeds names
if [[ $SEEDS =~ ^[0-9]+$ ]]; then NSEEDS=$((10#$SEEDS))
elif [[ $SEEDS =~ ^([0-9]+)-([0-9]+)$ ]]; then
    NSEEDS=$((10#${BASH_REMATCH[2]} - 10#${BASH_REMATCH[1]} + 1))
elif [[ $SEEDS =~ ^[0-9]+(,[0-9]+)*,?$ ]]; then
    IFS=, read -ra listed <<< "$SEEDS"; NSEEDS=${#listed[@]}
    twice=$(for s in "${listed[@]}"; do echo $((10#$s)); done | sort -n | uniq -d | paste -sd,)
    [[ -z $twice ]] || {
        echo "grid.sh: --seeds $SEEDS names seed(s) $twice twice; name each once" >&2; exit 2; }
fi
[[ -z $SEEDS ]] || ((NSEEDS > 0)) || {
    echo "grid.sh: --seeds wants N (seeds 0..N-1), A-B with A <= B, or A,B,...; see --help" >&2
    exit 2; }
[[ -z $RESUME || -f $RESUME ]] || { echo "grid.sh: --resume $RESUME: no such file" >&2; exit 2; }
case $CHECKPOINT in
    e6) TRAIN=(--train-epochs 6); NAME=pruning-val5000-cuda ;;
    e15-autocast) TRAIN=(--train-epochs 15 --train-autocast); NAME=pruning-val5000-e15-cuda ;;
    *) echo "grid.sh: --checkpoint is e6 or e15-autocast, got '$CHECKPOINT'" >&2; exit 2 ;;
esac
if [[ $CHECKPOINT != e6 ]]; then
    for wave in "${WAVES[@]}"; do
        [[ ${wave%%/*} == resnet56 ]] || {
            echo "grid.sh: --checkpoint $CHECKPOINT is ResNet-56's only; wave '$wave' names" \
                "other tasks" >&2; exit 2; }
    done
fi
[[ -f setup.cfg && -d optuna_bocr ]] || {
    echo "grid.sh: run it from the repository root (no setup.cfg/optuna_bocr here)" >&2; exit 2; }
[[ -d $CARRY/data ]] || {
    echo "grid.sh: $CARRY/data missing; run benchmarks/gpu/prepare.sh first and carry its" \
        "folder" >&2; exit 2; }
START=$(date +%s)
RESULTS=${OUT:-./gpu-results}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
CARRY=$(cd "$CARRY" && pwd)
WORK=$(mktemp -d)
STORE=$WORK/$NAME
mkdir -p "$STORE"
if [[ -n $RESUME ]]; then  # an earlier run's journal (plain or .gz): its studies resume
    if [[ $RESUME == *.gz ]]; then gunzip -c "$RESUME" > "$STORE/studies.log"
    else cp "$RESUME" "$STORE/studies.log"; fi
fi
export PYTHONUNBUFFERED=1
SETUP=$RESULTS/setup.log
left() { echo $((BUDGET - ($(date +%s) - START))); }

if ((DRY)); then
    DEVICE=cpu
    [[ -n $SEEDS ]] || { SEEDS=1; NSEEDS=1; }
    SIZES=(--seeds "$SEEDS" --n-trials 3 --val-size 500 --n-calibration-images 500)
else
    DEVICE=cuda
    [[ -n $SEEDS ]] || { SEEDS=5; NSEEDS=5; }
    SIZES=(--seeds "$SEEDS" --n-trials 200 --val-size 5000 --n-calibration-images 3000)
    [[ -d $CARRY/wheels ]] || { echo "grid.sh: $CARRY/wheels missing" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$CARRY"/wheels/*.whl >> "$SETUP" 2>&1 \
        || { echo "grid.sh: installing the carried wheels failed; see $SETUP" >&2; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
    echo "date: $(date -u)"; python3 -V; nproc; free -g 2>/dev/null | head -2
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    python3 -c 'import torch, optuna, optuna_bocr, torch_pruning, gpytorch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "optuna", optuna.__version__)'
} >> "$SETUP" 2>&1

rc=0
for i in "${!WAVES[@]}"; do
    wave=${WAVES[$i]}
    tasks=${wave%%/*}
    methods=${wave#*/}
    n_tasks=$(tr ',' '\n' <<< "$tasks" | grep -c .)
    n_methods=$(tr ',' '\n' <<< "$methods" | grep -c .)
    jobs=$((n_tasks * n_methods * NSEEDS))
    limit=$(($(left) - 30))
    log=$RESULTS/wave$((i + 1)).log
    if ((limit < 30)); then
        echo "wave $((i + 1)) ($wave): skipped, budget spent" >> "$SETUP"
        continue
    fi
    echo "wave $((i + 1)) ($wave): $jobs studies at once, timeout ${limit}s" >> "$SETUP"
    t0=$(date +%s)
    # SIGINT: Optuna marks the running trials failed and the journal stays whole; a study cut
    # short resumes with the same command.
    OMP_NUM_THREADS=1 timeout -s INT -k 30 "$limit" python3 -m benchmarks.pruning \
        --tasks "$tasks" --methods "$methods" "${SIZES[@]}" --budget-rule scale \
        "${TRAIN[@]}" --device "$DEVICE" --data-root "$CARRY/data" \
        --storage "$STORE/studies.log" --out "$WORK/report" --jobs "$jobs" --threads 1 \
        --skip-final --log-every 20 > "$log" 2>&1
    wrc=$?
    echo "wave $((i + 1)): rc=$wrc in $(($(date +%s) - t0))s" >> "$SETUP"
    ((wrc != 0)) && rc=$wrc
done
tar -C "$WORK" --exclude='*.lock' -czf "$RESULTS/${NAME#pruning-}.tar.gz" "$NAME"
echo "total $(($(date +%s) - START))s of the ${BUDGET}s budget" >> "$SETUP"
cat "$SETUP"
rm -rf "$WORK"
exit $rc
