"""Training-step throughput, measured side by side in one process.

A *row* is one thing timed per batch: a whole training step of a recipe (forward,
backward, gradient clipping, AdamW step, EMA update where the recipe has a teacher), the
no-grad target pass alone, an encoder forward (or forward and backward) under one
attention backend, or the peer: ``transformers.EsmForMaskedLM`` of the same size, batch
and dtype, trained the same way. Rows read fixed batches drawn from the real corpus
(padded, or packed under the same token budget), built and moved to the device before
any clock starts, so only the step is timed.

Every repetition runs every row once on the same batches (the next ones of the pool: by
default each batch is timed once), in forward order on even repetitions and in reverse
order on odd ones (ABBA), so drift in the machine's load hits the rows compared alike. A
ratio is the median over repetitions of the ratio within each repetition. Throughput
counts non-padding tokens (residues plus <cls>/<eos>).
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import Tensor

from protjepa import shipped
from protjepa.attention import AttentionLayout, resolve_backend
from protjepa.batch import Batch
from protjepa.build import build_encoder, build_model
from protjepa.data.collate import PAD_MULTIPLE, round_up
from protjepa.data.corpus import make_corpus
from protjepa.encoders.base import Encoder
from protjepa.encoders.esm2 import PRESETS
from protjepa.errors import UserError
from protjepa.model import ProtJEPA
from protjepa.recipe import OptimConfig, Recipe, load_recipe

RECIPES_DIR = shipped.folder()  # the repository's recipes/, installed as package data

SIZES: dict[str, dict[str, int]] = {**PRESETS, "tiny": dict(num_layers=2, embed_dim=64, attention_heads=4)}

# The training-step rows: row name -> recipe file (in the recipes folder).
VARIANTS: dict[str, str] = {
    "mlm": "mlm.yaml",
    "mlm_jepa_masked": "mlm_jepa_masked.yaml",
    "mlm_jepa_ema_half": "mlm_jepa_ema_half.yaml",
    "mlm_jepa_all": "mlm_jepa_all.yaml",
    "jepa_only": "jepa_only.yaml",
}

# Dense bf16 peak of the GPUs we know, for model FLOPs utilisation (name substring -> FLOP/s).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
}

Dtype = Literal["fp32", "bf16"]


class BenchError(UserError, ValueError):
    """Benchmark settings that cannot run on this machine."""


@dataclass
class BenchConfig:
    size: str = "esm2_8m"
    device: str = "cpu"
    dtype: Dtype = "fp32"
    crop: int = 256  # residues per sequence in the step rows
    rows: int = 8  # token budget: rows x (crop + <cls>/<eos>, rounded up to 8)
    packing_crop: int = 512  # crop of the padded-vs-packed rows
    packing_tokens: int | None = 8192  # their token budget (the recipes' data.batch_tokens); None: the step rows'
    repeats: int = 5
    steps: int = 1  # steps per timed measurement
    warmup: int = 1  # untimed runs of every row first
    num_batches: int | None = None  # distinct batches per layout; None: repeats x steps, each timed once
    backends: tuple[str, ...] = ("math", "sdpa", "xformers")
    compile: bool = False  # add torch.compile'd rows beside the eager ones
    peer: bool = True
    checks: bool = False  # xformers-vs-SDPA numerics and host-sync checks (CUDA only)
    peak_flops: float | None = None  # FLOP/s for MFU; default: looked up by GPU name
    data_root: str | None = None
    recipes: str = str(RECIPES_DIR)
    seed: int = 0


SUITES: dict[str, dict] = {
    # This CPU, a few minutes: ESM-2 8M, 8 x 256 residues per batch.
    "cpu": dict(device="cpu", dtype="fp32", crop=256, rows=8, repeats=5, steps=1),
    # A GPU in bf16 at the paper's crop; run once per size in GPU_SIZES. Math attention keeps its
    # [B, H, L, L] scores for the backward: left out (ask for it with --backends).
    "gpu": dict(device="cuda", dtype="bf16", crop=512, packing_crop=512, packing_tokens=None, rows=32, repeats=10,
                steps=5, warmup=3, backends=("sdpa", "xformers"), checks=True),
    # A smoke run: tiny batches, one repetition.
    "quick": dict(crop=64, packing_crop=128, packing_tokens=None, rows=4, repeats=1, steps=1),
}
GPU_SIZES = ("esm2_35m", "esm2_150m")
# The order of the rows that the ratios pair up; the other rows follow.
ADJACENT = ("peer_hf_mlm", "mlm", "mlm+compile", "mlm_packed", "target_forward_last", "mlm_jepa_masked",
            "mlm_jepa_masked+compile", "target_forward_half", "mlm_jepa_ema_half", "mlm_jepa_all", "jepa_only")


# --------------------------------------------------------------------------- batches


@dataclass
class Prepared:
    """A batch on the device, with what the clocks and FLOP counts need, computed on the host."""

    batch: Batch
    tokens: int  # non-padding tokens
    attention_pairs: int  # sum over sequences of length^2: the attention work a perfect kernel does
    masked: int  # selected positions
    peer_inputs: dict[str, Tensor]  # transformers' input_ids, attention_mask, labels (-100 off the selection)


def prepare(batch: Batch, device: torch.device) -> Prepared:
    lengths = torch.bincount(batch.residue_sequence, minlength=batch.num_sequences) + 2  # + <cls>, <eos>
    labels = torch.full((batch.tokens.numel(),), -100, dtype=torch.long)
    labels[batch.masked_index] = batch.tokens.flatten()[batch.masked_index]
    peer_inputs = dict(input_ids=batch.inputs, attention_mask=(~batch.padding_mask).long(),
                       labels=labels.view_as(batch.tokens))
    return Prepared(
        batch=batch.to(device, non_blocking=False),
        tokens=batch.tokens.numel() - batch.num_padding,
        attention_pairs=int(lengths.square().sum()),
        masked=batch.masked_index.numel(),
        peer_inputs={k: v.to(device) for k, v in peer_inputs.items()},
    )


def step_budget(config: BenchConfig) -> int:
    """Tokens per batch of the step rows: ``rows`` rows of crop + <cls>/<eos>, padded to a multiple of 8."""
    return config.rows * round_up(config.crop + 2, PAD_MULTIPLE)


def layout_budget(config: BenchConfig) -> int:
    """Tokens per batch of the padded-vs-packed rows: ``packing_tokens``, else the step rows' (at least a row)."""
    if config.packing_tokens is not None:
        return config.packing_tokens
    return max(step_budget(config), round_up(config.packing_crop + 2, PAD_MULTIPLE))


