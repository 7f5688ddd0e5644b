#!/usr/bin/env bash
# The GPU checks of issue 27 as prepared calls of the device tool (a lent H200: Python 3.12,
# torch 2.11 + CUDA 13, no pydantic, Composer or torchtune; nothing can be fetched there).
#
#   here:  bash benchmarks/gpu_check.sh fetch
#          .whl/: our wheel, built from a copy of the checkout, and CPython 3.12 wheels of what the
#          device lacks (benchmarks/gpu_wheels.txt); .gpu_data/: the bench's corpus, the Swiss-Prot
#          validation file under the training file's name too (the full corpus would not travel:
#          64 MiB a call), and the query sequences the ESM-2 parity tests read. Both git-excluded.
#   there: run(command="bash benchmarks/gpu_check.sh run", carry=[".whl", ".gpu_data"], timeout_s=590)
#          then, on the machine still warm, with the device time left:
#          run(command="bash benchmarks/gpu_check.sh fill", carry=[".whl", ".gpu_data"], timeout_s=420)
#          Each step is time-boxed, most wanted first; its log and JSON come back from $OUT whatever
#          the steps after it do (the bench prints each repetition's tokens/s as it goes).
# GPU_PYTHON (3.12) and PYTHON (python3) say which Python the wheels are for and which runs them
# (a dry run on a CPU machine: GPU_PYTHON=3.11 for fetch, PYTHON=a venv holding torch for run).
set -euo pipefail
cd "$(dirname "$0")/.."

fetch() {
    for path in /.whl/ /.gpu_data/; do
        grep -qxsF "$path" .git/info/exclude || echo "$path" >>.git/info/exclude
    done
    rm -rf .whl .gpu_data && mkdir -p .whl .gpu_data/pretrain_swissprot50 .gpu_data/uniprot_random20k
    local copy
    copy=$(mktemp -d)  # setuptools writes build/ and *.egg-info beside the sources: not in the checkout
    git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$copy"
    .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl "$copy"
    rm -rf "$copy"
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
        --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
    local data=${PROTJEPA_DATA:-../shared/data}
    local valid=$data/pretrain_swissprot50/swissprot2014_50_valid.fasta.gz
    cp "$valid" .gpu_data/pretrain_swissprot50/swissprot2014_50_train.fasta.gz
    cp "$valid" .gpu_data/pretrain_swissprot50/swissprot2014_50_valid.fasta.gz
    cp "$data/uniprot_random20k/mmseqs2_example_QUERY.fasta.gz" .gpu_data/uniprot_random20k/
    du -sh .whl .gpu_data
}

install() {
    out=${OUT:-/tmp/gpu_check} python=${PYTHON:-python3}
    mkdir -p "$out"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    # The installed package, not the checkout's sources (PYTHONSAFEPATH); the corpus that travelled.
    export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 PROTJEPA_DATA=$PWD/.gpu_data
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
      "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$out/gpu.txt"
}

run() {
    install
    timeout 60 "$python" -m pytest -q -p no:cacheprovider tests/test_sizing.py tests/test_attention.py \
        tests/test_esm2.py tests/test_precision.py tests/test_static_shapes.py 2>&1 | tee "$out/tests.log" || true
    # The issue's setting (esm2_150m, crop 512, 32 rows, bf16), eager: the MFU targets, ours vs
    # transformers', the attention and no-host-sync checks.
    timeout 120 "$python" -m protjepa bench --suite gpu --size esm2_150m --repeats 3 --steps 3 \
        --embed-sequences 0 --json "$out/bench_150m.json" 2>&1 | tee "$out/bench_150m.log" || true
    # Training through Composer with CUDA graphs: the run's first lines (attention kernel, compile,
    # bf16), 20 s of esm2_150m on static shapes at 65,536 tokens a step, tokens/s in its summary.
    timeout 130 "$python" -m protjepa train mlm_jepa_masked --budget 20s --run-dir /tmp/run150_static \
        --set encoder.preset=esm2_150m --set data.crop=512 --set data.batch_tokens=65536 \
        --set data.static_shapes=true 2>&1 | tee "$out/train_static.log" || true
    # The same suite with each step compiled (+compile) and on static shapes as training compiles
    # them (+static: CUDA graphs): four compilations in the warm-up, each row's time printed.
    timeout 240 "$python" -m protjepa bench --suite gpu --size esm2_150m --compile --repeats 3 --steps 3 \
        --embed-sequences 0 --json "$out/bench_150m_compile.json" 2>&1 | tee "$out/bench_150m_compile.log" || true
}

fill() {
    install
    # data.batch_tokens: fill through Composer (static shapes, CUDA graphs): the count in the first
    # lines, the allocator's peak in the summary ("GPU memory: at most ..."), tokens/s at that size.
    timeout 130 "$python" -m protjepa train mlm_jepa_masked --budget 20s --run-dir /tmp/run150_fill \
        --set encoder.preset=esm2_150m --set data.crop=512 --set data.batch_tokens=fill \
        --set data.static_shapes=true 2>&1 | tee "$out/train_fill.log" || true
    # The bench's steps that fill the GPU (eager; the same count): esm2_150m, then esm2_650m, each
    # size's JSON written as it ends.
    timeout 280 "$python" -m protjepa bench --suite gpu --size esm2_150m --size esm2_650m --fill-memory \
        --repeats 2 --steps 2 --warmup 2 --embed-sequences 0 --json "$out/bench_fill.json" 2>&1 \
        | tee "$out/bench_fill.log" || true
}

case "${1:-}" in
    fetch) fetch ;;
    run) run ;;
    fill) fill ;;
    *) echo "usage: bash benchmarks/gpu_check.sh fetch|run|fill" >&2; exit 2 ;;
esac
