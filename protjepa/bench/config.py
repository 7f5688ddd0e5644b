"""What a bench run measures: the suites' settings, the sizes, the recipes its step rows train."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from protjepa import shipped
from protjepa.data.collate import PAD_MULTIPLE, round_up
from protjepa.encoders.esm2 import PRESETS
from protjepa.errors import UserError
from protjepa.recipe import Recipe, load_recipe

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
    backends: tuple[str, ...] = ("math", "sdpa", "sdpa_fp32", "xformers")
    compile: bool = False  # add torch.compile'd rows beside the eager ones, and static-shape ones (CUDA graphs)
    bf16_rows: bool = False  # add bf16-autocast rows beside the fp32 ones (a CPU with native bf16)
    embed_sequences: int = 0  # > 0: also time the probe Embedder against transformers' on this many sequences
    peer: bool = True
    checks: bool = False  # xformers-vs-SDPA numerics and host-sync checks (CUDA only)
    profile: bool = False  # split every step row's time by torch.profiler (else the MLM rows' only)
    fill_memory: bool = False  # GPU: rows = as many as every step row's training step fits in memory
    peak_flops: float | None = None  # FLOP/s for MFU; default: looked up by GPU name
    data_root: str | None = None
    recipes: str = str(RECIPES_DIR)
    seed: int = 0


SUITES: dict[str, dict] = {
    # This CPU, a few minutes: ESM-2 8M, 8 x 256 residues per batch, fp32 and (where native) bf16.
    "cpu": dict(device="cpu", dtype="fp32", crop=256, rows=8, repeats=5, steps=1, bf16_rows=True, embed_sequences=96),
    # A GPU in bf16 at the paper's crop; run once per size in GPU_SIZES. Math attention keeps its
    # [B, H, L, L] scores for the backward: left out (ask for it with --backends).
    "gpu": dict(device="cuda", dtype="bf16", crop=512, packing_crop=512, packing_tokens=None, rows=32, repeats=10,
                steps=5, warmup=3, backends=("sdpa", "xformers"), checks=True, embed_sequences=512),
    # A smoke run: tiny batches, one repetition.
    "quick": dict(crop=64, packing_crop=128, packing_tokens=None, rows=4, repeats=1, steps=1, embed_sequences=8),
}
GPU_SIZES = ("esm2_35m", "esm2_150m", "esm2_650m")


def dtype_of(dtype: Dtype) -> torch.dtype:
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def head_dim(config: BenchConfig) -> int:
    """The width of one attention head at the suite's size."""
    return SIZES[config.size]["embed_dim"] // SIZES[config.size]["attention_heads"]


def recipe_for(config: BenchConfig, variant: str, attention: str = "auto", static_shapes: bool = False) -> Recipe:
    """The variant's recipe at the suite's size; ``static_shapes``: trained compiled on static shapes
    (packed rows, ``data.static_shapes``, ``train.compile: true``), validated as such a run's."""
    path = Path(config.recipes) / VARIANTS[variant]
    if not path.is_file():
        raise BenchError(f"{path}: no such recipe (the bench reads recipes/{VARIANTS[variant]}; pass --recipes DIR)")
    sizes = SIZES[config.size]
    overrides = [(f"encoder.{k}", v) for k, v in sizes.items()] + [("encoder.attention", attention)]
    if static_shapes:
        overrides += [("data.packing", True), ("data.static_shapes", True), ("train.compile", True)]
    return load_recipe(path, overrides)


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