def layout_suffix(config: BenchConfig) -> str:
    """"" when the padded-vs-packed rows read the step rows' batches, else "@<packing_crop>"."""
    same = (config.packing_crop, layout_budget(config)) == (config.crop, step_budget(config))
    return "" if same else f"@{config.packing_crop}"


def corpus_batches(recipe: Recipe, crop: int, budget: int, packing: bool, count: int, device: torch.device,
                   data_root: str | None) -> list[Prepared]:
    """The first ``count`` batches of the recipe's training corpus at ``crop``, under a budget of
    ``budget`` tokens (padding included), padded or packed, as the trainer's data would be."""
    data = recipe.data.model_copy(update=dict(crop=crop, batch_tokens=budget, packing=packing, num_workers=0))
    corpus = make_corpus(data, recipe.masking, "train", seed=recipe.seed, root=data_root)
    return [prepare(b, device) for b in islice(corpus, count)]


# --------------------------------------------------------------------------- FLOPs


def encoder_flops(embed_dim: int, depth: int, tokens: int, attention_pairs: int) -> float:
    """Forward FLOPs of ``depth`` ESM-2 blocks: 24 d^2 per token (q, k, v, out, 4x MLP)
    plus 4 d per attending pair (q k^T and attention x v); norms and activations left out."""
    return depth * (24.0 * embed_dim**2 * tokens + 4.0 * embed_dim * attention_pairs)


def lm_head_flops(embed_dim: int, vocab: int, positions: int) -> float:
    return 2.0 * positions * (embed_dim**2 + embed_dim * vocab)


# --------------------------------------------------------------------------- what rows run


