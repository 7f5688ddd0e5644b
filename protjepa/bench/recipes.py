"""Any recipe's training step, timed: ``protjepa bench --recipe FILE`` (repeatable).

Each recipe is built as ``train`` builds it (a ``_component_`` encoder, plugin objectives, its seed) and
its step timed on the first batches of its own training corpus at its own data settings (crop,
``batch_tokens``, packing, static shapes, masking: the batches the trainer would draw), with the suite's
clock (:func:`~protjepa.bench.timing.measure`: warm-up, then repetitions in ABBA order). Its model FLOPs
per step are the count the trainer's FLOP budget uses (:meth:`~protjepa.model.ProtJEPA.step_flops`;
FlopCounterMode's for an encoder that declares none), and its MFU is against the peak of the row's
precision (:func:`~protjepa.bench.peak.row_peaks`, on a CPU measured at the recipe's own batch and width).

Rows: each recipe's step in the bench's precision; under bf16 autocast beside it (a CPU with native
bf16, as the suite's bf16 rows); with ``--compile``, compiled as training compiles that recipe. Ratios:
each recipe's row against the first recipe's row of the same kind, and each recipe's bf16 and compiled
rows against its own step.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from protjepa.bench.batches import Prepared, corpus_batches
from protjepa.bench.config import BenchConfig
from protjepa.bench.peak import row_peaks
from protjepa.bench.profile import StepProfile, profile_row
from protjepa.bench.ratios import Ratio, paired
from protjepa.bench.rows import Row, step_flops, with_bf16_rows
from protjepa.bench.steps import model_step
from protjepa.bench.suite import resolve_device
from protjepa.bench.timing import RowResult, Samples, measure, summarize
from protjepa.build import build_model
from protjepa.model import ProtJEPA
from protjepa.precision import choose_bf16, cpu_bf16_missing
from protjepa.recipe import Recipe, load_recipe
from protjepa.training.trainer import compile_step, fill_gpu_memory, replays_cuda_graphs

# Row kinds beside a recipe's own step: name suffix -> (ratio label, how the row runs, how the step runs).
VARIANTS = {"+bf16": ("bf16 / fp32", "under bf16 autocast", "in fp32"),
            "+compile": ("compile / eager", "torch.compile'd as training compiles it", "eager")}
# The bench's settings that a recipe run uses (the rest are the suite's: sizes, crops, backends, the peer).
RUN_SETTINGS = ("device", "dtype", "repeats", "steps", "warmup", "compile", "profile", "peak_flops", "data_root")


@dataclass
class BenchedRecipe:
    """One recipe of the run, as its rows were built from it."""

    name: str  # its rows' name (the recipe's name; the file's where two recipes share one)
    file: str
    encoder: str
    objectives: str
    batches: str  # the batches its rows read
    flops: str  # how its model FLOPs are counted (the line of ProtJEPA.count_encoder_flops where it counts them)
    peaks: dict[str, float | None]  # FLOP/s its rows' MFU is against, by precision


@dataclass
class RecipeRunResult:
    config: dict
    recipes: list[BenchedRecipe]
    rows: list[RowResult]
    ratios: list[Ratio]
    notes: list[str] = field(default_factory=list)
    profiles: list[StepProfile] = field(default_factory=list)


def load_recipes(files: Sequence[str], overrides: Sequence[tuple[str, object]], device: torch.device) -> list[Recipe]:
    """Every recipe as ``train`` validates it, ``overrides`` (``--set``) applied to each, refused as ``train``
    refuses it on ``device`` (the bench's, which replaces the recipe's ``train.device``). All are read before
    any is built: a bad one stops the run at once, in one line naming its file, line and key."""
    return [load_recipe(file, [*overrides, ("train.device", device.type)], "--set", this_machine=True)
            for file in files]


def row_names(recipes: Sequence[Recipe], files: Sequence[str]) -> list[str]:
    """The recipes' names; their files' names where two recipes share a name; numbered where those agree too."""
    names = [recipe.name for recipe in recipes]
    if len(set(names)) < len(names):
        names = [Path(file).stem for file in files]
    if len(set(names)) < len(names):
        names = [f"{name}#{i}" for i, name in enumerate(names, start=1)]
    return names


def layout_of(recipe: Recipe) -> str:
    """padded, packed or static (packed rows of static shapes), as the suite names its batch lists."""
    return "static" if recipe.data.static_shapes else "packed" if recipe.data.packing else "padded"


def batches_line(recipe: Recipe) -> str:
    data = recipe.data
    layout = {"static": "static-shape packed", "packed": "packed", "padded": "padded"}[layout_of(recipe)]
    return f"{layout} rows, crop {data.crop}, {data.batch_tokens} tokens a batch (the recipe's data and masking)"


def flops_note(model: ProtJEPA, counted: str | None) -> str:
    """How the recipe's model FLOPs are counted: ``counted`` (:meth:`ProtJEPA.count_encoder_flops`'s line, for an
    encoder that declares no count), and the parts that count none, whose rows then have no FLOPs or MFU."""
    uncounted = model.uncounted_parts()
    lines = [counted] if counted else [] if uncounted else ["model FLOPs: as the encoder and objectives declare them"]
    if uncounted:
        lines.append(f"model FLOPs not counted: no count declared by {', '.join(uncounted)} (its rows: no FLOP/step, "
                     "TFLOP/s or MFU)")
    return "; ".join(lines)


def recipe_rows(name: str, file: str, layout: str, recipe: Recipe, model: ProtJEPA, config: BenchConfig,
                device: torch.device, bf16_rows: bool) -> dict[str, Row]:
    """The rows of one recipe by kind ("": its step in the bench's precision; VARIANTS' beside it), all reading
    the recipe's batches (``layout``) and counting its step's FLOPs."""
    flops = step_flops(model)
    what = f"training step, {file}"
    rows = {"": Row(name, what, layout, model_step(model, recipe.optim, device, config.dtype), flops,
                    bf16=config.dtype == "bf16")}
    if bf16_rows:
        rows["+bf16"] = Row(f"{name}+bf16", f"{what}, bf16 autocast", layout,
                            model_step(copy.deepcopy(model), recipe.optim, device, "bf16"), flops, bf16=True)
    if config.compile:
        compiled = recipe.model_copy(update={"train": recipe.train.model_copy(update={"compile": True})})
        options, line = compile_step(compiled, "gpu" if device.type == "cuda" else "cpu")
        rows["+compile"] = Row(f"{name}+compile", f"{what}, {line}", layout,
                               model_step(torch.compile(copy.deepcopy(model), **options), recipe.optim, device,
                                          config.dtype, cuda_graphs=replays_cuda_graphs(options)),
                               flops, bf16=config.dtype == "bf16", compiled=True)
    return rows


def run_recipes(files: Sequence[str], overrides: Sequence[tuple[str, object]], config: BenchConfig,
                progress: Callable[[str], None] | None = None) -> RecipeRunResult:
    """The recipes of ``files`` timed side by side (``overrides``: ``--set``, applied to every one);
    ``progress`` gets a line at each stage."""
    device = resolve_device(config.device)
    choose_bf16(config.dtype, device.type, "--dtype")  # bf16 on a CPU without it: an error
    config = replace(config, device=device.type)
    recipes = load_recipes(files, overrides, device)
    report = progress or (lambda line: None)
    bf16_rows = with_bf16_rows(config, device)
    missing = cpu_bf16_missing() if device.type == "cpu" else None
    notes = [f"no bf16 rows beside the fp32 ones: {missing}"] if config.bf16_rows and missing else []
    count = config.num_batches or config.repeats * config.steps
    benched: list[BenchedRecipe] = []
    rows: dict[str, dict[str, Row]] = {}
    batches: dict[str, list[Prepared]] = {}
    for number, (name, file, recipe) in enumerate(zip(row_names(recipes, files), files, recipes), start=1):
        report(f"recipes: building {name} ({file})")
        torch.manual_seed(recipe.seed)  # its initial weights, as train draws them
        model = build_model(recipe)
        flops_line = model.count_encoder_flops()  # on the CPU, before the model moves, as train counts it
        if recipe.data.batch_tokens == "fill":  # on a GPU: load_recipes refused it on the CPU
            recipe, line = fill_gpu_memory(recipe, model, config.dtype == "bf16")
            notes.append(f"{name}: data.batch_tokens fill: {line}")
        model = model.to(device)
        layout = f"{layout_of(recipe)}:{number}"  # the recipe's own batches: its layout and its place in the run
        rows[name] = recipe_rows(name, file, layout, recipe, model, config, device, bf16_rows)
        data = recipe.data
        batches[layout] = corpus_batches(recipe, data.crop, data.batch_tokens, data.packing, count, device,
                                         config.data_root, data.static_shapes)
        encoder = model.encoder
        benched.append(BenchedRecipe(
            name=name, file=str(file),
            encoder=f"{recipe.encoder.name or recipe.encoder.component}: depth {encoder.num_layers}, "
                    f"{encoder.embed_dim} wide, {sum(p.numel() for p in encoder.parameters()):,} parameters",
            objectives=", ".join(f"{spec.id} x {spec.weight:g}" for spec in recipe.objectives),
            batches=batches_line(recipe),
            flops=flops_note(model, flops_line),
            peaks=row_peaks(config.peak_flops, device, config.dtype, recipe.data.batch_tokens, encoder.embed_dim)))
    if config.peak_flops is None and device.type == "cpu":
        notes.append("MFU against this CPU's own matrix products at each recipe's shapes, [batch tokens, width] @ "
                     "[width, 4 width], timed in this run per precision")
    # Rows compared with each other run next to each other: every recipe's step, then the bf16 ones, the compiled.
    order = [own[kind] for kind in ("", *VARIANTS) for own in rows.values() if kind in own]
    failed: dict[str, str] = {}
    samples = measure(order, batches, replace(config, size="recipes"), device, progress, failed)
    notes += [f"{name}: left out, its warm-up raised {error}" for name, error in failed.items()]
    results = [result for recipe in benched for result in summarize(
        [row for row in rows[recipe.name].values() if row.name not in failed], samples, config.steps, recipe.peaks)]
    profiles = [profile_row(own[""].name, own[""].run, batches[own[""].layout], config.steps, device)
                for own in rows.values()] if config.profile else []
    settings = {key: value for key, value in asdict(config).items() if key in RUN_SETTINGS}
    return RecipeRunResult(
        config=settings | dict(bf16_rows=bf16_rows, files=[str(f) for f in files],
                               overrides=[f"{k}={v}" for k, v in overrides]),
        recipes=benched, rows=results, ratios=recipe_ratios([r.name for r in benched], samples), notes=notes,
        profiles=profiles)


def recipe_ratios(names: list[str], samples: Samples) -> list[Ratio]:
    """Each recipe's rows against the first recipe's of the same kind, then each recipe's VARIANTS rows against
    its own step (tokens/s; medians over repetitions of the ratio within each)."""
    out = []
    first = names[0]
    for name in names[1:]:
        for kind in ("", *VARIANTS):
            if f"{name}{kind}" in samples and f"{first}{kind}" in samples:
                how = f", both {VARIANTS[kind][1]}" if kind else ""
                out.append(Ratio(f"{name}{kind} / {first}{kind}", f"recipe {name}'s step over recipe {first}'s{how}, "
                                 "each on its own batches (tokens/s)",
                                 paired(samples, f"{name}{kind}", f"{first}{kind}")))
    for name in names:
        for kind, (label, how, otherwise) in VARIANTS.items():
            if f"{name}{kind}" in samples and name in samples:
                out.append(Ratio(f"{name} {label}", f"recipe {name}'s step {how} vs {otherwise}, the same batches "
                                 "(tokens/s)", paired(samples, f"{name}{kind}", name)))
    return out
