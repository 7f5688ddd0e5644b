"""Where a step's time goes: torch.profiler's operator times, split into attention, matrix
products, normalisation/elementwise, optimizer and other.

Each operator's *self* time counts once, in the first category that claims it:

* ``attention``: inside :data:`protjepa.attention.PROFILER_SCOPE` (the forward, with its casts
  and masks), and the backward of every operator recorded there (matched by autograd's
  sequence number), whatever backend ran;
* ``optimizer``: inside :data:`OPTIMIZER_SCOPE` (clipping, AdamW, zeroing, the EMA teacher);
* ``matmul``: the matrix-product operators (the linear layers, forward and backward);
* ``elementwise``: normalisation, activations, casts, copies and pointwise arithmetic;
* ``other``: the rest (embedding, the loss, indexing, autograd's own bookkeeping).

On a GPU the times are the kernels' (each operator's device self time), on a CPU the host's.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from protjepa.attention import PROFILER_SCOPE
from protjepa.bench.batches import Prepared

CATEGORIES = ("attention", "matmul", "elementwise", "optimizer", "other")
OPTIMIZER_SCOPE = "protjepa::optimizer"
BACKWARD_NODE = "autograd::engine::evaluate_function: "

MATMUL_OPS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul", "aten::linear",
    "aten::_addmm_activation", "aten::addmv", "aten::mv", "aten::dot", "aten::_scaled_mm",
})
ELEMENTWISE_WORDS = (
    "norm", "gelu", "silu", "relu", "softmax", "add", "sub", "mul", "div", "neg", "copy", "_to_", "aten::to",
    "cat", "where", "masked_fill", "fill_", "zero_", "exp", "sqrt", "rsqrt", "pow", "lerp", "addcdiv", "addcmul",
    "clamp", "sum", "mean", "cos", "sin", "sign", "abs", "threshold", "maximum", "minimum", "_foreach_",
)


@dataclass
class StepProfile:
    row: str
    ms_per_step: float  # wall clock of a step under the profiler
    split: dict[str, float]  # category -> ms per step (operators' self time)

    def share(self, category: str) -> float:
        total = sum(self.split.values())
        return self.split[category] / total if total else float("nan")


def category_of_operator(name: str) -> str:
    """matmul, elementwise or other, by the operator's name (its scope decides the other two)."""
    if name in MATMUL_OPS:
        return "matmul"
    if name.startswith("aten::") and any(word in name for word in ELEMENTWISE_WORDS):
        return "elementwise"
    return "other"


def split_events(events, on_device: bool) -> dict[str, float]:
    """Microseconds of self time per category over a profiler's events (``prof.events()``)."""

    def ancestors(event):
        while event is not None:
            yield event
            event = event.cpu_parent

    # The forward operators run inside attention; their backward nodes carry the same sequence number.
    in_attention = {(e.thread, e.sequence_nr) for e in events if e.sequence_nr >= 0 and e.name != PROFILER_SCOPE
                    and any(a.name == PROFILER_SCOPE for a in ancestors(e))}
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        if on_device and event.device_type != torch.autograd.DeviceType.CPU:
            continue  # kernels: counted under the operator that launched them
        spent = event.self_device_time_total if on_device else event.self_cpu_time_total
        if not spent:
            continue
        category = None
        for a in ancestors(event):
            if a.name == PROFILER_SCOPE or (
                    a.name.startswith(BACKWARD_NODE) and (a.fwd_thread, a.sequence_nr) in in_attention):
                category = "attention"
                break
            if a.name == OPTIMIZER_SCOPE:
                category = "optimizer"
                break
        totals[category or category_of_operator(event.name)] += spent
    return totals


def profile_row(name: str, run, batches: list[Prepared], steps: int, device: torch.device) -> StepProfile:
    """``steps`` steps of one row under torch.profiler (after one untimed step)."""
    # Kineto logs its start and stop (and, on a CPU-only build, a GPU-count error) on stderr: quiet
    # unless the user asked for its logs. Read when the profiler first starts.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    run(batches[0])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for i in range(steps):
            run(batches[(i + 1) % len(batches)])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    split = split_events(prof.events(), device.type == "cuda")
    return StepProfile(name, 1e3 * wall / steps, {k: v / 1e3 / steps for k, v in split.items()})
