"""One suite, end to end: rows built, measured side by side, summarised, ratios taken, checks run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch

from protjepa.attention import attention_line
from protjepa.bench.checks import attention_errors, check_auto_attention, check_no_sync
from protjepa.bench.config import (SIZES, VARIANTS, BenchConfig, BenchError, dtype_of, head_dim, recipe_for,
                                   step_budget)
from protjepa.bench.embedding import embedding_rows
from protjepa.bench.peak import row_peaks
from protjepa.bench.profile import StepProfile, profile_row
from protjepa.bench.ratios import Ratio, ratios, utilisation_targets
from protjepa.bench.rows import Row, attention_candidates, build_rows, step_batches, with_bf16_rows
from protjepa.bench.timing import RowResult, measure, summarize
from protjepa.build import build_model
from protjepa.precision import choose_bf16, cpu_bf16_missing
from protjepa.training.sizing import ADAMW_BYTES, step_memory


@dataclass
class SuiteResult:
    size: str
    config: dict
    rows: list[RowResult]
    ratios: list[Ratio]
    checks: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peaks: dict = field(default_factory=dict)  # FLOP/s each precision's MFU is against (bench/peak.py)
    profiles: list[StepProfile] = field(default_factory=list)  # where profiled steps' time goes (bench/profile.py)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: torch sees no CUDA device (this suite needs a GPU)")
    return torch.device(requested)


def run_suite(config: BenchConfig, progress: Callable[[str], None] | None = None) -> SuiteResult:
    """The suite at one size; ``progress`` gets a line at each stage of the measurement."""
    if config.size not in SIZES:
        raise BenchError(f"--size {config.size!r}: expected {'|'.join(SIZES)}")
    device = resolve_device(config.device)
    choose_bf16(config.dtype, device.type, "--dtype")  # bf16 on a CPU without it: an error
    config = replace(config, device=device.type)
    notes = []
    if config.fill_memory and device.type != "cuda":
        raise BenchError("--fill-memory: it fills a GPU's memory; this run is on the CPU")
    if config.fill_memory and config.peer:  # what transformers' step saves is not counted: it might not fit
        config = replace(config, peer=False)
        notes.append("--fill-memory: transformers' rows left out (the rows are sized by our steps' memory)")
    if config.fill_memory and config.compile:
        notes.append("--fill-memory: no +static rows (CUDA graphs keep each graph's memory between its replays)")
    missing = cpu_bf16_missing() if device.type == "cpu" else None
    if config.bf16_rows and missing:
        notes.append(f"no bf16 rows beside the fp32 ones: {missing}")
    report = progress or (lambda line: None)
    report(f"{config.size}: building the rows' models")
    rows = build_rows(config, device)
    if config.fill_memory:
        # Every row's model is on the GPU now (weights and buffers); their gradients and AdamW moments
        # will take three times as much again: what the rows hold besides the step that runs.
        held = (ADAMW_BYTES // 4) * torch.cuda.memory_allocated(device)
        config, line = rows_that_fill(config, device, torch.cuda.get_device_properties(device).total_memory, held)
        notes.append(line)
    report(f"{config.size}: drawing {config.rows}-row batches from the corpus")
    batches = step_batches(config, device)
    precisions = [config.dtype] + (["bf16"] if with_bf16_rows(config, device) else [])
    for precision in precisions:  # what the step rows' attention (auto) runs, by layout
        lines = dict.fromkeys(attention_line("auto", device, dtype_of(precision), head_dim(config), packed)
                              for packed in (False, True))
        notes += [f"{precision} {line}" for line in lines]
    errors = attention_errors(config, batches, device, attention_candidates(config, device, precisions))
    failed: dict[str, str] = {}
    samples = measure(rows, batches, config, device, progress, failed)
    rows = [row for row in rows if row.name not in failed]
    notes += [f"{name}: left out, its warm-up raised {error}" for name, error in failed.items()]
    tokens, width = step_budget(config), SIZES[config.size]["embed_dim"]
    peaks = row_peaks(config.peak_flops, device, config.dtype, tokens, width)
    results = summarize(rows, samples, config.steps, peaks)
    if config.peak_flops is None and device.type == "cpu":
        notes.append(f"MFU against this CPU's own matrix products, [{tokens}, {width}] @ [{width}, {4 * width}] "
                     "(the step's MLP), timed in this run per precision")
    profiles = [profile_row(row.name, row.run, batches[row.layout], config.steps, device)
                for row in profiled_rows(rows, config)]
    checks = check_auto_attention(config, device, errors, samples)
    if config.checks and device.type == "cuda":
        checks += check_no_sync(rows, batches)
    if config.embed_sequences and config.peer:
        # Whole passes over the sample: one "step" per repetition, one warm-up pass.
        embed_rows, embed_batches, check = embedding_rows(config, device)
        embed_samples = measure(embed_rows, embed_batches, replace(config, steps=1, warmup=1), device)
        samples |= embed_samples
        results += summarize(embed_rows, embed_samples, 1, None)
        checks.append(check)
    targets = utilisation_targets(results, profiles, peaks, device, missing)
    return SuiteResult(config.size, asdict(config), results, ratios(samples, config, device, peaks) + targets,
                       checks, notes, peaks, profiles)


def rows_that_fill(config: BenchConfig, device: torch.device, memory: int, held: int | None = None
                   ) -> tuple[BenchConfig, str]:
    """The config with as many step rows (padded, of ``crop`` residues) as every variant's training step
    fits in ``memory`` bytes (the fewest over the variants), and the line that says so. ``held``: the
    state the suite's rows hold in all (else each step's own)."""
    counted = {}
    for variant in VARIANTS:
        recipe = recipe_for(config, variant)
        data = recipe.data.model_copy(update={"crop": config.crop, "packing": False})
        recipe = recipe.model_copy(update={"data": data})
        model = build_model(recipe).to(device).train()
        counted[variant] = step_memory(recipe, model, device, bf16=config.dtype == "bf16")
        del model
    tightest = min(counted, key=lambda v: counted[v].tokens_that_fit(memory, held=held))
    rows = counted[tightest].tokens_that_fit(memory, held=held) // counted[tightest].row
    if rows < 1:
        raise BenchError(f"--fill-memory: not one row of {config.crop} residues fits {tightest}'s step here")
    return replace(config, rows=rows), \
        f"--fill-memory: {rows} rows; {tightest}: {counted[tightest].describe(memory, held=held)}"


def profiled_rows(rows: list[Row], config: BenchConfig) -> list[Row]:
    """The MLM step rows (attention's share has a target); with ``--profile`` every step row of ours."""
    ours = [row for row in rows if row.name.split("+")[0].split("@")[0] in (*VARIANTS, "mlm_packed", "mlm_padded")]
    return ours if config.profile else [row for row in ours if row.name in ("mlm", "mlm+bf16")]
