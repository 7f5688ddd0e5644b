"""One suite, end to end: rows built, measured side by side, summarised, ratios taken, checks run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch

from protjepa.bench.checks import check_no_sync, check_xformers
from protjepa.bench.config import SIZES, BenchConfig, BenchError, step_budget
from protjepa.bench.embedding import embedding_rows
from protjepa.bench.peak import row_peaks
from protjepa.bench.ratios import Ratio, ratios
from protjepa.bench.rows import build_rows, with_bf16_rows
from protjepa.bench.timing import RowResult, measure, summarize
from protjepa.precision import choose_bf16, cpu_bf16_missing


@dataclass
class SuiteResult:
    size: str
    config: dict
    rows: list[RowResult]
    ratios: list[Ratio]
    checks: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peaks: dict = field(default_factory=dict)  # FLOP/s each precision's MFU is against (bench/peak.py)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: torch sees no CUDA device (this suite needs a GPU)")
    return torch.device(requested)


def run_suite(config: BenchConfig) -> SuiteResult:
    if config.size not in SIZES:
        raise BenchError(f"--size {config.size!r}: expected {'|'.join(SIZES)}")
    device = resolve_device(config.device)
    choose_bf16(config.dtype, device.type, "--dtype")  # bf16 on a CPU without it: an error
    config = replace(config, device=device.type)
    notes = []
    missing = cpu_bf16_missing() if device.type == "cpu" else None
    if config.bf16_rows and missing:
        notes.append(f"no bf16 rows beside the fp32 ones: {missing}")
    rows, batches = build_rows(config, device)
    samples = measure(rows, batches, config, device)
    tokens, width = step_budget(config), SIZES[config.size]["embed_dim"]
    peaks = row_peaks(config.peak_flops, device, config.dtype, with_bf16_rows(config, device), tokens, width)
    results = summarize(rows, samples, config.steps, peaks)
    if config.peak_flops is None and device.type == "cpu":
        notes.append(f"MFU against this CPU's own matrix products, [{tokens}, {width}] @ [{width}, {4 * width}] "
                     "(the step's MLP), timed in this run per precision")
    checks = []
    if config.checks and device.type == "cuda":
        checks = check_xformers(config, batches, device) + check_no_sync(rows, batches)
    if config.embed_sequences and config.peer:
        # Whole passes over the sample: one "step" per repetition, one warm-up pass.
        embed_rows, embed_batches, check = embedding_rows(config, device)
        embed_samples = measure(embed_rows, embed_batches, replace(config, steps=1, warmup=1), device)
        samples |= embed_samples
        results += summarize(embed_rows, embed_samples, 1, None)
        checks.append(check)
    return SuiteResult(config.size, asdict(config), results, ratios(samples, config, device), checks, notes, peaks)
