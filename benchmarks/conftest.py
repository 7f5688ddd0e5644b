"""The rows of one ``protjepa bench`` suite, built once per session (see bench_suite.py).

    .venv/bin/python -m pytest benchmarks --benchmark-enable
    PROTJEPA_BENCH_SUITE=gpu PROTJEPA_BENCH_SIZE=esm2_150m .venv/bin/python -m pytest benchmarks --benchmark-enable
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from bench_suite import THREADS, suite_config
from protjepa.bench.batches import Prepared
from protjepa.bench.config import BenchConfig
from protjepa.bench.rows import Row, build_rows, step_batches
from protjepa.bench.suite import resolve_device

torch.set_num_threads(THREADS)


@dataclass
class Suite:
    config: BenchConfig
    device: torch.device
    rows: dict[str, Row]
    batches: dict[str, list[Prepared]]


@pytest.fixture(scope="session")
def suite() -> Suite:
    config = suite_config()
    device = resolve_device(config.device)
    config = replace(config, device=device.type)
    rows = build_rows(config, device)
    return Suite(config, device, {row.name: row for row in rows}, step_batches(config, device))
