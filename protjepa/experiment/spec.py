"""The experiment file: which recipes to compare, under which shared budget, data and seeds.

::

    name: paper_small
    baseline: mlm                     # the variant every other one is compared with
    seeds: [0]                        # default seeds of every variant
    budget: {wall_clock: 6min}        # replaces each recipe's budget: the runs are matched on it
    data: {crop: 256}                 # merged into each recipe's data section
    encoder: {name: esm2, preset: esm2_8m}   # optional: replaces each recipe's encoder
    set: {train.monitor_every: 20}    # optional: key path -> value, for every recipe
    variants:
      - recipe: mlm                   # a file relative to this one, a shipped recipe's name, or a mapping
        seeds: [0, 1]
      - recipe: mlm_jepa_masked
        name: masked                  # default: the recipe's name
        set: {objectives.1.weight: 0.3}
    probe: {tasks: [stability, scope40], fast: true}
    tie_tolerance: 0.005
    output: runs/experiments/{name}   # relative to the working directory

Every (variant, seed) becomes one recipe: the recipe file, then the experiment's
``encoder``, ``data``, ``budget`` and ``set``, then the variant's ``set``, then its seed.
Errors name the experiment file, the line and the key path.

Continued pretraining: an optional ``base:`` names an MLM-only recipe that is trained once,
in ``<output>/base/``, under its own budget; every variant run then starts from the base's
final weights (the encoder with its LM head, and an EMA teacher copied from them), with its
objectives' predictors and the optimizer new, under the experiment's budget::

    base:
      recipe: mlm                     # like a variant's recipe: a file, a shipped name, or a mapping
      budget: {tokens: 6e6}           # the base's own: tokens or steps, never wall_clock
      seed: 0
      set: {optim.lr: 1.0e-3}         # key path -> value, after the experiment's encoder, data and set
      run_dir: ../continued_small/base   # optional, relative to the output folder: share another experiment's base

The base recipe is resolved like a variant's (the experiment's ``encoder``, ``data`` and
``set``, then ``base.set``); each variant gets ``encoder.checkpoint: <output>/base/export``,
so every variant must have the base's encoder section; a variant with ``from_base: false``
trains from scratch beside them (paper_gpu runs both arms in one file). The learning rate of continued
pretraining is the experiment's to set: the paper used 3e-4 from scratch and 10x lower,
3e-5, to continue a pretrained model (``set: {optim.lr: 3.0e-5}``).

Or a base pretrained elsewhere, not trained here (``protjepa base`` writes one from a run; any encoder
checkpoint protjepa loads will do): its path, relative to the experiment file, and nothing else::

    base:
      checkpoint: ../../docs/results/bases/esm2_8m_swissprot50

Each variant gets ``encoder.checkpoint`` set to it; loading the experiment loads it into each encoder
shape that continues from it (a missing, altered or misfitting base is a one-line error then), and the
run probes it into ``<output>/base/`` as it would a trained base.

Learning control: each distinct encoder section among the variants (a *shape*) is also
built untrained, once per experiment seed (seeded as ``protjepa train`` seeds a run's
initial weights), exported to ``<output>/controls/random_init_<shape>/seed<k>/export/``
and probed like the runs; the report sets every variant (and the base) against it.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import Field, StrictInt, ValidationError, field_validator, model_validator

from protjepa import shipped
from protjepa.build import build_encoder
from protjepa.errors import UserError
from protjepa.evaluation.compare import DEFAULT_TIE
from protjepa.evaluation.settings import SuiteSettings
from protjepa.evaluation.tasks import TaskSpec, task_registry
from protjepa.paths import FOLDER_NAME
from protjepa.recipe import (
    BudgetConfig,
    DataConfig,
    Recipe,
    Seed,
    apply_override,
    load_recipe,
    parse_recipe,
)
from protjepa.yamlio import Strict, YamlLines, located, located_first_error, read_yaml


# Runs compared on their own step's memory would differ in batch size as well as in what is compared.
UNMATCHED_FILL = ("fill sizes each run's batches by its own step's memory, so the runs would train on different "
                  "batches: give a number (data: {batch_tokens: N})")


class ExperimentError(UserError, ValueError):
    """An experiment file that cannot be run; the message names the file, the line and the key path."""


class VariantSpec(Strict):
    recipe: str | dict[str, Any] = Field(
        description="a recipe file (relative to the experiment file), a shipped recipe's name, or a mapping")
    name: str | None = Field(None, pattern=FOLDER_NAME, description="default: the recipe's name")
    seeds: list[Seed] | None = Field(None, min_length=1, description="default: the experiment's seeds")
    baseline: str | None = Field(None, description="compare with this variant instead (itself: with none)")
    from_base: bool = Field(True, description="start from the base's weights (with a base:); false: from scratch")
    set: dict[str, Any] = Field(default_factory=dict, description="key path -> value, after the experiment's")

    @field_validator("set")
    @classmethod
    def _budget_is_shared(cls, value: dict[str, Any]) -> dict[str, Any]:
        if any(key.split(".")[0] == "budget" for key in value):
            raise ValueError("the budget is shared by every run: set it at the top level")
        return value


class BaseSpec(Strict):
    """The MLM-only pretraining every variant continues from: trained here (recipe and budget), or a
    pretrained checkpoint."""

    recipe: str | dict[str, Any] | None = Field(
        None, description="an MLM-only recipe: a file (relative to the experiment file), a shipped name, or a mapping")
    budget: BudgetConfig | None = Field(None, description="the base's own budget: tokens or steps")
    seed: Seed = 0
    set: dict[str, Any] = Field(default_factory=dict, description="key path -> value, after the experiment's")
    run_dir: str | None = Field(
        None, description="where the base is trained, relative to the output folder (default: base); another "
                          "experiment's base folder (../continued_small/base) shares that base, trained once, while "
                          "their base recipes are the same")
    checkpoint: str | None = Field(
        None, description="a pretrained base, not trained here: a folder of protjepa base (or any encoder "
                          "checkpoint protjepa loads), relative to the experiment file")

    @field_validator("budget")
    @classmethod
    def _not_wall_clock(cls, value: BudgetConfig | None) -> BudgetConfig | None:
        if value is not None and value.wall_clock is not None:
            raise ValueError("give tokens or steps: a wall_clock base would depend on how busy the machine was")
        return value

    @model_validator(mode="after")
    def _trained_here_or_pretrained(self):
        if self.checkpoint is not None:
            given = [key for key in ("recipe", "budget", "run_dir", "set") if getattr(self, key)]
            if given:
                raise ValueError(f"checkpoint: a pretrained base is not trained here, so it takes no {', '.join(given)}")
        elif self.recipe is None or self.budget is None:
            raise ValueError("give recipe and budget (a base trained here) or checkpoint (a pretrained base)")
        return self

    @field_validator("set")
    @classmethod
    def _budget_is_own(cls, value: dict[str, Any]) -> dict[str, Any]:
        if any(key.split(".")[0] == "budget" for key in value):
            raise ValueError("give the base's budget under base.budget, not set:")
        return value


class ProbeOptions(Strict):
    """Which tasks to probe each final encoder on, and how (see ``protjepa probe``)."""

    tasks: list[str] = Field(default_factory=list, description="task names; empty: the default suite")
    task_files: list[str] = Field(default_factory=list, description="extra task specs, relative to this file")
    check_leakage: bool = Field(True, description="count probe sequences found in the pretraining corpus")
    layer: Union[StrictInt, Literal["last", "half"]] = Field("last", description="last | half | a depth (0: the "
                                                                                 "embeddings; negative: from the top)")
    fast: bool = Field(True, description="subsample large tasks with each spec's fast caps")
    max_train: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)
    max_records: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    drop_leaked: bool = False
    drop_identity: float | None = Field(None, gt=0, le=1)

    def settings(self) -> SuiteSettings:
        """The suite's settings (the layer goes to the embedder)."""
        return SuiteSettings(fast=self.fast, max_train=self.max_train, max_test=self.max_test,
                             max_records=self.max_records, seed=self.seed, drop_leaked=self.drop_leaked,
                             drop_identity=self.drop_identity)


