"""What a run was measured on, and its results as plain-text tables and JSON."""
from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict

import torch

from protjepa import provenance
from protjepa.bench.profile import CATEGORIES, StepProfile
from protjepa.bench.ratios import Ratio
from protjepa.bench.recipes import RecipeRunResult
from protjepa.bench.suite import SuiteResult
from protjepa.bench.timing import RowResult
from protjepa.precision import cpu_bf16_missing


def machine() -> dict:
    """What the numbers were measured on: a run's machine record (provenance.json's), and what
    bears on speed besides."""
    info = dict(provenance.machine(), cpu_bf16=cpu_bf16_missing() or "native", torch=torch.__version__,
                python=platform.python_version(), load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_line(info: dict) -> str:
    return (f"machine: {info['cpu']} ({info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
            f"bf16: {info['cpu_bf16']})" + (f", {info['gpu']}" if "gpu" in info else "") + f", torch {info['torch']}")


def peaks_line(peaks: dict[str, float | None], prefix: str = "") -> list[str]:
    """"MFU against: fp32 ... GFLOP/s, bf16 ..." (the peaks known), or nothing."""
    known = [f"{precision} {peak / 1e9:,.0f} GFLOP/s" for precision, peak in peaks.items() if peak]
    return [f"{prefix}MFU against: " + ", ".join(known)] if known else []


def rows_table(rows: list[RowResult]) -> list[str]:
    name = max([32, *(len(r.name) + 1 for r in rows)])
    layout = max([12, *(len(r.layout) + 1 for r in rows)])
    lines = [f"{'row':<{name}} {'layout':<{layout}} {'tokens/step':>11} {'tokens/s':>10} {'range':>17} "
             f"{'ms/step':>9} {'FLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6}"]
    for r in rows:
        lo, hi = r.tokens_per_s_range
        flops = f"{r.flops_per_step:10.4g}" if r.flops_per_step is not None else f"{'-':>10}"
        tflops = f"{r.tflops:8.3f}" if r.tflops is not None else f"{'-':>8}"
        mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else f"{'-':>6}"
        lines.append(f"{r.name:<{name}} {r.layout:<{layout}} {r.tokens_per_step:>11.0f} {r.tokens_per_s:>10.0f} "
                     f"{lo:>8.0f}-{hi:<8.0f} {r.ms_per_step:>9.1f} {flops} {tflops} {mfu}")
    return lines


def profiles_table(profiles: list[StepProfile]) -> list[str]:
    if not profiles:
        return []
    lines = ["", "where the step's time goes (torch.profiler, operators' self time; --profile: every step row)",
             f"{'row':<28} {'ms/step':>9} " + " ".join(f"{c:>11}" for c in CATEGORIES)]
    for p in profiles:
        lines.append(f"{p.row:<28} {p.ms_per_step:>9.1f} "
                     + " ".join(f"{100 * p.share(c):>10.1f}%" for c in CATEGORIES))
    return lines


def ratios_table(ratios: list[Ratio]) -> list[str]:
    name = max([36, *(len(q.name) + 1 for q in ratios)])
    lines = ["", f"{'ratio':<{name}} {'value':>7}  {'target':<8} {'':<7} what"]
    for q in ratios:
        verdict = ("" if q.target is None else "n/a") if q.met is None else ("met" if q.met else "NOT MET")
        value = "-" if math.isnan(q.value) else f"{q.value:.3f}"
        lines.append(f"{q.name:<{name}} {value:>7}  {q.target or '':<8} {verdict:<7} {q.what}")
    return lines


def format_report(results: list[SuiteResult], info: dict) -> str:
    """The rows and ratios as plain-text tables."""
    lines = [machine_line(info)]
    for result in results:
        cfg = result.config
        lines += ["", f"== {result.size}, {cfg['device']} {cfg['dtype']}, crop {cfg['crop']}, {cfg['rows']} rows, "
                  f"{cfg['repeats']} repetitions x {cfg['steps']} steps"]
        lines += [f"note: {note}" for note in result.notes]
        lines += peaks_line(result.peaks)
        lines += rows_table(result.rows) + profiles_table(result.profiles) + ratios_table(result.ratios)
        for c in result.checks:
            verdict = "skip" if c["passed"] is None else ("pass" if c["passed"] else "FAIL")
            lines.append(f"check {c['name']}: {verdict} ({c['detail']})")
    return "\n".join(lines)


def format_recipe_report(result: RecipeRunResult, info: dict) -> str:
    """A recipe run's recipes, rows and ratios as plain text."""
    cfg = result.config
    lines = [machine_line(info), "", f"== recipes, {cfg['device']} {cfg['dtype']}, {cfg['repeats']} repetitions x "
             f"{cfg['steps']} steps" + (f", --set {' '.join(cfg['overrides'])}" if cfg["overrides"] else "")]
    for recipe in result.recipes:
        lines += [f"recipe {recipe.name}: {recipe.file}", f"  encoder {recipe.encoder}; objectives {recipe.objectives}",
                  f"  {recipe.batches}", f"  {recipe.flops}", *peaks_line(recipe.peaks, "  ")]
    lines += [f"note: {note}" for note in result.notes]
    lines += rows_table(result.rows) + profiles_table(result.profiles)
    return "\n".join(lines + (ratios_table(result.ratios) if result.ratios else []))


def to_json(results: list[SuiteResult] | list[RecipeRunResult], info: dict) -> dict:
    return dict(machine=info, runs=[asdict(r) for r in results])
