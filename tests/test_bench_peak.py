"""MFU on any device: each row's model FLOP/s over the peak of its own precision, and a CPU's peaks
measured on the step's shapes (protjepa/bench/peak.py)."""
from __future__ import annotations

import pytest
import torch

from protjepa.bench.peak import measured_matmul_peak, row_peaks
from protjepa.bench.rows import Row
from protjepa.bench.timing import summarize


def rows() -> list[Row]:
    def run(_):
        return None

    return [Row("mlm", "fp32 step", "padded", run, flops=lambda p: 0.0),
            Row("mlm+bf16", "bf16 step", "padded", run, flops=lambda p: 0.0, bf16=True),
            Row("latent_metrics", "uncounted", "padded", run)]


def test_each_row_is_set_against_the_peak_of_its_precision():
    # Two repetitions of 2 steps each: (seconds, tokens, model FLOPs); medians of FLOP/s 4e11 and 6e11.
    samples = {"mlm": [(1.0, 100, 4e11), (2.0, 100, 8e11)],
               "mlm+bf16": [(1.0, 100, 6e11), (0.5, 100, 3e11)],
               "latent_metrics": [(0.001, 100, float("nan"))] * 2}
    fp32, bf16, uncounted = summarize(rows(), samples, 2, {"fp32": 8e11, "bf16": 3e12})
    assert fp32.tflops == pytest.approx(0.4) and fp32.mfu == pytest.approx(0.5)
    assert bf16.tflops == pytest.approx(0.6) and bf16.mfu == pytest.approx(0.2)
    assert uncounted.tflops is None and uncounted.mfu is None
    # A precision without a peak (none known, none measured) prints no MFU.
    assert summarize(rows()[:1], samples, 2, {"fp32": None, "bf16": 3e12})[0].mfu is None


def test_a_cpu_measures_its_peaks_and_an_override_is_used_for_both():
    cpu = torch.device("cpu")
    assert row_peaks(5e11, cpu, "fp32", 64, 16) == {"fp32": 5e11, "bf16": 5e11}
    measured = row_peaks(None, cpu, "fp32", 64, 16)
    # Both, bf16 even without bf16 rows: its ratio to fp32 says whether the bf16 targets apply.
    assert measured["bf16"] > 0 and measured["fp32"] > 0
    # One product of [64, 16] @ [16, 64] is 2 * 64 * 16 * 64 FLOPs; a peak is products over seconds.
    assert measured_matmul_peak(cpu, False, 64, 16, seconds=0.01) > 2 * 64 * 16 * 64