class ExperimentSpec(Strict):
    name: str = Field(pattern=FOLDER_NAME)
    description: str = ""
    baseline: str
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    budget: BudgetConfig = Field(description="the budget of every run")
    data: dict[str, Any] = Field(default_factory=dict, description="merged into each recipe's data section")
    encoder: dict[str, Any] | None = Field(None, description="replaces each recipe's encoder section")
    set: dict[str, Any] = Field(default_factory=dict, description="key path -> value, for every recipe")
    base: BaseSpec | None = Field(None, description="continued pretraining: the variants start from its weights")
    variants: list[VariantSpec] = Field(min_length=2)
    probe: ProbeOptions = Field(default_factory=ProbeOptions)
    tie_tolerance: float = Field(DEFAULT_TIE, ge=0)
    output: str = "runs/experiments/{name}"

    @field_validator("data")
    @classmethod
    def _data_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        DataConfig.model_validate(value)  # each key must be a data setting with a valid value
        if value.get("batch_tokens") == "fill":
            raise ValueError(f"batch_tokens: {UNMATCHED_FILL}")
        return value

    @model_validator(mode="after")
    def _budget_not_in_set(self):
        if any(key.split(".")[0] == "budget" for key in self.set):
            raise ValueError("set: give the shared budget under budget:, not set:")
        return self


