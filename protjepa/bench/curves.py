"""How cost grows: tokens/s of training steps against crop length and against batch tokens,
and of the data pipeline's stages and loader workers, measured in one run and plotted.

The step rows are the suite's (our MLM step, masked MLM+JEPA, transformers' MLM step), each
at every point of a curve, all interleaved ABBA in one :func:`measure` call, so the points of
a curve share the machine's load. The pipeline stages run one after another on the CPU:
reading (decompress, parse, split), then cropping, encoding and collating padded rows, then
masking too, then packing too, then the whole packed pipeline behind a DataLoader with 1..N
workers. Each reports non-padding tokens/s after its first batch (the shuffle buffer's fill).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from protjepa.bench.batches import corpus_batches
from protjepa.bench.config import SIZES, BenchConfig, recipe_for
from protjepa.bench.steps import model_step, peer_model, peer_step
from protjepa.bench.rows import Row
from protjepa.bench.timing import measure, summarize
from protjepa.build import build_model
from protjepa.data.collate import PAD_MULTIPLE, round_up
from protjepa.data.corpus import make_corpus, split_sequences
from protjepa.paths import data_root, resolve

CROPS = (128, 256, 512, 1024)
CROP_BUDGET = 8192  # tokens per batch along the crop curve (the recipes' data.batch_tokens)
BUDGETS = (2048, 4096, 8192, 16384)  # along the batch curve, at crop 256
PIPELINE_BUDGET = 65536  # paper_gpu's tokens per step, at crop 512
STEP_ROWS = ("mlm", "mlm_jepa_masked", "peer_hf_mlm")


@dataclass
class Point:
    curve: str  # "crop", "batch" or "pipeline"
    series: str  # a step row, or a pipeline stage
    x: int  # crop, batch tokens, or loader workers
    tokens_per_s: float
    range: tuple[float, float] = (0.0, 0.0)


def step_points(config: BenchConfig, device: torch.device) -> list[Point]:
    """Every step row at every crop (CROP_BUDGET tokens a batch) and at every budget (crop 256), interleaved."""
    mlm_recipe = recipe_for(config, "mlm")
    count = config.repeats * config.steps
    layouts = {f"crop{c}": (c, max(CROP_BUDGET, round_up(c + 2, PAD_MULTIPLE))) for c in CROPS}
    layouts |= {f"batch{b}": (256, b) for b in BUDGETS}
    batches = {key: corpus_batches(mlm_recipe, crop, budget, False, count, device, config.data_root)
               for key, (crop, budget) in layouts.items()}
    templates = {}
    for variant in ("mlm", "mlm_jepa_masked"):
        torch.manual_seed(config.seed)
        recipe = recipe_for(config, variant)
        templates[variant] = (build_model(recipe).to(device), recipe.optim)
    torch.manual_seed(config.seed)
    peer = peer_model(SIZES[config.size], device)
    rows = []
    for layout in layouts:
        for name in STEP_ROWS:
            if name == "peer_hf_mlm":
                run = peer_step(copy.deepcopy(peer), mlm_recipe.optim, device, config.dtype)
            elif name == "mlm_jepa_masked" and layout.startswith("batch"):
                continue  # the batch curve: MLM steps only
            else:
                model, optim = templates[name]
                run = model_step(copy.deepcopy(model), optim, device, config.dtype)
            rows.append(Row(f"{name}@{layout}", name, layout, run))
    results = summarize(rows, measure(rows, batches, config, device), config.steps, None)
    points = []
    for row, result in zip(rows, results):
        curve = "crop" if row.layout.startswith("crop") else "batch"
        points.append(Point(curve, row.what, int(row.layout.removeprefix(curve)), result.tokens_per_s,
                            result.tokens_per_s_range))
    return points


def tokens_per_s(batches, count: int) -> float:
    """Non-padding tokens/s of batches 2..count+1 of an iterator of Batches (the first fills the shuffle buffer)."""
    iterator = iter(batches)
    next(iterator)
    start, tokens = time.perf_counter(), 0
    for batch in islice(iterator, count):
        tokens += batch.tokens.numel() - batch.num_padding
    return tokens / (time.perf_counter() - start)


def pipeline_points(config: BenchConfig, batches: int = 8, workers: tuple[int, ...] = (1, 2)) -> list[Point]:
    """Tokens/s of each stage of the data pipeline at crop 512 and PIPELINE_BUDGET tokens a batch."""
    recipe = recipe_for(config, "mlm")
    data = recipe.data.model_copy(update=dict(crop=512, batch_tokens=PIPELINE_BUDGET, num_workers=0))
    root = data_root(config.data_root)

    def corpus(masking: bool, packing: bool):
        return make_corpus(data.model_copy(update=dict(packing=packing)), recipe.masking if masking else None,
                           "train", seed=recipe.seed, root=str(root))

    sequences = split_sequences(resolve(root, data.train), unknown_letters=data.unknown_letters)
    start, residues = time.perf_counter(), 0
    for sequence in islice(sequences, batches * PIPELINE_BUDGET // 400):  # about as many as the stages read
        residues += len(sequence)
    points = [Point("pipeline", "read", 0, residues / (time.perf_counter() - start))]
    for stage, masking, packing in (("+ crop, encode, collate", False, False), ("+ masking", True, False),
                                    ("+ packing", True, True)):
        points.append(Point("pipeline", stage, 0, tokens_per_s(corpus(masking, packing), batches)))
    for n in workers:
        loader = DataLoader(corpus(True, True), batch_size=None, num_workers=n)
        points.append(Point("pipeline", "DataLoader", n, tokens_per_s(loader, batches)))
    return points


def plot(points: list[Point], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    # one colour a series in both step panels
    colours = {s: f"C{i}" for i, s in enumerate(dict.fromkeys(p.series for p in points if p.curve != "pipeline"))}
    for ax, curve, xlabel in zip(axes[:2], ("crop", "batch"), ("crop (residues)", "batch tokens (padded)")):
        for series in dict.fromkeys(p.series for p in points if p.curve == curve):
            line = [p for p in points if p.curve == curve and p.series == series]
            ax.errorbar([p.x for p in line], [p.tokens_per_s for p in line], fmt="o-", label=series, capsize=3,
                        color=colours[series],
                        yerr=[[p.tokens_per_s - p.range[0] for p in line], [p.range[1] - p.tokens_per_s for p in line]])
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("non-padding tokens/s")
        ax.legend()
    pipeline = [p for p in points if p.curve == "pipeline"]
    labels = [p.series + (f", {p.x} worker{'s' if p.x > 1 else ''}" if p.x else "") for p in pipeline]
    axes[2].barh(labels, [p.tokens_per_s for p in pipeline])
    axes[2].axvline(PIPELINE_BUDGET, color="k", linestyle="--", label=f"{PIPELINE_BUDGET:,} tokens/s = 1 step/s")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("tokens/s (crop 512, 65,536-token batches)")
    axes[2].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_curves(config: BenchConfig, device: torch.device, png: str | Path) -> dict:
    points = step_points(replace(config, device=device.type), device) + pipeline_points(config)
    plot(points, png, f"{config.size}, {device.type} {config.dtype}: cost as work grows")
    return dict(config=asdict(config), points=[asdict(p) for p in points], png=str(png))
