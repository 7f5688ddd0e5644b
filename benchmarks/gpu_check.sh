#!/usr/bin/env bash
# The GPU checks of issue 27 as one prepared call of the device tool (a lent H200: Python 3.12,
# torch 2.11 + CUDA 13, no pydantic, Composer or torchtune; nothing can be fetched there).
#
#   here:  bash benchmarks/gpu_check.sh fetch
#          .whl/: our wheel, built from a copy of the checkout, and CPython 3.12 wheels of what the
#          device lacks (benchmarks/gpu_wheels.txt); .gpu_data/: the bench's corpus, the Swiss-Prot
#          validation file under the training file's name too (the full corpus would not travel:
#          64 MiB a call). Both git-excluded.
#   there: run(command="bash benchmarks/gpu_check.sh run", carry=[".whl", ".gpu_data"], timeout_s=590)
#          $OUT/tests.log, $OUT/train_static_{false,true}.log, $OUT/bench.log and the bench's JSON files
#          come back.
# GPU_PYTHON (3.12) and PYTHON (python3) say which Python the wheels are for and which runs them
# (a dry run on a CPU machine: GPU_PYTHON=3.11 for fetch, PYTHON=a venv holding torch for run).
set -euo pipefail
cd "$(dirname "$0")/.."

fetch() {
    for path in /.whl/ /.gpu_data/; do
        grep -qxsF "$path" .git/info/exclude || echo "$path" >>.git/info/exclude
    done
    rm -rf .whl .gpu_data && mkdir -p .whl .gpu_data/pretrain_swissprot50
    local copy
    copy=$(mktemp -d)  # setuptools writes build/ and *.egg-info beside the sources: not in the checkout
    git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$copy"
    .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl "$copy"
    rm -rf "$copy"
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
        --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
    local valid=${PROTJEPA_DATA:-../shared/data}/pretrain_swissprot50/swissprot2014_50_valid.fasta.gz
    cp "$valid" .gpu_data/pretrain_swissprot50/swissprot2014_50_train.fasta.gz
    cp "$valid" .gpu_data/pretrain_swissprot50/swissprot2014_50_valid.fasta.gz
    du -sh .whl .gpu_data
}

run() {
    local out=${OUT:-/tmp/gpu_check} python=${PYTHON:-python3}
    mkdir -p "$out"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    # The installed package, not the checkout's sources (PYTHONSAFEPATH); the corpus that travelled.
    export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 PROTJEPA_DATA=$PWD/.gpu_data
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
      "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$out/gpu.txt"
    # Each step is time-boxed, most wanted first, so one call brings back what it reached.
    timeout 90 "$python" -m pytest -q -p no:cacheprovider tests/test_sizing.py tests/test_attention.py \
        tests/test_esm2.py tests/test_precision.py tests/test_static_shapes.py 2>&1 | tee "$out/tests.log" || true
    # The run's first lines: the attention kernel, torch.compile on (auto), bf16; 40 s of esm2_150m,
    # then the same with static shapes (CUDA graphs): tokens/s of each in its summary.
    for shapes in false true; do
        timeout 100 "$python" -m protjepa train mlm_jepa_masked --budget 40s --run-dir "/tmp/run150_$shapes" \
            --set encoder.preset=esm2_150m --set data.crop=512 --set data.batch_tokens=65536 \
            --set data.static_shapes=$shapes 2>&1 | tee "$out/train_static_$shapes.log" || true
    done
    timeout 180 "$python" -m protjepa bench --suite gpu --size esm2_150m --fill-memory --compile \
        --json "$out/bench_150m_fill.json" 2>&1 | tee "$out/bench.log" || true
    timeout 90 "$python" -m protjepa bench --suite gpu --size esm2_650m --embed-sequences 0 \
        --json "$out/bench_650m.json" 2>&1 | tee -a "$out/bench.log" || true
}

case "${1:-}" in
    fetch) fetch ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_check.sh fetch|run" >&2; exit 2 ;;
esac
