"""YAML recipes: one file names the encoder, the objectives and their weights, the data,
the optimiser and the budget. Validated by pydantic; every error names the file, the
line and the key path (``recipe.yaml:14: objectives[1].loss: expected cosine|mse|smooth_l1``).
"""
from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Sequence, Union

import yaml
from torch import nn
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictFloat, StrictInt, ValidationError, field_validator,
                      model_serializer, model_validator)

from protjepa import shipped
from protjepa.durations import parse_duration
from protjepa.errors import UserError
from protjepa.yamlio import Strict, YamlLines, located, located_first_error, read_yaml
from protjepa.registry import ENCODERS, OBJECTIVES, RegistryError, import_component, load_plugins

Number = Union[int, float]
Beta = Annotated[float, Field(ge=0, lt=1)]


class RecipeError(UserError, ValueError):
    """A recipe that cannot be used; the message is one line naming file, line and key path."""


class MaskingConfig(Strict):
    rate: float = Field(0.20, gt=0, lt=1, description="fraction of residues selected for prediction")
    mask_prob: float = Field(0.8, ge=0, le=1, description="selected -> <mask>")
    random_prob: float = Field(0.1, ge=0, le=1, description="selected -> a random amino acid")
    strategy: Literal["random", "span"] = "random"
    mean_span: float = Field(3.0, ge=1, description="mean span length (geometric) for strategy: span")

    @model_validator(mode="after")
    def _probs(self):
        if self.mask_prob + self.random_prob > 1:
            raise ValueError("mask_prob + random_prob must be at most 1")
        return self


class DataConfig(Strict):
    root: str | None = Field(None, description="data root; default: ../shared/data beside the repo")
    train: str = "pretrain_swissprot50/swissprot2014_50_train.fasta.gz"
    valid: str | None = "pretrain_swissprot50/swissprot2014_50_valid.fasta.gz"
    holdout_fraction: float = Field(0.0, ge=0, lt=1, description="hash-of-id split of train when valid is null")
    crop: int = Field(512, ge=8, description="residues per sequence (random crop of longer ones)")
    batch_tokens: int = Field(8192, ge=16, description="token budget per batch (padding included)")
    max_sequences: int | None = Field(None, ge=1, description="cap on sequences per batch")
    packing: bool = False
    unknown_letters: Literal["error", "x"] = "error"
    shuffle_buffer: int = Field(4096, ge=1)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_validation_source(self):
        if self.holdout_fraction > 0 and self.valid is not None:
            raise ValueError("holdout_fraction splits train only when valid is null (set valid: null)")
        return self


class OptimConfig(Strict):
    lr: float = Field(3e-4, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: Number = Field(0.02, ge=0, description="fraction of the budget (<1) or optimizer steps (>=1)")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)


class BudgetConfig(Strict):
    wall_clock: Union[str, StrictInt, StrictFloat, None] = Field(
        None, description="e.g. 90s, 30min, 8h, 1h30m; a bare number is seconds, as in --budget 90")
    tokens: Number | None = Field(None, gt=0, description="non-padding residues")
    steps: int | None = Field(None, gt=0)
    flops: Number | None = Field(None, gt=0, description="model FLOPs of the training steps (matmuls; docs/recipes.md)")
    _seconds: float | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("wall_clock", "tokens", "steps", "flops") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of wall_clock, tokens, steps, flops (got {', '.join(given) or 'none'})")
        if self.wall_clock is not None:
            self._seconds = parse_duration(self.wall_clock)
        return self

    @property
    def seconds(self) -> float | None:
        """``wall_clock`` in seconds, parsed once when validated; None for a token, step or FLOP budget."""
        return self._seconds

    def __str__(self) -> str:
        """``flops 4e+13``, ``tokens 8e+06``, ``wall_clock 5min``, ``steps 300``: the one unit given."""
        unit, value = next((k, v) for k, v in self.model_dump(exclude_none=True).items())
        return f"{unit} {value:g}" if isinstance(value, float) else f"{unit} {value}"


