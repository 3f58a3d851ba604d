#!/usr/bin/env bash
# Prepare what a bare GPU machine lacks, in one ignored folder that travels with the tree.
#
# Run on a machine with access to the package registries, from the repository root:
#
#     bash benchmarks/gpu/prepare.sh [--dest DIR] [--python-version X.Y]
#
# DIR (default .gpu-carry, ignored by git) receives:
#   wheels/        optuna and the project's other dependencies that the GPU machine's image
#                  lacks (or holds in another version), for CPython X.Y on x86-64 Linux;
#                  never torch/torchvision, which the GPU machine has;
#   data/          the four Fashion-MNIST idx .gz files;
#   MANIFEST.txt   what was carried and its size.
# The benchmark's checkpoints are committed (benchmarks/checkpoints/) and travel with the
# tree. benchmarks/results/ (hundreds of MiB of raw trials) does not fit the 64 MiB that
# travels: for the device call take it out of the index and ignore it, and put both back
# after (the files stay where they are):
#     git rm -r -q --cached benchmarks/results && echo /benchmarks/results/ >> .git/info/exclude
#     ... the device run ...
#     git reset -q && sed -i '\#^/benchmarks/results/$#d' .git/info/exclude
# The GPU machine's Python is 3.12 (default); pass --python-version 3.11 to build a carry
# for this machine's own `run.sh --cpu-dry-run`. Exits non-zero when the folder plus the
# working tree (as the index now lists it) exceed the 64 MiB that travels with a device run.
set -euo pipefail

DEST=.gpu-carry
PYVER=3.12
DATA_SRC=${OPTUNA_BOCR_DATA:-/usr/share/datasets/fashion-mnist}
LIMIT_MIB=64

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dest) DEST=$2; shift 2 ;;
        --python-version) PYVER=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "prepare.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
    esac
done
[[ -f setup.cfg && -d optuna_bocr ]] || {
    echo "prepare.sh: run it from the repository root (no setup.cfg/optuna_bocr here)" >&2
    exit 2
}
[[ $PYVER =~ ^3\.[0-9]+$ ]] || {
    echo "prepare.sh: --python-version wants X.Y (e.g. 3.12), got '$PYVER'" >&2
    exit 2
}
PYTHON=${PYTHON:-python3}

# Pinned to the versions the project is tested with. The GPU image already holds numpy,
# scipy, tqdm, PyYAML, packaging, typing-extensions, MarkupSafe, jaxtyping, scikit-learn,
# matplotlib and pytest; gpytorch and linear_operator are there too but are carried
# anyway (small) so that the versions match.
PACKAGES=(
    optuna==5.1.0
    alembic==1.20.1
    SQLAlchemy==2.1.9
    colorlog==6.12.0
    Mako==1.4.3
    optuna-dashboard==0.21.0
    bottle==0.13.4
    torch-pruning==1.6.1
    gpytorch==1.15.2
    linear_operator==0.6.1
    cmaes==0.13.1
    greenlet==3.5.6
)
# Extra packages can be added with GPU_CARRY_EXTRA="name==ver name2==ver2".
read -r -a EXTRA <<< "${GPU_CARRY_EXTRA:-}"

mkdir -p "$DEST/wheels" "$DEST/data"
rm -f "$DEST"/wheels/*.whl
PLATFORMS=()
for n in 17 24 27 28 31 34 35; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
echo "== wheels for CPython $PYVER (x86-64 Linux) -> $DEST/wheels"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST/wheels" "${PACKAGES[@]}" "${EXTRA[@]}"
ls -1 "$DEST/wheels"

echo "== Fashion-MNIST from $DATA_SRC -> $DEST/data"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
    t10k-labels-idx1-ubyte; do
    [[ -f "$DATA_SRC/$f.gz" ]] || {
        echo "prepare.sh: $DATA_SRC/$f.gz missing; install dataset-fashion-mnist or set" \
            "OPTUNA_BOCR_DATA to a folder with the idx .gz files" >&2
        exit 1
    }
    cp -u "$DATA_SRC/$f.gz" "$DEST/data/"
done

# Size check: the carry plus what travels anyway (tracked and untracked-not-ignored files).
carry_kib=$(du -sk "$DEST" | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
tree_kib=$((tree_bytes / 1024))
total_kib=$((carry_kib + tree_kib))
{
    echo "carry folder: $DEST (python $PYVER), $((carry_kib / 1024)) MiB"
    echo "working tree that travels besides it: $((tree_kib / 1024)) MiB"
    echo "total: $((total_kib / 1024)) MiB of the $LIMIT_MIB MiB limit"
    echo "wheels:"; (cd "$DEST/wheels" && du -k -- *.whl | sort -rn | sed 's/^/  /')
    echo "data:"; (cd "$DEST/data" && du -k -- * | sed 's/^/  /')
} | tee "$DEST/MANIFEST.txt"
if ((total_kib > LIMIT_MIB * 1024)); then
    echo "prepare.sh: OVER THE LIMIT: $((total_kib / 1024)) MiB > $LIMIT_MIB MiB; carry" \
        "less: leave benchmarks/results/ out of the index (see --help)" >&2
    exit 1
fi
echo "OK: within the $LIMIT_MIB MiB limit. On the GPU machine: run with carry [\"$DEST\"]" \
    "the command: bash benchmarks/gpu/run.sh (checks) or benchmarks/gpu/grid.sh (the grid)"
