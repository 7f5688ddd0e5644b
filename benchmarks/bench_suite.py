"""Which ``protjepa bench`` suite the pytest-benchmark files run, from the environment:
``PROTJEPA_BENCH_SUITE`` (cpu, gpu or quick; default cpu), ``PROTJEPA_BENCH_SIZE`` (default:
the suite's first size), ``PROTJEPA_BENCH_THREADS`` (torch CPU threads, default 2)."""
from __future__ import annotations

import os
from dataclasses import replace

import pytest

from protjepa.bench.config import GPU_SIZES, SUITES, BenchConfig

THREADS = int(os.environ.get("PROTJEPA_BENCH_THREADS", "2"))


def suite_config() -> BenchConfig:
    name = os.environ.get("PROTJEPA_BENCH_SUITE", "cpu")
    if name not in SUITES:
        raise pytest.UsageError(f"PROTJEPA_BENCH_SUITE={name!r}: expected {'|'.join(SUITES)}")
    config = replace(BenchConfig(), **SUITES[name])
    default_size = GPU_SIZES[0] if name == "gpu" else config.size
    return replace(config, size=os.environ.get("PROTJEPA_BENCH_SIZE", default_size))