# --------------------------------------------------------------------------- resolved


@dataclass(frozen=True)
class RunPlan:
    """One (variant, seed): the recipe to train and where."""

    variant: str
    seed: int
    recipe: Recipe
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.variant}/seed{self.seed}"


BASE = "base"
CONTROLS = "controls"


def encoder_section(recipe: Recipe) -> dict[str, Any]:
    """The recipe's resolved ``encoder:`` section without its weights (``checkpoint``): the encoder's shape."""
    return {k: v for k, v in recipe.encoder.model_dump(by_alias=True, exclude_none=True).items() if k != "checkpoint"}


@dataclass(frozen=True)
class ControlPlan:
    """One random-init encoder: a compared shape built with one seed and never trained."""

    shape: str  # the folder's suffix: controls/random_init_<shape>/
    seed: int
    recipe: Recipe  # a variant's recipe of this shape: the encoder is built from it
    folder: Path

    @property
    def label(self) -> str:
        return f"random_init_{self.shape}/seed{self.seed}"

    @property
    def export(self) -> Path:
        return self.folder / "export"


@dataclass
class Variant:
    name: str
    baseline: str | None  # None: this variant is a baseline
    source: str  # the recipe file, or where the inline recipe is
    seeds: list[int]
    shape: str = ""  # its encoder shape: the random-init control it is set against
    from_base: bool = False  # starts from the experiment's base


@dataclass
class Experiment:
    spec: ExperimentSpec
    path: Path
    output: Path
    variants: list[Variant]
    runs: list[RunPlan]
    tasks: list[TaskSpec]
    base: RunPlan | None = None  # continued pretraining: the run every variant starts from
    base_source: str = ""
    controls: list[ControlPlan] = field(default_factory=list)
    base_checkpoint: Path | None = None  # a pretrained base (base.checkpoint): its plan is not trained, only probed

    @property
    def trained_runs(self) -> list[RunPlan]:
        """Every run that trains: the base first (unless pretrained), then the variants' runs."""
        return ([self.base] if self.base and self.base_checkpoint is None else []) + self.runs

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def runs_of(self, variant: str) -> list[RunPlan]:
        return [r for r in self.runs if r.variant == variant]


# --------------------------------------------------------------------------- loading


def _error(path: Path, lines: YamlLines, loc: tuple, message: str) -> ExperimentError:
    return ExperimentError(located(str(path), lines, loc, message))


def _overrides(spec: ExperimentSpec, budget: BudgetConfig, own: VariantSpec | BaseSpec) -> list[tuple[str, Any]]:
    """The experiment's and then the variant's (or the base's) settings as (key path, value) overrides."""
    out: list[tuple[str, Any]] = []
    if spec.encoder is not None:
        out.append(("encoder", spec.encoder))
    out += [(f"data.{key}", value) for key, value in spec.data.items()]
    out.append(("budget", budget.model_dump(exclude_none=True)))
    out += list({**spec.set, **own.set}.items())
    return out


def _resolve_recipe(path: Path, variant: VariantSpec | BaseSpec, overrides: list[tuple[str, Any]],
                    where: str) -> Recipe:
    """The variant's recipe with the experiment's settings (seed and name still the recipe's)."""
    try:
        if isinstance(variant.recipe, str):
            recipe = load_recipe(shipped.find(variant.recipe, base=path.parent), overrides)
        else:
            raw = copy.deepcopy(variant.recipe)
            for key_path, value in overrides:
                apply_override(raw, key_path, value)
            recipe = parse_recipe(raw, "inline recipe")
    except UserError as exc:
        raise ExperimentError(f"{where}: {exc}") from None
    if recipe.data.batch_tokens == "fill":
        raise ExperimentError(f"{where}: data.batch_tokens: {UNMATCHED_FILL}")
    return recipe


