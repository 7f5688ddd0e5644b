# Sourced by benchmarks/gpu_check.sh and benchmarks/gpu_base.sh: what a lent device machine lacks
# and how it gets it, and the time box every step there runs in.
#
# The machine (docs/benchmarks.md, GPU): Python 3.12, torch 2.11 + CUDA 13, transformers, safetensors;
# no pydantic, Composer or torchtune, and nothing can be fetched there. So, here: `fetch_wheels` builds
# our wheel (from the tracked files: commit what should travel) and downloads CPython 3.12 wheels of
# benchmarks/gpu_wheels.txt into .whl/ (git-ignored, 21 MB); there: `install` puts them in /tmp/site.
# What a call sends is at most 64 MiB: the tracked tree (about 9 MB), .whl/ and the data it carries.
# GPU_PYTHON (3.12) and PYTHON (python3) say which Python the wheels are for and which runs them
# (a dry run on a CPU machine: GPU_PYTHON=3.11 for fetch, PYTHON=.venv/bin/python for run).

fetch_wheels() {
    rm -rf .whl && mkdir -p .whl
    local copy
    copy=$(mktemp -d)  # setuptools writes build/ and *.egg-info beside the sources: not in the checkout
    git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$copy"
    .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl "$copy"
    rm -rf "$copy"
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
        --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
}

# The data root that travels: the folders under it, copied from ../shared/data (or $PROTJEPA_DATA).
copy_data() {  # copy_data DEST FILE... (paths relative to the data root)
    local dest=$1 data=${PROTJEPA_DATA:-../shared/data} file
    shift
    rm -rf "$dest"
    for file in "$@"; do
        mkdir -p "$dest/$(dirname "$file")"
        cp "$data/$file" "$dest/$file"
    done
}

# install OUT_LOG DATA_DIR: the wheels into /tmp/site, the environment every step runs in, and the
# machine's GPU, driver and torch written to OUT_LOG.
install() {
    out=${OUT:-/tmp/gpu_out} python=${PYTHON:-python3}
    mkdir -p "$out"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    # The installed package, not the checkout's sources (PYTHONSAFEPATH); the corpus that travelled.
    export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 PROTJEPA_DATA=$PWD/$2
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
      "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$out/$1"
}

# The time box: BOX_SECONDS for the whole call (set by the caller), counted from the script's start.
left() { echo $(( BOX_SECONDS - SECONDS )); }

# step NAME SECONDS COMMAND...: COMMAND under a timeout of SECONDS, or of what is left of the box if
# less; skipped, with a line saying so, when under 20 s are left. Its status is returned.
step() {
    local name=$1 box=$2 room
    shift 2
    room=$(left)
    (( room < box )) && box=$room
    if (( box < 20 )); then
        echo "== $name: skipped, $room s left of the ${BOX_SECONDS} s box"
        return 1
    fi
    echo "== $name: at most $box s ($(left) s left of the box)"
    timeout "$box" "$@"
}
