"""The clock: every row once per repetition, ABBA, on the same batches; then medians per row."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from protjepa.bench.batches import Prepared
from protjepa.bench.config import BenchConfig
from protjepa.bench.rows import Row

# Per row, per repetition: (seconds, non-padding tokens, model FLOPs) of ``config.steps`` steps.
Samples = dict[str, list[tuple[float, int, float]]]


@dataclass
class RowResult:
    name: str
    what: str
    layout: str
    tokens_per_step: float
    tokens_per_s: float  # median over repetitions
    tokens_per_s_range: tuple[float, float]
    ms_per_step: float
    tflops: float | None = None  # achieved model TFLOP/s (median)
    mfu: float | None = None
    flops_per_step: float | None = None  # model FLOPs of a step (protjepa.flops), the mean over the batches timed
    seconds: list[float] = field(default_factory=list)  # each repetition's time, in the order run
    tokens: list[int] = field(default_factory=list)  # each repetition's non-padding tokens


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(rows: list[Row], batches: dict[str, list[Prepared]], config: BenchConfig,
            device: torch.device, progress: Callable[[str], None] | None = None,
            failed: dict[str, str] | None = None) -> Samples:
    """Warm-up runs of every row, then ``config.repeats`` repetitions, forward order on even ones
    and reversed on odd ones (ABBA), each row on the next ``config.steps`` batches of its pool.
    ``progress`` gets a line after each row's warm-up (compiled rows compile in it) and after each
    repetition (its tokens/s per row). A compiled row whose warm-up raises (torch.compile, CUDA graphs)
    is left out of the timing, its error's first line in ``failed``: the other rows are still measured."""
    report = progress or (lambda line: None)
    began = time.perf_counter()
    failed = {} if failed is None else failed

    def chunk(row: Row, rep: int) -> list[Prepared]:
        pool = batches[row.layout]
        return [pool[(rep * config.steps + i) % len(pool)] for i in range(config.steps)]

    for row in rows:
        start = time.perf_counter()
        try:
            for i in range(config.warmup):
                row.run(batches[row.layout][i % len(batches[row.layout])])
            synchronize(device)
        except Exception as exc:
            if not row.compiled:
                raise
            failed[row.name] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            report(f"{config.size}: warm-up {row.name} failed, left out: {failed[row.name]}")
            continue
        report(f"{config.size}: warm-up {row.name}, {time.perf_counter() - start:.1f} s")  # compiled rows compile here
    rows = [row for row in rows if row.name not in failed]
    report(f"{config.size}: warm-up of {len(rows)} rows done, {time.perf_counter() - began:.0f} s")
    samples: Samples = {row.name: [] for row in rows}
    for rep in range(config.repeats):
        for row in rows if rep % 2 == 0 else reversed(rows):
            work = chunk(row, rep)
            start = time.perf_counter()
            for prepared in work:
                row.run(prepared)
            synchronize(device)
            seconds = time.perf_counter() - start
            flops = sum(row.flops(p) for p in work) if row.flops else float("nan")
            samples[row.name].append((seconds, sum(p.tokens for p in work), flops))
        rates = ", ".join(f"{name} {tokens / seconds:,.0f}" for name, runs in samples.items()
                          for seconds, tokens, _ in runs[-1:])
        report(f"{config.size}: repetition {rep + 1}/{config.repeats}, {time.perf_counter() - began:.0f} s; "
               f"tokens/s: {rates}")
    return samples


def summarize(rows: list[Row], samples: Samples, steps: int, peaks: dict[str, float | None] | None) -> list[RowResult]:
    """Each row's medians; MFU against the peak of the row's precision (``peaks``: "fp32", "bf16")."""
    out = []
    for row in rows:
        runs = samples[row.name]
        rates = [tokens / seconds for seconds, tokens, _ in runs]
        tflops = None if row.flops is None else statistics.median(f / s for s, _, f in runs) / 1e12
        peak = (peaks or {}).get("bf16" if row.bf16 else "fp32")
        out.append(RowResult(
            name=row.name, what=row.what, layout=row.layout,
            tokens_per_step=statistics.mean(t for _, t, _ in runs) / steps,
            tokens_per_s=statistics.median(rates), tokens_per_s_range=(min(rates), max(rates)),
            ms_per_step=1e3 * statistics.median(s for s, _, _ in runs) / steps,
            tflops=tflops, mfu=None if tflops is None or peak is None else tflops * 1e12 / peak,
            flops_per_step=None if row.flops is None else statistics.mean(f for _, _, f in runs) / steps,
            seconds=[s for s, _, _ in runs], tokens=[t for _, t, _ in runs],
        ))
    return out
