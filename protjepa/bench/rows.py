"""The rows of a suite: each a name, the batch list it reads and what it runs per batch."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from protjepa.attention import resolve_backend
from protjepa.bench.batches import Prepared, corpus_batches
from protjepa.bench.config import (VARIANTS, SIZES, BenchConfig, dtype_of, head_dim, layout_budget, layout_suffix,
                                   recipe_for, step_budget)
from protjepa.bench.steps import encoder_pass, latent_metrics, model_step, peer_model, peer_step, target_forward
from protjepa.build import build_encoder, build_model
from protjepa.flops import FORWARD_BACKWARD
from protjepa.model import ProtJEPA
from protjepa.precision import cpu_bf16_missing
from protjepa.training.trainer import compile_step, replays_cuda_graphs

# The order of the rows that the ratios pair up; the other rows follow.
ADJACENT = ("peer_hf_mlm", "mlm", "mlm+bf16", "peer_hf_mlm+bf16", "mlm+compile", "mlm_packed", "mlm+static",
            "target_forward_last", "mlm_jepa_masked", "latent_metrics", "mlm_jepa_masked+bf16", "mlm_jepa_masked+compile",
            "mlm_jepa_masked+static", "target_forward_half", "mlm_jepa_ema_half", "mlm_jepa_all", "jepa_only")
# Step rows that --compile adds compiled rows of: padded rows compiled (+compile), and static shapes
# compiled as training compiles them (+static: CUDA graphs on a GPU).
COMPILED = ("mlm", "mlm_jepa_masked")
# Rows repeated under bf16 autocast beside the fp32 ones (BenchConfig.bf16_rows).
BF16_ROWS = ("mlm", "peer_hf_mlm", "mlm_jepa_masked")


@dataclass
class Row:
    name: str
    what: str
    layout: str  # key of the batch list it reads
    run: Callable[[Prepared], None]
    flops: Callable[[Prepared], float] | None = None  # model FLOPs per batch (protjepa.flops), when counted
    bf16: bool = False  # runs under bf16 autocast: its MFU is against the bf16 peak
    compiled: bool = False  # runs a torch.compile'd step: one that fails to compile is left out, not fatal


def with_bf16_rows(config: BenchConfig, device: torch.device) -> bool:
    """bf16 rows beside fp32 ones: asked for, on a CPU that multiplies bf16 natively."""
    return config.bf16_rows and config.dtype == "fp32" and device.type == "cpu" and cpu_bf16_missing() is None


def attention_candidates(config: BenchConfig, device: torch.device, precisions: list[str]) -> list[tuple[str, str]]:
    """(backend, precision) pairs that run as themselves here: xformers off CUDA falls back to sdpa, and
    sdpa_fp32 in fp32 is sdpa; both left out."""
    return [(backend, dtype) for dtype in precisions for backend in config.backends
            if resolve_backend(backend, device, dtype_of(dtype), head_dim(config)) == backend
            and not (backend == "sdpa_fp32" and dtype == "fp32")]


def step_flops(model: ProtJEPA) -> Callable[[Prepared], float] | None:
    """A row's model FLOPs per batch: those of ``model``'s training step (an encoder that declares no count
    counted by FlopCounterMode first, as training counts it: its rows get TFLOP/s and MFU too); None when a
    part of the model cannot be counted (the row then reports no FLOPs)."""
    model.count_encoder_flops()
    if model.uncounted_parts():
        return None
    return lambda p: model.step_flops(p.counts)


def with_static_rows(config: BenchConfig) -> bool:
    """+static rows beside the compiled ones: asked for with --compile, but not under --fill-memory
    (CUDA graphs keep each graph's memory between its replays; those rows are sized for one step at a time)."""
    return config.compile and not config.fill_memory


def step_batches(config: BenchConfig, device: torch.device) -> dict[str, list[Prepared]]:
    """The batch lists the rows read, by layout: the step rows' padded and packed batches (and, with
    --compile, static-shape ones), and the padded-vs-packed rows' when their crop or budget differs."""
    suffix = layout_suffix(config)
    # layout -> (crop, token budget, packed, static shapes)
    layouts = {"padded": (config.crop, step_budget(config), False, False),
               "packed": (config.crop, step_budget(config), True, False)}
    if with_static_rows(config):
        layouts["static"] = (config.crop, step_budget(config), True, True)
    if suffix:
        layouts[f"padded{suffix}"] = (config.packing_crop, layout_budget(config), False, False)
        layouts[f"packed{suffix}"] = (config.packing_crop, layout_budget(config), True, False)
    count = config.num_batches or config.repeats * config.steps
    mlm_recipe = recipe_for(config, "mlm")
    return {key: corpus_batches(mlm_recipe, crop, budget, packing, count, device, config.data_root, static)
            for key, (crop, budget, packing, static) in layouts.items()}


def build_rows(config: BenchConfig, device: torch.device) -> list[Row]:
    """Every row of the suite, its models on ``device`` (the batches they read: :func:`step_batches`)."""
    mlm_recipe = recipe_for(config, "mlm")
    sizes = SIZES[config.size]
    d, layers = sizes["embed_dim"], sizes["num_layers"]
    suffix = layout_suffix(config)

    rows: dict[str, Row] = {}

    def add(name: str, what: str, layout: str, run: Callable[[Prepared], None], flops=None) -> None:
        rows[name] = Row(name, what, layout, run, flops, bf16=config.dtype == "bf16" or name.endswith("+bf16"),
                         compiled=name.endswith(("+compile", "+static")))

    bf16 = with_bf16_rows(config, device)
    models: dict[str, ProtJEPA] = {}
    for variant, recipe_file in VARIANTS.items():
        torch.manual_seed(config.seed)
        recipe = recipe_for(config, variant)
        models[variant] = model = build_model(recipe).to(device)
        flops = step_flops(model)
        add(variant, f"training step, recipes/{recipe_file}", "padded",
            model_step(model, recipe.optim, device, config.dtype), flops)
        if bf16 and variant in BF16_ROWS:
            add(f"{variant}+bf16", f"training step, recipes/{recipe_file}, bf16 autocast", "padded",
                model_step(copy.deepcopy(model), recipe.optim, device, "bf16"), flops)
        if config.compile and variant in COMPILED:
            # The whole model, as training compiles it (Composer's compile_config): encoder and objectives.
            compiled = torch.compile(copy.deepcopy(model))
            add(f"{variant}+compile", f"training step, recipes/{recipe_file}, torch.compile'd model", "padded",
                model_step(compiled, recipe.optim, device, config.dtype), flops)
        if with_static_rows(config) and variant in COMPILED:
            options, line = compile_step(recipe_for(config, variant, static_shapes=True),
                                         "gpu" if device.type == "cuda" else "cpu")
            add(f"{variant}+static", f"training step, recipes/{recipe_file}, data.static_shapes: {line}", "static",
                model_step(torch.compile(copy.deepcopy(model), **options), recipe.optim, device, config.dtype,
                           cuda_graphs=replays_cuda_graphs(options)), flops)
    mlm = models["mlm"]
    add("latent_metrics", "the latent scores and unigram entropy the objectives log, alone, on the masked rows",
        "padded", latent_metrics(d, len(mlm.encoder.alphabet), device))
    train_flops = step_flops(mlm)  # the peer rows do the MLM step's work
    add("mlm_packed", "training step, recipes/mlm.yaml, packed rows", "packed",
        model_step(copy.deepcopy(mlm), mlm_recipe.optim, device, config.dtype), train_flops)
    for name, depth in (("target_forward_last", layers), ("target_forward_half", mlm.encoder.resolve_layer("half"))):
        add(name, f"no-grad target pass to depth {depth} (JEPA floor)", "padded",
            target_forward(mlm.encoder, depth, device, config.dtype),
            lambda p, depth=depth: mlm.encoder.forward_flops(p.counts, depth))
    if config.peer:
        torch.manual_seed(config.seed)
        peer = peer_model(sizes, device)
        add("peer_hf_mlm", "transformers EsmForMaskedLM training step, same batches", "padded",
            peer_step(peer, mlm_recipe.optim, device, config.dtype), train_flops)
        if bf16:
            add("peer_hf_mlm+bf16", "transformers EsmForMaskedLM training step, same batches, bf16 autocast",
                "padded", peer_step(copy.deepcopy(peer), mlm_recipe.optim, device, "bf16"), train_flops)
    if suffix:
        if config.peer:
            add(f"peer_hf_mlm{suffix}", f"transformers EsmForMaskedLM training step, padded rows, crop "
                f"{config.packing_crop}", f"padded{suffix}", peer_step(copy.deepcopy(peer), mlm_recipe.optim, device,
                                                                       config.dtype), train_flops)
        for layout in ("padded", "packed"):
            add(f"mlm_{layout}{suffix}", f"training step, recipes/mlm.yaml, {layout} rows, crop {config.packing_crop}",
                layout + suffix,
                model_step(copy.deepcopy(mlm), mlm_recipe.optim, device, config.dtype), train_flops)
    precisions = [config.dtype] + (["bf16"] if bf16 else [])
    for backend, dtype in attention_candidates(config, device, precisions):
        torch.manual_seed(config.seed)
        encoder = build_encoder(recipe_for(config, "mlm", attention=backend)).to(device).train()
        tag = "+bf16" if dtype != config.dtype else ""
        for backward, kind in ((False, "fwd"), (True, "fwd_bwd")):
            add(f"encoder_{kind}[{backend}]{tag}", f"encoder {'forward+backward' if backward else 'forward'}, "
                f"{backend} attention{', bf16 autocast' if tag else ''}", "padded",
                encoder_pass(encoder, backward, device, dtype),
                lambda p, m=FORWARD_BACKWARD if backward else 1, e=encoder: m * e.forward_flops(p.counts, layers))
    # Rows compared with each other run next to each other, so that load changes hit both alike.
    first = [name for name in ADJACENT if name in rows]
    return [rows[n] for n in first] + [row for n, row in rows.items() if n not in first]