def load_experiment(path: str | Path, output: str | Path | None = None, budget: dict | None = None) -> Experiment:
    """Read, validate and resolve an experiment file: every run's recipe, the probe tasks, the output folder.
    ``budget`` (a ``budget:`` mapping) replaces the file's shared budget."""
    path = shipped.find(path)
    raw, text = read_yaml(path, ExperimentError, "experiment")
    lines = YamlLines(text)
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: an experiment must be a mapping, got {type(raw).__name__}")
    if budget is not None:
        raw["budget"] = budget
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        raise ExperimentError(located_first_error(exc, str(path), lines)) from None

    variants: list[Variant] = []
    runs: list[RunPlan] = []
    out_dir = Path(output) if output is not None else Path(spec.output.format(name=spec.name))
    pretrained = spec.base is not None and spec.base.checkpoint is not None
    base = _base_plan(spec, path, lines, out_dir) if spec.base is not None and not pretrained else None
    checkpoint = Path(os.path.normpath(path.parent / spec.base.checkpoint)) if pretrained else None
    # Every variant starts from the base's final weights (its export, or the pretrained checkpoint: encoder and
    # LM head).
    start = [("encoder.checkpoint", str(checkpoint or base.run_dir / "export"))] if spec.base is not None else []
    for i, vspec in enumerate(spec.variants):
        line = lines.line(("variants", i))
        where = f"{path}:{line}: variants[{i}]"
        from_base = spec.base is not None and vspec.from_base
        recipe = _resolve_recipe(path, vspec, _overrides(spec, spec.budget, vspec) + start * from_base, where)
        name = vspec.name or recipe.name
        if from_base and base is not None:
            _check_base_shape(base.recipe, recipe, f"{where} ({name})")
        if not re.fullmatch(FOLDER_NAME, name):
            raise _error(path, lines, ("variants", i, "name"), f"variant name {name!r}: use letters, digits, _ . - "
                         "(not only dots: it names the variant's folder under runs/)")
        if any(v.name == name for v in variants):
            raise _error(path, lines, ("variants", i), f"two variants are named {name!r}: give one a name:")
        seeds = vspec.seeds or spec.seeds
        if len(set(seeds)) != len(seeds):
            raise _error(path, lines, ("variants", i, "seeds"), "a seed is listed twice")
        source = vspec.recipe if isinstance(vspec.recipe, str) else f"{path}:{line} (inline)"
        variants.append(Variant(name, vspec.baseline, source, seeds, from_base=from_base))
        for seed in seeds:
            run_recipe = recipe.model_copy(update={"seed": seed, "name": f"{name}-seed{seed}"})
            runs.append(RunPlan(name, seed, run_recipe, out_dir / "runs" / name / f"seed{seed}"))
    _assign_baselines(spec, variants, path, lines)
    controls = _controls(spec, variants, runs, out_dir)
    base_source = ""
    if pretrained:
        base = _pretrained_plan(checkpoint, variants, runs, out_dir, f"{path}:{lines.line(('base', 'checkpoint'))}")
        base_source = spec.base.checkpoint
    elif spec.base is not None:
        base_source = spec.base.recipe if isinstance(spec.base.recipe, str) else \
            f"{path}:{lines.line(('base', 'recipe'))} (inline)"
    return Experiment(spec, path, out_dir, variants, runs, _probe_tasks(spec, path, lines), base, base_source,
                      controls, checkpoint)


def _base_plan(spec: ExperimentSpec, path: Path, lines: YamlLines, out_dir: Path) -> RunPlan:
    """The base run: its recipe with the experiment's settings, its own budget, set and seed."""
    base = spec.base
    recipe = _resolve_recipe(path, base, _overrides(spec, base.budget, base), f"{path}:{lines.line(('base',))}: base")
    if any(o.name != "mlm" for o in recipe.objectives):
        raise _error(path, lines, ("base", "recipe"), "the base must be MLM-only pretraining; its objectives: "
                     + ", ".join(o.name for o in recipe.objectives))
    recipe = recipe.model_copy(update={"seed": base.seed, "name": f"{BASE}-seed{base.seed}"})
    # Relative to the output folder: experiments side by side share a base wherever their outputs are.
    return RunPlan(BASE, base.seed, recipe, Path(os.path.normpath(out_dir / (base.run_dir or BASE))))


