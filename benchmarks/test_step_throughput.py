"""One pytest-benchmark per row of the suite: the training step of every recipe, its target
pass alone, transformers' ESM, padded against packed rows, and the encoder per attention
backend. ``extra_info`` carries non-padding tokens per step and tokens/s at the median time.

Rows here run one after another, so their absolute times drift with the machine's load;
the side-by-side ratios are in ``test_targets.py`` (and ``protjepa bench``).
"""
from __future__ import annotations

from itertools import count

import pytest

from bench_suite import suite_config
from protjepa.bench.batches import Prepared
from protjepa.bench.config import layout_suffix
from protjepa.bench.rows import ADJACENT
from protjepa.bench.timing import synchronize

CONFIG = suite_config()


def row_names() -> list[str]:
    suffix = layout_suffix(CONFIG)  # "": the padded-vs-packed rows are mlm and mlm_packed
    names = list(ADJACENT)
    if suffix:
        names += [f"peer_hf_mlm{suffix}", f"mlm_padded{suffix}", f"mlm_packed{suffix}"]
    names += [f"encoder_{kind}[{backend}]{tag}" for tag in ("", "+bf16") for backend in CONFIG.backends
              for kind in ("fwd", "fwd_bwd")]  # rows that do not run here (xformers off CUDA, ...) are skipped
    return names


@pytest.mark.parametrize("name", row_names())
def test_row(benchmark, suite, name):
    if name not in suite.rows:
        pytest.skip(f"{name}: not in this suite on this machine")
    row = suite.rows[name]
    pool = suite.batches[row.layout]
    turn = count()

    def next_batch():
        return (pool[next(turn) % len(pool)],), {}

    def step(prepared: Prepared) -> None:
        row.run(prepared)
        synchronize(suite.device)

    benchmark.group = f"{suite.config.size} {suite.config.device} {suite.config.dtype}"
    benchmark.pedantic(step, setup=next_batch, rounds=max(3, suite.config.repeats * suite.config.steps),
                       warmup_rounds=suite.config.warmup)
    tokens = sum(p.tokens for p in pool) / len(pool)
    benchmark.extra_info.update(what=row.what, layout=row.layout, tokens_per_step=tokens)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["tokens_per_s"] = tokens / benchmark.stats.stats.median
