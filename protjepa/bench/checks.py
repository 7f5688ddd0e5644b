"""Checks a GPU suite runs beside its clocks: xformers' numerics, and no host sync in a step."""
from __future__ import annotations

import torch
from torch import Tensor

from protjepa.attention import AttentionLayout, resolve_backend
from protjepa.batch import Batch
from protjepa.bench.batches import Prepared
from protjepa.bench.config import SIZES, VARIANTS, BenchConfig, recipe_for
from protjepa.bench.rows import Row
from protjepa.build import build_encoder
from protjepa.precision import bf16_autocast


def check_xformers(config: BenchConfig, batches: dict[str, list[Prepared]], device: torch.device) -> list[dict]:
    """xformers against SDPA in bf16, both against an fp32 math-attention reference on the
    same weights: xformers passes when its error is within 2x SDPA's (padded and packed rows)."""
    head_dim = SIZES[config.size]["embed_dim"] // SIZES[config.size]["attention_heads"]
    if resolve_backend("xformers", device, torch.bfloat16, head_dim) != "xformers":
        return [dict(name="xformers matches sdpa", passed=None, detail="xformers cannot run here: skipped")]
    torch.manual_seed(config.seed)
    encoder = build_encoder(recipe_for(config, "mlm", attention="math")).to(device).eval()

    def last(batch: Batch, backend: str, bf16: bool) -> Tensor:
        encoder.attention = backend
        with torch.no_grad(), bf16_autocast(device, bf16):
            return encoder(batch.inputs, batch.padding_mask, layout=AttentionLayout.from_batch(batch)).last

    results = []
    for layout in ("padded", "packed"):
        batch = batches[layout][0].batch
        real = ~batch.padding_mask
        reference = last(batch, "math", False)[real]
        errors = {b: (last(batch, b, True)[real].float() - reference).abs().max().item() for b in ("sdpa", "xformers")}
        results.append(dict(name=f"xformers matches sdpa ({layout})", passed=errors["xformers"] <= 2 * errors["sdpa"],
                            detail=f"max |error| vs fp32 math: xformers {errors['xformers']:.3g}, "
                                   f"sdpa {errors['sdpa']:.3g}"))
    return results


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
