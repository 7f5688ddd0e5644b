"""What a run was measured on, and its results as plain-text tables and JSON."""
from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict

import torch

from protjepa import provenance
from protjepa.bench.profile import CATEGORIES
from protjepa.bench.suite import SuiteResult
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


def format_report(results: list[SuiteResult], info: dict) -> str:
    """The rows and ratios as plain-text tables."""
    lines = [f"machine: {info['cpu']} ({info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
             f"bf16: {info['cpu_bf16']})" + (f", {info['gpu']}" if "gpu" in info else "") + f", torch {info['torch']}"]
    for result in results:
        cfg = result.config
        lines += ["", f"== {result.size}, {cfg['device']} {cfg['dtype']}, crop {cfg['crop']}, {cfg['rows']} rows, "
                  f"{cfg['repeats']} repetitions x {cfg['steps']} steps"]
        lines += [f"note: {note}" for note in result.notes]
        if any(result.peaks.values()):
            lines.append("MFU against: " + ", ".join(f"{precision} {peak / 1e9:,.0f} GFLOP/s" for precision, peak
                                                      in result.peaks.items() if peak))
        lines.append(f"{'row':<32} {'layout':<12} {'tokens/step':>11} {'tokens/s':>10} {'range':>17} "
                     f"{'ms/step':>9} {'TFLOP/s':>8} {'MFU':>6}")
        for r in result.rows:
            lo, hi = r.tokens_per_s_range
            tflops = f"{r.tflops:8.3f}" if r.tflops is not None else f"{'-':>8}"
            mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else f"{'-':>6}"
            lines.append(f"{r.name:<32} {r.layout:<12} {r.tokens_per_step:>11.0f} {r.tokens_per_s:>10.0f} "
                         f"{lo:>8.0f}-{hi:<8.0f} {r.ms_per_step:>9.1f} {tflops} {mfu}")
        if result.profiles:
            lines += ["", "where the step's time goes (torch.profiler, operators' self time; --profile: every step row)",
                      f"{'row':<28} {'ms/step':>9} " + " ".join(f"{c:>11}" for c in CATEGORIES)]
            for p in result.profiles:
                lines.append(f"{p.row:<28} {p.ms_per_step:>9.1f} "
                             + " ".join(f"{100 * p.share(c):>10.1f}%" for c in CATEGORIES))
        lines.append("")
        lines.append(f"{'ratio':<36} {'value':>7}  {'target':<8} {'':<7} what")
        for q in result.ratios:
            verdict = ("" if q.target is None else "n/a") if q.met is None else ("met" if q.met else "NOT MET")
            value = "-" if math.isnan(q.value) else f"{q.value:.3f}"
            lines.append(f"{q.name:<36} {value:>7}  {q.target or '':<8} {verdict:<7} {q.what}")
        for c in result.checks:
            verdict = "skip" if c["passed"] is None else ("pass" if c["passed"] else "FAIL")
            lines.append(f"check {c['name']}: {verdict} ({c['detail']})")
    return "\n".join(lines)


def to_json(results: list[SuiteResult], info: dict) -> dict:
    return dict(machine=info, runs=[asdict(r) for r in results])