def _pretrained_plan(checkpoint: Path, variants: list[Variant], runs: list[RunPlan], out_dir: Path,
                     where: str) -> RunPlan | None:
    """A pretrained base's plan: never trained, probed into ``<output>/base``. The base is loaded into each
    encoder shape that continues from it, so that a missing, altered or misfitting base is an error here,
    before anything trains; the plan's recipe is the first such run's (the base's encoder)."""
    if not checkpoint.exists():
        raise ExperimentError(f"{where}: base.checkpoint: {checkpoint}: no such base (make one from a finished MLM "
                              "run with protjepa base RUN FOLDER, or name another)")
    from_base = [r for r in runs if any(v.name == r.variant and v.from_base for v in variants)]
    checked: list[dict[str, Any]] = []
    for run in from_base:
        section = encoder_section(run.recipe)
        if section in checked:
            continue
        checked.append(section)
        try:
            build_encoder(run.recipe)  # loads encoder.checkpoint: the base, every part's digest checked
        except UserError as exc:
            raise ExperimentError(f"{where}: base.checkpoint: {exc}") from None
    if not from_base:
        return None
    recipe = from_base[0].recipe
    return RunPlan(BASE, 0, recipe.model_copy(update={"name": f"{BASE}-pretrained"}), out_dir / BASE)


def _check_base_shape(base: Recipe, recipe: Recipe, where: str) -> None:
    """A variant continues from the base's weights, so it must have the base's encoder section."""
    mine, theirs = encoder_section(recipe), encoder_section(base)
    key = next((k for k in list(theirs) + list(mine) if theirs.get(k) != mine.get(k)), None)
    if key is not None:
        raise ExperimentError(f"{where}: encoder.{key}: {mine.get(key)} here, {theirs.get(key)} in the base: "
                              "every variant continues from the base's weights, so it needs the base's encoder")


def _shape_name(section: dict[str, Any]) -> str:
    """``esm2_4x128``, ``esm2_35m``, ``modern_35m``: a folder name for an encoder section."""
    name = str(section.get("name") or section.get("_component_", "encoder").rsplit(".", 1)[-1])
    preset = section.get("preset")
    parts = [name] if not preset else [preset] if str(preset).startswith(name) else [name, str(preset)]
    if "num_layers" in section or "embed_dim" in section:
        parts.append(f"{section.get('num_layers', '')}x{section.get('embed_dim', '')}")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(parts))


def _controls(spec: ExperimentSpec, variants: list[Variant], runs: list[RunPlan], out_dir: Path) -> list[ControlPlan]:
    """One random-init encoder per experiment seed for each distinct encoder section among the variants;
    sets each variant's ``shape``."""
    shapes: list[tuple[dict[str, Any], str, Recipe]] = []
    for variant in variants:
        recipe = next(r.recipe for r in runs if r.variant == variant.name)
        section = encoder_section(recipe)
        known = next((name for other, name, _ in shapes if other == section), None)
        if known is None:  # a new shape; two sections with one name (other options) get _2, _3
            taken = {name for _, name, _ in shapes}
            known = stem = _shape_name(section)
            n = 1
            while known in taken:
                n += 1
                known = f"{stem}_{n}"
            shapes.append((section, known, recipe))
        variant.shape = known
    return [ControlPlan(name, seed, recipe, out_dir / CONTROLS / f"random_init_{name}" / f"seed{seed}")
            for _, name, recipe in shapes for seed in spec.seeds]


def _assign_baselines(spec: ExperimentSpec, variants: list[Variant], path: Path, lines: YamlLines) -> None:
    """Each variant's baseline by name; the baseline itself (or a variant naming itself) has none."""
    names = [v.name for v in variants]
    if spec.baseline not in names:
        raise _error(path, lines, ("baseline",), f"no variant named {spec.baseline!r} (variants: {', '.join(names)})")
    for i, variant in enumerate(variants):
        if variant.baseline is not None and variant.baseline not in names:
            raise _error(path, lines, ("variants", i, "baseline"),
                         f"no variant named {variant.baseline!r} (variants: {', '.join(names)})")
        baseline = variant.baseline or spec.baseline
        variant.baseline = None if baseline == variant.name else baseline


def _probe_tasks(spec: ExperimentSpec, path: Path, lines: YamlLines) -> list[TaskSpec]:
    try:
        registry = task_registry([path.parent / f for f in spec.probe.task_files])
        return registry.select(spec.probe.tasks)
    except UserError as exc:
        raise _error(path, lines, ("probe", "tasks"), str(exc)) from None