class ComponentSpec(BaseModel):
    """``_component_:`` a dotted path to a class or factory (torchtune's convention); the other keys
    are its keyword arguments. Composer's loggers and callbacks in ``train.loggers`` / ``train.callbacks``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    component: str = Field(alias="_component_")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    run_dir: str = "runs/{name}"
    checkpoint_at: list[float] = Field(default_factory=lambda: [0.125, 0.5, 1.0])
    log_every: int = Field(10, ge=1)
    monitor_every: int = Field(50, ge=1, description="steps between collapse monitors")
    monitor_sequences: int = Field(64, ge=2)
    compile: bool = False
    fsdp: dict[str, Any] | None = None
    threads: int | None = Field(None, ge=1)
    keep_checkpoints: int | None = Field(None, ge=0, description="keep the last K before the final; None: all")
    loggers: list[ComponentSpec] = Field(default_factory=list, description="Composer loggers: _component_ + arguments")
    callbacks: list[ComponentSpec] = Field(default_factory=list, description="Composer callbacks, likewise")

    @field_validator("checkpoint_at")
    @classmethod
    def _fractions(cls, v):
        for f in v:
            if not 0 < f <= 1:
                raise ValueError(f"checkpoint fractions must be in (0, 1], got {f}")
        return sorted(set(v))


class EncoderSpec(BaseModel):
    """``name:`` a registered encoder, or ``_component_:`` a dotted path to any factory."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str | None = None
    component: str | None = Field(None, alias="_component_")
    checkpoint: str | None = Field(None, description="local weights to load (fair-esm .pt or HF directory)")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.name is None) == (self.component is None):
            raise ValueError("give exactly one of name or _component_")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ObjectiveSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    id: str | None = Field(None, description="prefixes its metrics and published names; default: its name")
    weight: float = 1.0

    @model_validator(mode="after")
    def _id_defaults_to_name(self):
        if self.id is None:
            self.id = self.name
        return self

    @model_serializer(mode="wrap")
    def _id_when_given(self, handler):
        data = handler(self)
        if data.get("id") == self.name:
            del data["id"]  # a dumped recipe reads as it was written
        return data

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Recipe(Strict):
    name: str
    description: str = ""
    seed: int = 0
    plugins: list[str] = Field(default_factory=list, description="modules to import for third-party plugins")
    encoder: EncoderSpec
    objectives: list[ObjectiveSpec] = Field(min_length=1)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    budget: BudgetConfig = Field(default_factory=lambda: BudgetConfig(steps=1000))
    train: TrainConfig = Field(default_factory=TrainConfig)

    # Validated per-plugin configs, filled by load_recipe / validate_plugins.
    _objective_configs: list[BaseModel] = []
    _encoder_config: BaseModel | None = None

    @property
    def objective_configs(self) -> list[BaseModel]:
        return self._objective_configs

    @property
    def encoder_config(self) -> BaseModel | None:
        return self._encoder_config


# --------------------------------------------------------------------------- errors


def _raise(source: str, lines: YamlLines | None, loc: tuple, message: str) -> NoReturn:
    raise RecipeError(located(source, lines, loc, message))


# --------------------------------------------------------------------------- overrides


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``--set objectives.1.weight=0.3`` -> ("objectives.1.weight", 0.3): the value parsed as YAML."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected KEY.PATH=VALUE")
    path, text = assignment.split("=", 1)
    try:
        return path.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        raise RecipeError(f"--set {path}: {text!r} is not a YAML value") from None


def apply_override(raw: dict, path: str, value: Any) -> None:
    """("objectives.1.weight", 0.3) -> raw["objectives"][1]["weight"] = 0.3."""
    value = copy.deepcopy(value)  # one value may go into many recipes, and later overrides edit it in place
    keys = path.split(".")
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"--set {path}: {'.'.join(keys[:i]) or '(top)'} has no item {key}")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise RecipeError(f"--set {path}: {'.'.join(keys[:i])} is not a mapping or list")


# --------------------------------------------------------------------------- loading


