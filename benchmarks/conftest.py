"""The rows of one ``protjepa bench`` suite, built once per session (see bench_suite.py).

    .venv/bin/python -m pytest benchmarks --benchmark-enable
    PROTJEPA_BENCH_SUITE=gpu PROTJEPA_BENCH_SIZE=esm2_150m .venv/bin/python -m pytest benchmarks --benchmark-enable
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from bench_suite import THREADS, suite_config
from protjepa import bench

torch.set_num_threads(THREADS)


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
    config = replace(config, device=device.type)
    rows, batches = bench.build_rows(config, device)
    return Suite(config, device, {row.name: row for row in rows}, batches)