def autocast(device: torch.device, dtype: Dtype):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


class OptimizerStep:
    """``loss(prepared)``, backward, gradient clipping, AdamW step, then ``after_step()``:
    the work of one training step, as the trainer does it."""

    def __init__(self, module: torch.nn.Module, loss: Callable[[Prepared], Tensor], optim: OptimConfig,
                 device: torch.device, dtype: Dtype, after_step: Callable[[], None] | None = None):
        self.loss = loss
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                           weight_decay=optim.weight_decay, fused=device.type == "cuda")
        self.grad_clip = optim.grad_clip
        self.device = device
        self.dtype = dtype
        self.after_step = after_step

    def __call__(self, prepared: Prepared) -> None:
        with autocast(self.device, self.dtype):
            loss = self.loss(prepared)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.after_step is not None:
            self.after_step()


def model_step(model: ProtJEPA, optim: OptimConfig, device: torch.device, dtype: Dtype) -> OptimizerStep:
    """A ProtJEPA training step; the EMA teacher (if any) moves at its mid-budget momentum."""
    after = None
    if model.teacher is not None:
        momentum = model.momentum_at(0.5)
        after = lambda: model.ema_update(momentum)  # noqa: E731
    return OptimizerStep(model.train(), lambda p: model(p.batch).loss, optim, device, dtype, after)


def peer_model(encoder_sizes: dict[str, int], device: torch.device):
    """``transformers.EsmForMaskedLM`` with ESM-2's published settings at these sizes."""
    try:
        from transformers import EsmConfig, EsmForMaskedLM
    except ImportError as exc:
        raise BenchError(f"the peer needs transformers ({exc}); pass --no-peer to skip it") from None
    d = encoder_sizes["embed_dim"]
    config = EsmConfig(
        vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=d, intermediate_size=4 * d,
        num_hidden_layers=encoder_sizes["num_layers"], num_attention_heads=encoder_sizes["attention_heads"],
        position_embedding_type="rotary", token_dropout=True, layer_norm_eps=1e-5, emb_layer_norm_before=False,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=1026,
    )
    return EsmForMaskedLM(config).to(device).train()


def peer_step(peer, optim: OptimConfig, device: torch.device, dtype: Dtype) -> OptimizerStep:
    """The peer's training step: its own MLM loss, on labels that are -100 off the selected positions."""
    return OptimizerStep(peer, lambda p: peer(**p.peer_inputs).loss, optim, device, dtype)


def target_forward(encoder: Encoder, depth: int, device: torch.device, dtype: Dtype) -> Callable[[Prepared], None]:
    """The JEPA target pass alone: the unmasked tokens, no grad, stopped at ``depth``."""

    def run(p: Prepared) -> None:
        with torch.no_grad(), autocast(device, dtype):
            encoder(p.batch.tokens, p.batch.padding_mask, layout=AttentionLayout.from_batch(p.batch),
                    layers=(depth,), stop_at=depth)

    return run


def encoder_pass(encoder: Encoder, backward: bool, device: torch.device, dtype: Dtype) -> Callable[[Prepared], None]:
    """The encoder on the corrupted inputs: a no-grad forward, or a forward and a backward."""

    def run(p: Prepared) -> None:
        with torch.set_grad_enabled(backward), autocast(device, dtype):
            out = encoder(p.batch.inputs, p.batch.padding_mask, layout=AttentionLayout.from_batch(p.batch))
        if backward:
            out.last.float().square().mean().backward()
            encoder.zero_grad(set_to_none=True)

    return run


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    name: str
    what: str
    layout: str  # key of the batch list it reads
    run: Callable[[Prepared], None]
    flops: Callable[[Prepared], float] | None = None  # model FLOPs per batch, when well defined


@dataclass
class Ratio:
    name: str
    what: str
    value: float
    target: str | None = None  # e.g. ">= 1.3"
    met: bool | None = None


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
    seconds: list[float] = field(default_factory=list)  # each repetition's time, in the order run
    tokens: list[int] = field(default_factory=list)  # each repetition's non-padding tokens


@dataclass
class SuiteResult:
    size: str
    config: dict
    rows: list[RowResult]
    ratios: list[Ratio]
    checks: list[dict] = field(default_factory=list)


