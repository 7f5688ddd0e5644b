"""Shared set-up of the pytest-benchmark files: the rows of one ``protjepa bench`` suite, built once.

    .venv/bin/python -m pytest benchmarks --benchmark-enable
    PROTJEPA_BENCH_SUITE=gpu PROTJEPA_BENCH_SIZE=esm2_150m .venv/bin/python -m pytest benchmarks --benchmark-enable

``PROTJEPA_BENCH_SUITE`` picks the suite (cpu, gpu or quick; default cpu), ``PROTJEPA_BENCH_SIZE``
the encoder size (default: the suite's first), ``PROTJEPA_BENCH_THREADS`` the torch CPU threads
(default 2).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import pytest
import torch

from protjepa import bench

torch.set_num_threads(int(os.environ.get("PROTJEPA_BENCH_THREADS", "2")))


def suite_config() -> bench.BenchConfig:
    name = os.environ.get("PROTJEPA_BENCH_SUITE", "cpu")
    if name not in bench.SUITES:
        raise pytest.UsageError(f"PROTJEPA_BENCH_SUITE={name!r}: expected {'|'.join(bench.SUITES)}")
    config = replace(bench.BenchConfig(), **bench.SUITES[name])
    default_size = bench.GPU_SIZES[0] if name == "gpu" else config.size
    return replace(config, size=os.environ.get("PROTJEPA_BENCH_SIZE", default_size))


@dataclass
class Suite:
    config: bench.BenchConfig
    device: torch.device
    rows: dict[str, bench.Row]
    batches: dict[str, list[bench.Prepared]]


@pytest.fixture(scope="session")
def suite() -> Suite:
    config = suite_config()
    device = bench.resolve_device(config.device)
    rows, batches = bench.build_rows(replace(config, device=device.type), device)
    return Suite(config, device, {row.name: row for row in rows}, batches)