def non_finite(node: Any, loc: tuple = ()) -> tuple[tuple, float] | None:
    """(key path, value) of the first NaN or infinity in a parsed YAML tree, or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return loc, node
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found = non_finite(child, loc + (key,))
        if found is not None:
            return found
    return None


def parse_recipe(raw: Any, source: str = "<recipe>", text: str | None = None) -> Recipe:
    lines = YamlLines(text) if text is not None else None
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: the recipe must be a mapping, got {type(raw).__name__}")
    found = non_finite(raw)  # every number of a recipe, plugin options included: no schema needs NaN or inf
    if found is not None:
        _raise(source, lines, found[0], f"{found[1]} is not a finite number")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(located_first_error(exc, source, lines)) from None
    for i, module in enumerate(recipe.plugins):
        try:
            load_plugins([module])
        except RegistryError as exc:
            _raise(source, lines, ("plugins", i), str(exc))
    configs = []
    for i, spec in enumerate(recipe.objectives):
        try:
            entry = OBJECTIVES.get(spec.name)
        except RegistryError as exc:
            _raise(source, lines, ("objectives", i, "name"), str(exc))
        cfg_cls = entry.config_cls
        try:
            configs.append(cfg_cls.model_validate(spec.options) if cfg_cls else None)
        except ValidationError as exc:
            raise RecipeError(located_first_error(exc, source, lines, ("objectives", i))) from None
    ids = [s.id for s in recipe.objectives]
    dupes = sorted({k for k in ids if ids.count(k) > 1})
    if dupes:
        i = ids.index(dupes[0], ids.index(dupes[0]) + 1)
        _raise(source, lines, ("objectives", i, "id"), f"objective id {dupes[0]!r} is used twice: give each an id")
    recipe._objective_configs = configs
    if recipe.encoder.name is not None:
        try:
            entry = ENCODERS.get(recipe.encoder.name)
        except RegistryError as exc:
            _raise(source, lines, ("encoder", "name"), str(exc))
        if entry.config_cls is not None:
            try:
                recipe._encoder_config = entry.config_cls.model_validate(recipe.encoder.options)
            except ValidationError as exc:
                raise RecipeError(located_first_error(exc, source, lines, ("encoder",))) from None
    else:
        _check_component(recipe.encoder, ("encoder",), source, lines, module_class=True)
    for section in ("loggers", "callbacks"):
        for i, spec in enumerate(getattr(recipe.train, section)):
            _check_component(spec, ("train", section, i), source, lines)
    _check_consumers(recipe, source, lines)
    return recipe


def _check_component(spec: EncoderSpec | ComponentSpec, loc: tuple, source: str, lines: YamlLines | None,
                     module_class: bool = False) -> None:
    """``_component_`` must import to a callable, and the other keys must fit its arguments; with
    ``module_class`` a class must be an ``nn.Module`` (an encoder factory). It is not called: what a
    function returns is checked when a run builds it."""
    try:
        factory = import_component(spec.component)
    except RegistryError as exc:
        _raise(source, lines, (*loc, "_component_"), str(exc))
    if not callable(factory) or (module_class and inspect.isclass(factory) and not issubclass(factory, nn.Module)):
        _raise(source, lines, (*loc, "_component_"),
               f"{spec.component} is a {type(factory).__name__}, not "
               + ("an encoder factory (an nn.Module class, or a function returning one)" if module_class else "callable"))
    try:
        inspect.signature(factory).bind(**spec.options)
    except TypeError as exc:
        _raise(source, lines, loc, f"{spec.component}: {exc}")
    except ValueError:  # no signature to check (a builtin or C factory): the call will tell
        pass


def _check_consumers(recipe: Recipe, source: str, lines: YamlLines | None) -> None:
    """A regulariser that reads e.g. ``jepa.pred`` needs an earlier objective that publishes it."""
    published: set[str] = set()
    for i, (spec, cfg) in enumerate(zip(recipe.objectives, recipe._objective_configs)):
        cls = OBJECTIVES.get(spec.name).builder
        for field, name in sorted(cls.reads(cfg).items()):
            if name in published or name.startswith("student."):
                continue
            _raise(source, lines, ("objectives", i, field), f"{name!r} is not published by any earlier objective "
                   f"(published so far: {', '.join(sorted(published)) or 'none'})")
        published |= cls.publishes(cfg, spec.id)


def load_recipe(path: str | Path, overrides: Sequence[tuple[str, Any]] = ()) -> Recipe:
    """A recipe file (or a shipped recipe's name) with ``overrides`` (key path, value) applied in order."""
    path = shipped.find(path)
    raw, text = read_yaml(path, RecipeError, "recipe")
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty")
    for key_path, value in overrides:
        try:
            apply_override(raw, key_path, value)
        except RecipeError as exc:
            raise RecipeError(f"{path}: {exc}") from None
    return parse_recipe(raw, str(path), text)


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML with every default filled in, the encoder's and each objective's
    options included (as validated); it loads back to the same recipe."""
    data = recipe.model_dump(mode="json", by_alias=True, exclude_none=True)
    for written, config in zip(data["objectives"], recipe.objective_configs):
        if config is not None:
            written.update(config.model_dump(mode="json", exclude_none=True))
    if recipe.encoder_config is not None:
        data["encoder"].update(recipe.encoder_config.model_dump(mode="json", exclude_none=True))
    return yaml.safe_dump(data, sort_keys=False)
