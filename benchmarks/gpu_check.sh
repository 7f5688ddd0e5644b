#!/usr/bin/env bash
# The GPU step measurements owed since issue 27 (issue 37, part 1) as prepared calls of the device tool.
#
#   here:  bash benchmarks/gpu_check.sh fetch
#          .whl/ (benchmarks/gpu_common.sh) and .gpu_data/: the bench's corpus (the Swiss-Prot validation
#          file, also under the training file's name: 1.3 MB instead of 30) and the query sequences the
#          ESM-2 parity tests read. Both git-ignored; about 24 MB with the tracked tree's 9.
#   there: run(command="bash benchmarks/gpu_check.sh run", carry=[".whl", ".gpu_data"], timeout_s=450)
#          in a 420 s box (BOX_SECONDS), most wanted first, each step's log and JSON in $OUT whatever the
#          later steps do:
#          1. the GPU suite at the issue's setting (esm2_150m, crop 512, 32 rows, bf16) with --compile:
#             eager, compiled and static-shape (CUDA graphs) steps of MLM and masked MLM+JEPA, their MFU,
#             ours vs transformers' eager step, the profile split of the MLM step; a step that fails to
#             compile is left out with its error in the notes, the rest still measured (270 s);
#          2. esm2_150m trained 20 s through Composer with data.batch_tokens: fill on static shapes
#             (CUDA graphs): fill's count in the first lines, the allocator's peak and tokens/s in the
#             summary; if it fails, the same at 65,536 tokens a step (the time left).
#          The device time left then goes to the base (benchmarks/gpu_base.sh). On a later lend:
#          run(command="bash benchmarks/gpu_check.sh fill", carry=[".whl", ".gpu_data"], timeout_s=380)
#          in a 360 s box: the GPU tests (sizing against CUDA's allocator, attention, ESM-2 parity,
#          precision, static shapes; 60 s), then the suite at the size that fills the GPU, esm2_150m then
#          esm2_650m (280 s).
# Dry run on a CPU: GPU_PYTHON=3.11 for fetch; PYTHON=.venv/bin/python for run, where the bench and the
# training runs stop at once ("this suite needs a GPU", "train.device: cuda, but torch sees no CUDA device").
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_common.sh

fetch() {
    fetch_wheels
    copy_data .gpu_data pretrain_swissprot50/swissprot2014_50_valid.fasta.gz \
        uniprot_random20k/mmseqs2_example_QUERY.fasta.gz
    cp .gpu_data/pretrain_swissprot50/swissprot2014_50_valid.fasta.gz \
        .gpu_data/pretrain_swissprot50/swissprot2014_50_train.fasta.gz
    du -sh .whl .gpu_data
}

run() {
    BOX_SECONDS=${BOX_SECONDS:-420}
    install gpu.txt .gpu_data
    step "bench esm2_150m, eager + compiled + static" 270 "$python" -m protjepa bench --suite gpu --size esm2_150m \
        --compile --repeats 3 --steps 2 --warmup 2 --embed-sequences 0 --json "$out/bench_150m.json" 2>&1 \
        | tee "$out/bench_150m.log" || true
    if ! step "train esm2_150m, batch_tokens fill" 150 "$python" -m protjepa train mlm_jepa_masked --budget 20s \
            --run-dir /tmp/run150_fill --set train.device=cuda --set encoder.preset=esm2_150m --set data.crop=512 \
            --set data.batch_tokens=fill --set data.static_shapes=true 2>&1 | tee "$out/train_fill.log"; then
        step "train esm2_150m, 65,536 tokens" 120 "$python" -m protjepa train mlm_jepa_masked --budget 20s \
            --run-dir /tmp/run150_static --set train.device=cuda --set encoder.preset=esm2_150m --set data.crop=512 \
            --set data.batch_tokens=65536 --set data.static_shapes=true 2>&1 | tee "$out/train_static.log" || true
    fi
}

fill() {
    BOX_SECONDS=${BOX_SECONDS:-360}
    install gpu.txt .gpu_data
    step "GPU tests" 60 "$python" -m pytest -q -p no:cacheprovider tests/test_sizing.py tests/test_attention.py \
        tests/test_esm2.py tests/test_precision.py tests/test_static_shapes.py 2>&1 | tee "$out/tests.log" || true
    # The suite's steps at the size that fills the GPU (eager; one count for every row), each size's
    # JSON written as it ends.
    step "bench esm2_150m + esm2_650m, fill" 280 "$python" -m protjepa bench --suite gpu --size esm2_150m \
        --size esm2_650m --fill-memory --repeats 2 --steps 2 --warmup 2 --embed-sequences 0 \
        --json "$out/bench_fill.json" 2>&1 | tee "$out/bench_fill.log" || true
}

case "${1:-}" in
    fetch) fetch ;;
    run) run ;;
    fill) fill ;;
    *) echo "usage: bash benchmarks/gpu_check.sh fetch|run|fill" >&2; exit 2 ;;
esac