def recipe_for(config: BenchConfig, variant: str, attention: str = "auto") -> Recipe:
    path = Path(config.recipes) / VARIANTS[variant]
    if not path.is_file():
        raise BenchError(f"{path}: no such recipe (the bench reads recipes/{VARIANTS[variant]}; pass --recipes DIR)")
    sizes = SIZES[config.size]
    overrides = [(f"encoder.{k}", v) for k, v in sizes.items()] + [("encoder.attention", attention)]
    return load_recipe(path, overrides)


def build_rows(config: BenchConfig, device: torch.device) -> tuple[list[Row], dict[str, list[Prepared]]]:
    """Every row of the suite, and the batch lists they read."""
    mlm_recipe = recipe_for(config, "mlm")
    sizes = SIZES[config.size]
    d, layers = sizes["embed_dim"], sizes["num_layers"]
    suffix = layout_suffix(config)
    layouts = {"padded": (config.crop, step_budget(config), False), "packed": (config.crop, step_budget(config), True)}
    if suffix:
        layouts[f"padded{suffix}"] = (config.packing_crop, layout_budget(config), False)
        layouts[f"packed{suffix}"] = (config.packing_crop, layout_budget(config), True)
    count = config.num_batches or config.repeats * config.steps
    batches = {key: corpus_batches(mlm_recipe, crop, budget, packing, count, device, config.data_root)
               for key, (crop, budget, packing) in layouts.items()}

    def train_flops(p: Prepared) -> float:
        return 3 * (encoder_flops(d, layers, p.tokens, p.attention_pairs) + lm_head_flops(d, 33, p.masked))

    rows: dict[str, Row] = {}

    def add(name: str, what: str, layout: str, run: Callable[[Prepared], None], flops=None) -> None:
        rows[name] = Row(name, what, layout, run, flops)

    models: dict[str, ProtJEPA] = {}
    for variant, recipe_file in VARIANTS.items():
        torch.manual_seed(config.seed)
        recipe = recipe_for(config, variant)
        models[variant] = model = build_model(recipe).to(device)
        add(variant, f"training step, recipes/{recipe_file}", "padded",
            model_step(model, recipe.optim, device, config.dtype), train_flops if variant == "mlm" else None)
        if config.compile and variant in ("mlm", "mlm_jepa_masked"):
            compiled = copy.deepcopy(model)
            compiled.encoder.compile()
            add(f"{variant}+compile", f"training step, recipes/{recipe_file}, torch.compile'd encoder", "padded",
                model_step(compiled, recipe.optim, device, config.dtype), train_flops if variant == "mlm" else None)
    mlm = models["mlm"]
    add("mlm_packed", "training step, recipes/mlm.yaml, packed rows", "packed",
        model_step(copy.deepcopy(mlm), mlm_recipe.optim, device, config.dtype), train_flops)
    for name, depth in (("target_forward_last", layers), ("target_forward_half", mlm.encoder.resolve_layer("half"))):
        add(name, f"no-grad target pass to depth {depth} (JEPA floor)", "padded",
            target_forward(mlm.encoder, depth, device, config.dtype),
            lambda p, depth=depth: encoder_flops(d, depth, p.tokens, p.attention_pairs))
    if config.peer:
        torch.manual_seed(config.seed)
        peer = peer_model(sizes, device)
        add("peer_hf_mlm", "transformers EsmForMaskedLM training step, same batches", "padded",
            peer_step(peer, mlm_recipe.optim, device, config.dtype), train_flops)
    if suffix:
        if config.peer:
            add(f"peer_hf_mlm{suffix}", f"transformers EsmForMaskedLM training step, padded rows, crop "
                f"{config.packing_crop}", f"padded{suffix}", peer_step(copy.deepcopy(peer), mlm_recipe.optim, device,
                                                                       config.dtype), train_flops)
        for layout in ("padded", "packed"):
            add(f"mlm_{layout}{suffix}", f"training step, recipes/mlm.yaml, {layout} rows, crop {config.packing_crop}, "
                f"{layout_budget(config)} tokens per batch", layout + suffix,
                model_step(copy.deepcopy(mlm), mlm_recipe.optim, device, config.dtype), train_flops)
    for backend in config.backends:
        if resolve_backend(backend, device, dtype_of(config.dtype), d // sizes["attention_heads"]) != backend:
            continue  # e.g. xformers off CUDA: no kernels to time
        torch.manual_seed(config.seed)
        encoder = build_encoder(recipe_for(config, "mlm", attention=backend)).to(device).train()
        for backward, kind in ((False, "fwd"), (True, "fwd_bwd")):
            add(f"encoder_{kind}[{backend}]", f"encoder {'forward+backward' if backward else 'forward'}, {backend} "
                "attention", "padded", encoder_pass(encoder, backward, device, config.dtype),
                lambda p, m=3 if backward else 1: m * encoder_flops(d, layers, p.tokens, p.attention_pairs))
    # Rows compared with each other run next to each other, so that load changes hit both alike.
    first = [name for name in ADJACENT if name in rows]
    return [rows[n] for n in first] + [row for n, row in rows.items() if n not in first], batches


def dtype_of(dtype: Dtype) -> torch.dtype:
    return torch.bfloat16 if dtype == "bf16" else torch.float32


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(rows: list[Row], batches: dict[str, list[Prepared]], config: BenchConfig,
            device: torch.device) -> dict[str, list[tuple[float, int, float]]]:
    """Per row, per repetition: (seconds, non-padding tokens, model FLOPs) of ``config.steps`` steps."""

    def chunk(row: Row, rep: int) -> list[Prepared]:
        pool = batches[row.layout]
        return [pool[(rep * config.steps + i) % len(pool)] for i in range(config.steps)]

    for row in rows:
        for i in range(config.warmup):
            row.run(batches[row.layout][i % len(batches[row.layout])])
    synchronize(device)
    samples: dict[str, list[tuple[float, int, float]]] = {row.name: [] for row in rows}
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
    return samples


def summarize(rows: list[Row], samples: dict[str, list[tuple[float, int, float]]], steps: int,
              peak: float | None) -> list[RowResult]:
    out = []
    for row in rows:
        runs = samples[row.name]
        rates = [tokens / seconds for seconds, tokens, _ in runs]
        tflops = None if row.flops is None else statistics.median(f / s for s, _, f in runs) / 1e12
        out.append(RowResult(
            name=row.name, what=row.what, layout=row.layout,
            tokens_per_step=statistics.mean(t for _, t, _ in runs) / steps,
            tokens_per_s=statistics.median(rates), tokens_per_s_range=(min(rates), max(rates)),
            ms_per_step=1e3 * statistics.median(s for s, _, _ in runs) / steps,
            tflops=tflops, mfu=None if tflops is None or peak is None else tflops * 1e12 / peak,
            seconds=[s for s, _, _ in runs], tokens=[t for _, t, _ in runs],
        ))
    return out


def paired(samples, numerator: str, denominator: str) -> float:
    """Median over repetitions of tokens/s(numerator) / tokens/s(denominator)."""
    return statistics.median(
        (tn / sn) / (td / sd) for (sn, tn, _), (sd, td, _) in zip(samples[numerator], samples[denominator])
    )


def cost_over_floor(samples, step: str, base: str, extra: str) -> float:
    """Median over repetitions of time(step) / (time(base) + time(extra)), all on the same batches."""
    return statistics.median(s / (b + e) for (s, _, _), (b, _, _), (e, _, _)
                             in zip(samples[step], samples[base], samples[extra]))


def at_least(value: float, target: float) -> tuple[str, bool]:
    return f">= {target:g}", value >= target


def at_most(value: float, target: float) -> tuple[str, bool]:
    return f"<= {target:g}", value <= target


def ratios(samples, config: BenchConfig, device: torch.device) -> list[Ratio]:
    out: list[Ratio] = []

    def add(name: str, what: str, value: float, check=None):
        target, met = check(value) if check else (None, None)
        out.append(Ratio(name, what, value, target, met))

    have = set(samples)
    peer_target = 1.5 if device.type == "cuda" else 1.3
    suffix = layout_suffix(config)
    # (row suffix, our padded row, our packed row, ratio label, where)
    peer_pairs = [("", "mlm", "mlm_packed", "", f"crop {config.crop}")]
    if suffix:
        peer_pairs.append((suffix, f"mlm_padded{suffix}", f"mlm_packed{suffix}", f" (crop {config.packing_crop})",
                           f"crop {config.packing_crop}, {layout_budget(config)} tokens"))
    for key, padded, packed, label, where in peer_pairs:
        peer = f"peer_hf_mlm{key}"
        if peer in have:
            add(f"mlm / peer{label}", f"our MLM-only step vs transformers' ESM, the same padded batches, {where} "
                "(tokens/s)", paired(samples, padded, peer), lambda v: at_least(v, peer_target))
            add(f"mlm packed / peer{label}", f"our MLM-only step on packed rows vs transformers' ESM on padded rows, "
                f"the same token budget, {where} (tokens/s)", paired(samples, packed, peer),
                lambda v: at_least(v, peer_target))
    add("mlm_jepa_masked / floor", "masked-position MLM+JEPA step time / (MLM step + no-grad target pass to the "
        "last layer)", cost_over_floor(samples, "mlm_jepa_masked", "mlm", "target_forward_last"),
        lambda v: at_most(v, 1.10))
    add("mlm_jepa_ema_half / floor", "EMA-teacher half-depth MLM+JEPA step time / (MLM step + no-grad target "
        "pass to half depth)", cost_over_floor(samples, "mlm_jepa_ema_half", "mlm", "target_forward_half"),
        lambda v: at_most(v, 1.10))
    for variant in ("mlm_jepa_masked", "mlm_jepa_ema_half", "mlm_jepa_all", "jepa_only"):
        add(f"{variant} / mlm", f"step time of {variant} over the MLM-only step (the paper's JEPA: 1.8)",
            1 / paired(samples, variant, "mlm"))
    add("target_forward_last / mlm", "the no-grad target pass over the MLM-only step (time)",
        1 / paired(samples, "target_forward_last", "mlm"))
    packed, padded = (f"mlm_packed{suffix}", f"mlm_padded{suffix}") if suffix else ("mlm_packed", "mlm")
    add(f"packed / padded (crop {config.packing_crop})", "MLM-only step, packed vs padded rows of the real length "
        f"distribution, {layout_budget(config)} tokens per batch (tokens/s)", paired(samples, packed, padded),
        lambda v: at_least(v, 1.5))
    if suffix:
        add("packed / padded (step batches)", f"the same at the step rows' crop {config.crop} and budget (tokens/s)",
            paired(samples, "mlm_packed", "mlm"))
    for backend in config.backends:
        for kind in ("fwd", "fwd_bwd"):
            name, base = f"encoder_{kind}[{backend}]", f"encoder_{kind}[sdpa]"
            if backend != "sdpa" and name in have and base in have:
                add(f"{backend} / sdpa {kind}", f"encoder {kind}, {backend} vs sdpa attention (tokens/s)",
                    paired(samples, name, base))
    for variant in ("mlm", "mlm_jepa_masked"):
        if f"{variant}+compile" in have:
            add(f"{variant} compile / eager", "torch.compile'd encoder vs eager, same step (tokens/s)",
                paired(samples, f"{variant}+compile", variant))
    return out


# --------------------------------------------------------------------------- checks (CUDA)


def check_xformers(config: BenchConfig, batches: dict[str, list[Prepared]], device: torch.device) -> list[dict]:
    """xformers against SDPA in bf16, both against an fp32 math-attention reference on the
    same weights: xformers passes when its error is within 2x SDPA's (padded and packed rows)."""
    head_dim = SIZES[config.size]["embed_dim"] // SIZES[config.size]["attention_heads"]
    if resolve_backend("xformers", device, torch.bfloat16, head_dim) != "xformers":
        return [dict(name="xformers matches sdpa", passed=None, detail="xformers cannot run here: skipped")]
    torch.manual_seed(config.seed)
    encoder = build_encoder(recipe_for(config, "mlm", attention="math")).to(device).eval()

    def last(batch: Batch, backend: str, dtype: Dtype) -> Tensor:
        encoder.attention = backend
        with torch.no_grad(), autocast(device, dtype):
            return encoder(batch.inputs, batch.padding_mask, layout=AttentionLayout.from_batch(batch)).last

    results = []
    for layout in ("padded", "packed"):
        batch = batches[layout][0].batch
        real = ~batch.padding_mask
        reference = last(batch, "math", "fp32")[real]
        errors = {b: (last(batch, b, "bf16")[real].float() - reference).abs().max().item()
                  for b in ("sdpa", "xformers")}
        results.append(dict(name=f"xformers matches sdpa ({layout})", passed=errors["xformers"] <= 2 * errors["sdpa"],
                            detail=f"max |error| vs fp32 math: xformers {errors['xformers']:.3g}, "
                                   f"sdpa {errors['sdpa']:.3g}"))
    return results


def check_no_sync(rows: list[Row], batches: dict[str, list[Prepared]], device: torch.device) -> list[dict]:
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


# --------------------------------------------------------------------------- entry points


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: torch sees no CUDA device (this suite needs a GPU)")
    return torch.device(requested)


def peak_flops(config: BenchConfig, device: torch.device) -> float | None:
    if config.peak_flops is not None:
        return config.peak_flops
    if device.type != "cuda" or config.dtype != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def run_suite(config: BenchConfig) -> SuiteResult:
    if config.size not in SIZES:
        raise BenchError(f"--size {config.size!r}: expected {'|'.join(SIZES)}")
    device = resolve_device(config.device)
    if config.dtype == "bf16" and device.type != "cuda":
        raise BenchError("--dtype bf16: bf16 autocast is measured on a GPU only (the trainer uses fp32 on the CPU)")
    config = replace(config, device=device.type)
    rows, batches = build_rows(config, device)
    samples = measure(rows, batches, config, device)
    checks = []
    if config.checks and device.type == "cuda":
        checks = check_xformers(config, batches, device) + check_no_sync(rows, batches, device)
    return SuiteResult(config.size, asdict(config), summarize(rows, samples, config.steps, peak_flops(config, device)),
                       ratios(samples, config, device), checks)


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(),
                load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)
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
    lines = [f"machine: {info['cpu']} ({info['cpu_count']} CPUs, {info['torch_threads']} torch threads)"
             + (f", {info['gpu']}" if "gpu" in info else "") + f", torch {info['torch']}"]
    for result in results:
        cfg = result.config
        lines += ["", f"== {result.size}, {cfg['device']} {cfg['dtype']}, crop {cfg['crop']}, {cfg['rows']} rows, "
                  f"{cfg['repeats']} repetitions x {cfg['steps']} steps"]
        lines.append(f"{'row':<28} {'layout':<12} {'tokens/step':>11} {'tokens/s':>10} {'range':>17} "
                     f"{'ms/step':>9} {'TFLOP/s':>8} {'MFU':>6}")
        for r in result.rows:
            lo, hi = r.tokens_per_s_range
            tflops = f"{r.tflops:8.3f}" if r.tflops is not None else f"{'-':>8}"
            mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else f"{'-':>6}"
            lines.append(f"{r.name:<28} {r.layout:<12} {r.tokens_per_step:>11.0f} {r.tokens_per_s:>10.0f} "
                         f"{lo:>8.0f}-{hi:<8.0f} {r.ms_per_step:>9.1f} {tflops} {mfu}")
        lines.append("")
        lines.append(f"{'ratio':<36} {'value':>7}  {'target':<8} {'':<6} what")
        for q in result.ratios:
            verdict = "" if q.met is None else ("met" if q.met else "NOT MET")
            lines.append(f"{q.name:<36} {q.value:>7.3f}  {q.target or '':<8} {verdict:<6} {q.what}")
        for c in result.checks:
            verdict = "skip" if c["passed"] is None else ("pass" if c["passed"] else "FAIL")
            lines.append(f"check {c['name']}: {verdict} ({c['detail']})")
    return "\n".join(lines)


def to_json(results: list[SuiteResult], info: dict) -> dict:
    return dict(machine=info, runs=[asdict(r) for r in results])
