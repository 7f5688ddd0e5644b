"""The ratios a suite reports, each the median over repetitions of a ratio within one
repetition, with the issue's target where it has one; and the utilisation targets (MFU against
the measured peak, attention's share of the profiled step)."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

from protjepa.bench.config import BenchConfig, layout_budget, layout_suffix
from protjepa.bench.profile import StepProfile
from protjepa.bench.timing import RowResult, Samples

# bf16 targets hold where a CPU's bf16 matrix products run at least this many times its fp32 ones.
FAST_BF16 = 4.0


@dataclass
class Ratio:
    name: str
    what: str
    value: float
    target: str | None = None  # e.g. ">= 1.3"
    met: bool | None = None  # None with a target: not applicable on this machine (``what`` says why)


def paired(samples: Samples, numerator: str, denominator: str) -> float:
    """Median over repetitions of tokens/s(numerator) / tokens/s(denominator)."""
    return statistics.median(
        (tn / sn) / (td / sd) for (sn, tn, _), (sd, td, _) in zip(samples[numerator], samples[denominator])
    )


def cost_over_floor(samples: Samples, step: str, base: str, extra: str) -> float:
    """Median over repetitions of time(step) / (time(base) + time(extra)), all on the same batches."""
    return statistics.median(s / (b + e) for (s, _, _), (b, _, _), (e, _, _)
                             in zip(samples[step], samples[base], samples[extra]))


def at_least(target: float):
    return lambda value: (f">= {target:g}", value >= target)


def at_most(target: float):
    return lambda value: (f"<= {target:g}", value <= target)


def not_here(check):
    """A target stated but not judged: it does not apply on this machine."""
    return lambda value: (check(value)[0], None)


def bf16_targets_off(peaks: dict[str, float | None], device: torch.device, bf16_missing: str | None = None
                     ) -> str | None:
    """Why the bf16 targets do not apply on this machine, or None where they do: on a GPU always;
    on a CPU where its bf16 matrix products ran >= FAST_BF16 x its fp32 ones (measured peaks)."""
    if device.type == "cuda":
        return None
    if bf16_missing:
        return bf16_missing
    fp32, bf16 = peaks.get("fp32"), peaks.get("bf16")
    speedup = bf16 / fp32 if fp32 and bf16 else 0.0
    return None if speedup >= FAST_BF16 else f"bf16 matrix products only {speedup:.1f}x fp32's (needs {FAST_BF16:g}x)"


def ratios(samples: Samples, config: BenchConfig, device: torch.device, peaks: dict[str, float | None]) -> list[Ratio]:
    out: list[Ratio] = []

    def add(name: str, what: str, value: float, check=None):
        target, met = check(value) if check else (None, None)
        out.append(Ratio(name, what, value, target, met))

    have = set(samples)
    peer_target = at_least(1.5)
    bf16_off = bf16_targets_off(peaks, device)
    bf16_peer = "peer_hf_mlm+bf16" in have
    suffix = layout_suffix(config)
    # (row suffix, our padded row, our packed row, ratio label, where, target)
    peer_pairs = [("", "mlm", "mlm_packed", "", f"crop {config.crop}", peer_target)]
    if suffix:
        peer_pairs.append((suffix, f"mlm_padded{suffix}", f"mlm_packed{suffix}", f" (crop {config.packing_crop})",
                           f"crop {config.packing_crop}, {layout_budget(config)} tokens", peer_target))
    for key, padded, packed, label, where, target in peer_pairs:
        peer = f"peer_hf_mlm{key}"
        if peer in have:
            add(f"mlm / peer{label}", f"our MLM-only step vs transformers' ESM, the same padded batches, {where} "
                "(tokens/s)", paired(samples, padded, peer), target)
            add(f"mlm packed / peer{label}", f"our MLM-only step on packed rows vs transformers' ESM on padded rows, "
                f"the same token budget, {where} (tokens/s)", paired(samples, packed, peer), target)
    # Ours as training runs it on a GPU (compiled; CUDA graphs on static shapes) vs transformers' eager step.
    for ours, how in (("mlm+compile", "compiled, the same padded batches"),
                      ("mlm+static", "compiled on static shapes (CUDA graphs on a GPU), the same token budget")):
        if ours in have and "peer_hf_mlm" in have:
            add(f"{ours.replace('+', ' ')} / peer", f"our MLM-only step {how}, vs transformers' eager ESM step, "
                f"crop {config.crop} (tokens/s)", paired(samples, ours, "peer_hf_mlm"), peer_target)
    if "mlm+bf16" in have:
        add("mlm bf16 / fp32", "our MLM-only step under CPU bf16 autocast vs fp32, same batches (tokens/s)"
            + (f"; not applicable here: {bf16_off}" if bf16_off else ""),
            paired(samples, "mlm+bf16", "mlm"), not_here(at_least(2.0)) if bf16_off else at_least(2.0))
        add("mlm_jepa_masked bf16 / fp32", "masked MLM+JEPA step, bf16 autocast vs fp32 (tokens/s)",
            paired(samples, "mlm_jepa_masked+bf16", "mlm_jepa_masked"))
    if bf16_peer:
        add("mlm bf16 / peer bf16", f"our MLM-only step vs transformers' ESM, both under bf16 autocast, the same "
            f"padded batches, crop {config.crop} (tokens/s)", paired(samples, "mlm+bf16", "peer_hf_mlm+bf16"),
            peer_target)
        add("peer bf16 / fp32", "transformers' ESM step, bf16 autocast vs fp32 (tokens/s)",
            paired(samples, "peer_hf_mlm+bf16", "peer_hf_mlm"))
    add("mlm_jepa_masked / floor", "masked-position MLM+JEPA step time / (MLM step + no-grad target pass to the "
        "last layer)", cost_over_floor(samples, "mlm_jepa_masked", "mlm", "target_forward_last"), at_most(1.10))
    add("mlm_jepa_ema_half / floor", "EMA-teacher half-depth MLM+JEPA step time / (MLM step + no-grad target "
        "pass to half depth)", cost_over_floor(samples, "mlm_jepa_ema_half", "mlm", "target_forward_half"),
        at_most(1.10))
    add("latent metrics / mlm_jepa_masked", "time of the metrics that set each score beside a constant "
        "prediction's (lift, cosine_of_mean, r2, unigram entropy) over the masked MLM+JEPA step's",
        1 / paired(samples, "latent_metrics", "mlm_jepa_masked"), at_most(0.01))
    for variant in ("mlm_jepa_masked", "mlm_jepa_ema_half", "mlm_jepa_all", "jepa_only"):
        add(f"{variant} / mlm", f"step time of {variant} over the MLM-only step (the paper's JEPA: 1.8)",
            1 / paired(samples, variant, "mlm"))
    add("target_forward_last / mlm", "the no-grad target pass over the MLM-only step (time)",
        1 / paired(samples, "target_forward_last", "mlm"))
    packed, padded = (f"mlm_packed{suffix}", f"mlm_padded{suffix}") if suffix else ("mlm_packed", "mlm")
    add(f"packed / padded (crop {config.packing_crop})", "MLM-only step, packed vs padded rows of the real length "
        f"distribution, {layout_budget(config)} tokens per batch (tokens/s)", paired(samples, packed, padded),
        at_least(1.5))
    if suffix:
        add("packed / padded (step batches)", f"the same at the step rows' crop {config.crop} and budget (tokens/s)",
            paired(samples, "mlm_packed", "mlm"))
    for backend in config.backends:
        for kind in ("fwd", "fwd_bwd"):
            name, base = f"encoder_{kind}[{backend}]", f"encoder_{kind}[sdpa]"
            if backend != "sdpa" and name in have and base in have:
                add(f"{backend} / sdpa {kind}", f"encoder {kind}, {backend} vs sdpa attention (tokens/s)",
                    paired(samples, name, base))
    for tag, label in (("", "fp32"), ("+bf16", "bf16")):
        if f"embed_peer{tag}" in have:
            add(f"embed / peer ({label})", f"pooled embeddings, our Embedder vs transformers' EsmModel, the same "
                f"sequences and weights, both {label} (residues/s)", paired(samples, f"embed{tag}", f"embed_peer{tag}"),
                at_least(1.5))
    if "embed+bf16" in have:
        add("embed bf16 / peer fp32", "our Embedder in bf16 vs transformers' EsmModel in fp32 (residues/s)",
            paired(samples, "embed+bf16", "embed_peer"))
    for variant in ("mlm", "mlm_jepa_masked"):
        if f"{variant}+compile" in have:
            add(f"{variant} compile / eager", "torch.compile'd model vs eager, same step (tokens/s)",
                paired(samples, f"{variant}+compile", variant))
    if "mlm+static" in have:
        add("mlm static / packed", "MLM-only step on static shapes compiled as training compiles them (CUDA graphs "
            "on a GPU) vs eager on packed rows, the same token budget (tokens/s; the filler rows cost)",
            paired(samples, "mlm+static", "mlm_packed"))
    return out


def utilisation_targets(rows: list[RowResult], profiles: list[StepProfile], peaks: dict[str, float | None],
                        device: torch.device, bf16_missing: str | None) -> list[Ratio]:
    """MFU of the MLM (and, on a GPU, masked MLM+JEPA) steps against their precision's peak, and
    attention's share of every profiled step, each with its target. On a GPU each way the step ran
    (eager, compiled, static shapes) is judged: training compiles there by default. On a CPU the bf16
    targets hold where bf16 matrix products run >= 4x fp32's; elsewhere they print, not applicable."""
    out: list[Ratio] = []
    mfu = {r.name: r.mfu for r in rows if r.mfu is not None}
    bf16_off = bf16_targets_off(peaks, device, bf16_missing)
    if device.type == "cuda":
        ways = (("", ""), ("+compile", ", compiled"), ("+static", ", static shapes compiled (CUDA graphs)"))
        wanted = [(f"{name}{tag}", f"{what}{how}", target) for name, what, target in
                  (("mlm", "MLM step", 0.40), ("mlm_jepa_masked", "masked MLM+JEPA step", 0.35))
                  for tag, how in ways if tag == "" or f"{name}{tag}" in mfu]
    else:
        wanted = [("mlm", "MLM step, fp32", 0.50), ("mlm+bf16", "MLM step, bf16 autocast", 0.25)]
    for name, what, target in wanted:
        applies = not (name.endswith("+bf16") and bf16_off)
        why = "" if applies else f"; not applicable here: {bf16_off}"
        value = mfu.get(name, math.nan)
        if math.isnan(value) and applies:
            continue  # the row did not run (or has no peak): nothing to judge
        check = at_least(target) if applies else not_here(at_least(target))
        label, met = check(value)
        out.append(Ratio(f"{name} MFU", f"{what}: model FLOP/s over the measured peak of its precision{why}",
                         value, label, met))
    for profile in profiles:
        step = profile.row.split("+")[0]
        out.append(Ratio(f"attention share {profile.row}", f"attention's part of the {profile.row} step's operator "
                         "time (torch.profiler, forward and backward)", profile.share("attention"),
                         *(at_most(0.25)(profile.share("attention")) if step == "mlm" else (None, None))))
    return out
