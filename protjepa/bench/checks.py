"""Checks a suite runs beside its clocks: the attention backends' numerics (xformers' among them where
it runs) and auto's pick (every device), no host sync in a step (GPU)."""
from __future__ import annotations

import statistics

import torch
from torch import Tensor

from protjepa.attention import AttentionLayout, resolve_backend
from protjepa.batch import Batch
from protjepa.bench.batches import Prepared
from protjepa.bench.config import VARIANTS, BenchConfig, dtype_of, head_dim, recipe_for
from protjepa.bench.rows import Row
from protjepa.bench.timing import Samples
from protjepa.build import build_encoder
from protjepa.precision import bf16_autocast


def check_no_sync(rows: list[Row], batches: dict[str, list[Prepared]]) -> list[dict]:
    """Each training-step row once under ``torch.cuda.set_sync_debug_mode('error')``."""
    results = []
    for row in rows:
        if row.name not in VARIANTS and row.name != "mlm_packed":
            continue
        torch.cuda.set_sync_debug_mode("error")
        try:
            row.run(batches[row.layout][0])
            passed, detail = True, "no host synchronisation"
        except RuntimeError as exc:
            passed, detail = False, (str(exc).strip().splitlines() or [""])[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        results.append(dict(name=f"no host sync ({row.name})", passed=passed, detail=detail))
    return results


CHECK_ROWS = 8  # rows of a step batch the attention check runs on (the CPU suite's whole batch)


def attention_errors(config: BenchConfig, batches: dict[str, list[Prepared]], device: torch.device,
                     candidates: list[tuple[str, str]]) -> dict[tuple[str, str, str], float]:
    """Each (backend, precision, direction)'s relative error against fp32 math attention, on the same
    weights, the first CHECK_ROWS rows of a padded and a packed batch: the largest max |difference| / max |reference| over the
    encoder's output at real tokens ("fwd", run without grad) and, for "fwd_bwd", also over the
    gradient of every weight after a backward of a fixed weighting of the output."""
    torch.manual_seed(config.seed)
    encoder = build_encoder(recipe_for(config, "mlm", attention="math")).to(device).train()

    def outputs(batch: Batch, backend: str, bf16: bool, backward: bool) -> list[Tensor]:
        encoder.attention = backend
        # The first CHECK_ROWS rows: math's backward keeps [rows, heads, L, L] scores in every layer.
        rows = slice(0, CHECK_ROWS)
        layout = AttentionLayout(batch.padding_mask[rows], *(None if x is None else x[rows] for x in (
            batch.segment_ids, batch.positions)))
        with torch.set_grad_enabled(backward), bf16_autocast(device, bf16):
            last = encoder(batch.inputs[rows], layout.padding_mask, layout=layout).last
        last = last.float() * (~layout.padding_mask)[..., None]
        if not backward:
            return [last]
        weighting = torch.randn(last.shape, generator=torch.Generator().manual_seed(0)).to(device)
        (last * weighting).sum().backward()
        grads = [p.grad.float() for p in encoder.parameters() if p.grad is not None]
        encoder.zero_grad(set_to_none=True)
        return [last.detach()] + grads

    errors: dict[tuple[str, str, str], float] = {}
    for layout in ("padded", "packed"):
        batch = batches[layout][0].batch
        for backward, kind in ((False, "fwd"), (True, "fwd_bwd")):
            reference = outputs(batch, "math", False, backward)
            # math in each precision too, timed or not: bf16's tolerance is twice its error
            for backend, dtype in dict.fromkeys([*candidates, *(("math", d) for _, d in candidates)]):
                got = outputs(batch, backend, dtype == "bf16", backward)
                error = max(((g - r).abs().max() / r.abs().max()).item() for g, r in zip(got, reference))
                key = (backend, dtype, kind)
                errors[key] = max(errors.get(key, 0.0), error)
    return errors


def check_auto_attention(config: BenchConfig, device: torch.device, errors: dict[tuple[str, str, str], float],
                         samples: Samples) -> list[dict]:
    """Per precision and direction: every backend within tolerance of fp32 math (fp32: 1e-4; bf16:
    twice bf16 math's own error), and ``auto`` on the fastest of those (its encoder time within 5% of
    the best's)."""
    results = []
    for dtype, kind in dict.fromkeys((d, k) for _, d, k in errors):
        tag = "" if dtype == config.dtype else "+bf16"
        mine = {b: e for (b, d, k), e in errors.items() if (d, k) == (dtype, kind)}
        tolerance = 1e-4 if dtype == "fp32" else 2 * mine["math"]
        correct = [b for b, e in mine.items() if e <= tolerance]
        results.append(dict(name=f"attention backends match math ({dtype}, {kind})", passed=len(correct) == len(mine),
                            detail=", ".join(f"{b} {e:.2g}" for b, e in mine.items())
                            + f" (relative; tolerance {tolerance:.2g})"))
        seconds = {b: statistics.median(s for s, _, _ in samples[f"encoder_{kind}[{b}]{tag}"]) for b in correct
                   if f"encoder_{kind}[{b}]{tag}" in samples}
        auto = resolve_backend("auto", device, dtype_of(dtype), head_dim(config), kind == "fwd_bwd")
        if auto not in seconds:
            continue
        fastest = min(seconds, key=seconds.get)
        results.append(dict(name=f"auto attention is the fastest correct ({dtype}, {kind})",
                            passed=seconds[auto] <= 1.05 * seconds[fastest],
                            detail=f"auto runs {auto}; encoder {kind}: " + ", ".join(
                                f"{b} {1e3 * t:.0f} ms" for b, t in sorted(seconds.items(), key=lambda x: x[1]))))
    return results
