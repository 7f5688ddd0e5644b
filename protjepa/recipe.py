"""YAML recipes: one file names the encoder, the objectives and their weights, the data,
the optimiser and the budget. Validated by pydantic; every error names the file, the
line and the key path (``recipe.yaml:14: objectives[1].loss: expected cosine|mse|smooth_l1``).
"""
from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path
from typing import Annotated, Any, Collection, Literal, NoReturn, Sequence, Union

import torch
import yaml
from torch import nn
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictFloat, StrictInt, ValidationError, field_validator,
                      model_serializer, model_validator)

from protjepa import shipped
from protjepa.batch import row_tokens
from protjepa.durations import parse_duration
from protjepa.errors import UserError
from protjepa.files import MAX_RESIDUES
from protjepa.yamlio import (RefusedYaml, Strict, YamlLines, load_yaml, located, located_first_error,
                             misplaced_boolean, read_yaml)
from protjepa.registry import ENCODERS, OBJECTIVES, RegistryError, import_component, load_plugins

Number = Union[int, float]
Beta = Annotated[float, Field(ge=0, lt=1)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # Python, NumPy and torch take 0 .. 2^32 - 1
# Weights are relative: beside a term of weight 1, one above 1e6 leaves the other below float32's
# resolution of their sum (about 1 part in 1.7e7), and far larger ones overflow it.
MAX_WEIGHT = 1e6


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
    batch_tokens: Union[int, Literal["fill"]] = Field(
        8192, description="token budget per batch (padding included); fill: what fills the GPU's memory (measured "
                          "for this recipe at the run's start)")
    max_sequences: int | None = Field(None, ge=1, description="cap on sequences per batch")
    packing: bool = False
    static_shapes: bool = Field(
        False, description="every training batch the same shapes (needs packing): batch_tokens // row length rows, "
                           "masked positions padded to a fixed count; torch.compile then uses CUDA graphs on a GPU")
    unknown_letters: Literal["error", "x"] = "error"
    max_residues: int = Field(MAX_RESIDUES, ge=8, description="longest FASTA line or record read: a longer one is "
                                                                "refused at its line (a damaged or wrong file)")
    shuffle_buffer: int = Field(4096, ge=1)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_validation_source(self):
        if self.holdout_fraction > 0 and self.valid is not None:
            raise ValueError("holdout_fraction splits train only when valid is null (set valid: null)")
        return self

    @model_validator(mode="after")
    def _static_shapes_are_packed(self):
        if self.static_shapes and not self.packing:
            raise ValueError("static_shapes needs packing: true (padded rows are as long as each batch's longest)")
        return self

    @field_validator("batch_tokens", mode="before")
    @classmethod
    def _tokens_or_fill(cls, v):
        if v == "fill" or isinstance(v, int) and not isinstance(v, bool) and v >= 16:
            return v
        raise ValueError(f"expected a whole number of tokens (at least 16) or fill, got {v!r}")

    @model_validator(mode="after")
    def _a_row_fits_the_batch(self):
        widest = row_tokens(self.crop, self.packing)
        if self.batch_tokens != "fill" and self.batch_tokens < widest:
            raise ValueError(f"batch_tokens {self.batch_tokens} is less than one row of {widest} tokens (crop "
                             f"{self.crop} + <cls>/<eos>{'' if self.packing else ', padded to a multiple of 8'})")
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
    compile: Union[bool, Literal["auto"]] = Field(
        "auto", description="torch.compile the training step; auto: on a GPU, off on a CPU (docs/benchmarks.md)")
    parallelism: Literal["ddp", "fsdp"] = Field(
        "ddp", description="on several processes (Composer's launcher): ddp, whole model per rank; fsdp, sharded")
    threads: int | None = Field(None, ge=1)
    keep_checkpoints: int | None = Field(None, ge=0, description="keep the last K before the final; None: all")
    loggers: list[ComponentSpec] = Field(default_factory=list, description="Composer loggers: _component_ + arguments")
    callbacks: list[ComponentSpec] = Field(default_factory=list, description="Composer callbacks, likewise")

    @model_validator(mode="before")
    @classmethod
    def _fsdp_became_parallelism(cls, data):
        # Every run written before train.parallelism records the old default, fsdp: null (DDP); experiments
        # compare those recipe.yaml files with their runs' recipes again when they resume or report.
        if isinstance(data, dict) and "fsdp" in data:
            if data["fsdp"] is not None:
                raise ValueError("fsdp: replaced by parallelism: fsdp (Composer's FSDP2, full checkpoints)")
            data = {key: value for key, value in data.items() if key != "fsdp"}
        return data

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, v):
        if not isinstance(v, bool) and v != "auto":
            raise ValueError(f"expected true, false or auto, got {v!r}")
        return v

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
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str
    id: str | None = Field(None, description="prefixes its metrics and published names; default: its name")
    weight: float = Field(1.0, ge=0, le=MAX_WEIGHT, description="0 beside other objectives: logged, not trained on")

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
    seed: Seed = Field(0, description="seeds Python, NumPy and torch, which take 0 .. 2^32 - 1")
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

    @field_validator("name")
    @classmethod
    def _name_stays_in_its_folder(cls, name: str) -> str:
        # it names the run folder (train.run_dir: runs/{name}): '..' would put the run outside it
        if name.strip() in ("", ".") or ".." in Path(name).parts:
            raise ValueError(f"{name!r} names the run folder (train.run_dir: runs/{{name}}): give a name, with no "
                             "'..' part")
        return name

    @field_validator("objectives")
    @classmethod
    def _something_trains(cls, objectives: list[ObjectiveSpec]) -> list[ObjectiveSpec]:
        if all(spec.weight == 0 for spec in objectives):
            raise ValueError("every objective has weight 0: the run would train nothing")
        return objectives

    @property
    def objective_configs(self) -> list[BaseModel]:
        return self._objective_configs

    @property
    def encoder_config(self) -> BaseModel | None:
        return self._encoder_config


def zero_weight_notes(recipe: Recipe) -> list[str]:
    """What a run says of the objectives weighted 0 beside others (an ablation): none, or one line."""
    idle = [spec.id for spec in recipe.objectives if spec.weight == 0]
    return [f"weight 0 (an ablation): {', '.join(idle)} computed and logged, not trained on"] if idle else []


# --------------------------------------------------------------------------- code a recipe names


TRUST_HINT = ("protjepa runs no code named in an export, a run folder or a checkpoint unless told to: pass "
              "--trust-code (trust_code=True in Python) if you trust where it came from")
Trust = Union[bool, Collection[str]]  # True: any code; False: none; names: only those (a trusted recipe's)


def code_references(raw: Any) -> list[tuple[tuple, str]]:
    """(key path, dotted name) of each value of a recipe's parsed YAML that imports Python code when the
    recipe is read to build its model: ``plugins:`` modules and the encoder's ``_component_:`` factory.
    (A recipe read back is not trained: its ``train.loggers`` and ``train.callbacks`` are neither imported
    nor called.) An export's ``encoder.yaml`` is an ``encoder:`` section: pass ``{"encoder": ...}``."""
    found: list[tuple[tuple, str]] = []
    if not isinstance(raw, dict):
        return found
    if isinstance(raw.get("plugins"), list):
        found += [(("plugins", i), str(module)) for i, module in enumerate(raw["plugins"])]
    if isinstance(raw.get("encoder"), dict) and "_component_" in raw["encoder"]:
        found.append((("encoder", "_component_"), str(raw["encoder"]["_component_"])))
    return found


def trusted_code(recipes: Sequence[Recipe]) -> frozenset[str]:
    """The code that recipes the user gave name: what reading their runs back may import."""
    return frozenset(name for recipe in recipes for _, name in code_references(yaml.safe_load(dump_recipe(recipe))))


def check_code(raw: Any, source: str, lines: YamlLines | None, trust: Trust, prefix: tuple = ()) -> None:
    """Refuse, in one line naming the file, the line and the key, code that a recipe read from data (a run
    folder, a checkpoint, an export) names and ``trust`` does not allow; ``prefix``: where ``raw`` sits."""
    if trust is True:
        return
    for loc, name in code_references(raw):
        if trust is False or name not in trust:
            raise RecipeError(located(source, lines, loc[len(prefix):] if prefix else loc,
                                      f"names code to import ({name}); {TRUST_HINT}"))


# --------------------------------------------------------------------------- two recipes compared


# Settings that say how and where a run runs, not what it trains: a run may resume with them changed,
# and a record differing only there describes the same training.
RUN_SETTINGS = {"data": ("root", "num_workers"),
                "train": ("device", "precision", "compile", "parallelism", "threads", "log_every", "monitor_every",
                          "monitor_sequences", "checkpoint_at", "keep_checkpoints", "loggers", "callbacks",
                          "run_dir")}


def recipe_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(key path, old value, new value) at the first place where two dumped recipes (parsed YAML) differ
    in what they train (:data:`RUN_SETTINGS` aside), or None. A key the old record lacks was not
    recorded then (an older protjepa) and is not compared."""
    if not path:
        old, new = (_training_part(r) for r in (old, new))
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            found = recipe_difference(old[key], new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return next(filter(None, (recipe_difference(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(old, new)))),
                    None)
    return None if old == new else (path, old, new)


def _training_part(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for section, keys in RUN_SETTINGS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


# --------------------------------------------------------------------------- this machine


FILL_NEEDS_A_GPU = ("fill sizes the step to a GPU's memory, and this run is on the CPU: give a number, e.g. "
                    "--set data.batch_tokens=8192")


def machine_problem(recipe: Recipe) -> tuple[tuple, str] | None:
    """(key path, message) of what stops ``recipe`` from training on this machine, as ``train`` refuses it
    (``validate`` asks the same), or None."""
    cuda = torch.cuda.is_available()
    if recipe.train.device == "cuda" and not cuda:
        return ("train", "device"), "cuda, but torch sees no CUDA device here (use auto or cpu)"
    if recipe.data.batch_tokens == "fill" and (recipe.train.device == "cpu" or not cuda):
        return ("data", "batch_tokens"), FILL_NEEDS_A_GPU
    return None


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
        return path.strip(), load_yaml(text)
    except yaml.YAMLError as exc:
        why = f" ({exc.problem})" if isinstance(exc, RefusedYaml) else ""
        raise RecipeError(f"--set {path}: {text!r} is not a YAML value{why}") from None


def apply_override(raw: dict, path: str, value: Any) -> tuple:
    """("objectives.1.weight", 0.3) -> raw["objectives"][1]["weight"] = 0.3. Returns the key path of
    the shallowest node it created or replaced: an error at or below it is the override's."""
    if not isinstance(path, str) or not all(path.split(".")):
        raise RecipeError(f"--set {path!r}: expected a key path KEY.SUBKEY (=VALUE), with no empty key")
    value = copy.deepcopy(value)  # one value may go into many recipes, and later overrides edit it in place
    keys = path.split(".")
    node: Any = raw
    loc: list = []
    created: tuple | None = None
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"--set {path}: {'.'.join(keys[:i]) or '(top)'} has no item {key}")
            loc.append(int(key))
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            loc.append(key)
            if node.get(key) is None:  # absent, or an empty section (``train:`` and nothing under it)
                created = created or tuple(loc)
                node[key] = {}
            if last:
                node[key] = value
            else:
                node = node[key]
        else:
            raise RecipeError(f"--set {path}: {'.'.join(keys[:i])} is not a mapping or list")
    return created or tuple(loc)


# --------------------------------------------------------------------------- loading


def non_finite(node: Any, loc: tuple = (), seen: set[int] | None = None) -> tuple[tuple, float] | None:
    """(key path, value) of the first NaN or infinity in a parsed YAML tree, or None. Each list or
    mapping is walked once, however many aliases share it."""
    if isinstance(node, float) and not math.isfinite(node):
        return loc, node
    seen = set() if seen is None else seen
    if not isinstance(node, (dict, list)) or id(node) in seen:
        return None
    seen.add(id(node))
    for key, child in node.items() if isinstance(node, dict) else enumerate(node):
        found = non_finite(child, loc + (key,), seen)
        if found is not None:
            return found
    return None


def parse_recipe(raw: Any, source: str = "<recipe>", text: str | None = None,
                 overrides: Sequence[tuple[str, Any]] = (), override_flag: str | None = None, *,
                 trust_code: Trust = True, this_machine: bool = False) -> Recipe:
    """A recipe from its parsed YAML (``text``: the file's, for line numbers) with ``overrides``
    (key path, value) applied in order. With ``override_flag`` (how the user gave them: ``--set``),
    an error in a value an override gave names the override (``--set data.crop``), not a line of the file.
    ``trust_code``: which code the recipe may import (:func:`check_code`; a recipe the user gives is
    trusted, one read back from a run folder or a checkpoint is data). ``this_machine``: also refuse what
    ``train`` refuses on this machine (:func:`machine_problem`)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: the recipe must be a mapping, got {type(raw).__name__}")
    check_code(raw, source, YamlLines(text) if text is not None else None, trust_code)
    try:
        load_plugins()  # the built-in and installed plugins: a broken one is not the recipe's error
    except RegistryError as exc:
        raise RecipeError(f"{exc} (an installed package's plugin, not {source})") from None
    given: dict[tuple, str] = {}  # in order: the last override to touch a value gave it
    for key_path, value in overrides:
        try:
            root = apply_override(raw, key_path, value)
        except RecipeError as exc:
            raise RecipeError(f"{source}: {exc}") from None
        if override_flag is not None:
            given.pop(root, None)
            given[root] = f"{override_flag} {key_path}"
    lines = YamlLines(text, given) if text is not None else None
    found = non_finite(raw)  # every number of a recipe, plugin options included: no schema needs NaN or inf
    if found is not None:
        _raise(source, lines, found[0], f"{found[1]} is not a finite number")
    recipe = _validated(Recipe, raw, (), source, lines)
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
        configs.append(_validated(cfg_cls, spec.options, ("objectives", i), source, lines) if cfg_cls else None)
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
            recipe._encoder_config = _validated(entry.config_cls, recipe.encoder.options, ("encoder",), source, lines)
    else:
        _check_component(recipe.encoder, ("encoder",), source, lines, module_class=True)
    for section in ("loggers", "callbacks") if trust_code is True else ():  # only a recipe to train runs them
        for i, spec in enumerate(getattr(recipe.train, section)):
            _check_component(spec, ("train", section, i), source, lines)
    _check_consumers(recipe, source, lines)
    _check_static_shapes(recipe, source, lines)
    problem = machine_problem(recipe) if this_machine else None
    if problem is not None:
        _raise(source, lines, *problem)
    return recipe


def _validated(model: type[BaseModel], data: dict, loc: tuple, source: str, lines: YamlLines | None) -> BaseModel:
    """``model`` from ``data``, the recipe's section at key path ``loc``; errors name file, line and key.
    Booleans are checked first: pydantic alone reads ``weight: true`` as 1 and ``packing: 1`` as true."""
    found = misplaced_boolean(data, model, loc)
    if found is not None:
        _raise(source, lines, *found)
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(located_first_error(exc, source, lines, loc)) from None
    found = non_finite(validated.model_dump(by_alias=True), loc)  # a plugin's float read from text: 1e400 is inf
    if found is not None:
        _raise(source, lines, found[0], f"{found[1]} is not a finite number")
    return validated


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


def _check_static_shapes(recipe: Recipe, source: str, lines: YamlLines | None) -> None:
    """Static shapes fill the masked positions with weighted filler: every objective must weigh it."""
    if not recipe.data.static_shapes:
        return
    for i, (spec, cfg) in enumerate(zip(recipe.objectives, recipe._objective_configs)):
        problem = OBJECTIVES.get(spec.name).builder.static_shapes_problem(cfg)
        if problem is not None:
            _raise(source, lines, ("objectives", i), f"with data.static_shapes: true, {problem}")


def load_recipe(path: str | Path, overrides: Sequence[tuple[str, Any]] = (),
                override_flag: str | None = None, *, trust_code: Trust = True, this_machine: bool = False) -> Recipe:
    """A recipe file (or a shipped recipe's name) with ``overrides`` (key path, value) applied in order;
    ``override_flag``, ``trust_code`` and ``this_machine`` as :func:`parse_recipe` takes them."""
    path = shipped.find(path)
    raw, text = read_yaml(path, RecipeError, "recipe")
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty")
    return parse_recipe(raw, str(path), text, overrides, override_flag, trust_code=trust_code,
                        this_machine=this_machine)


def read_encoder_spec(spec_file: Path, trust_code: Trust = False) -> tuple[EncoderSpec, str]:
    """A native export's ``encoder.yaml`` (a recipe's ``encoder:`` section) and its text; errors name
    the file, line and key. An export is data: a ``_component_`` in it is refused unless ``trust_code``
    allows it (:func:`check_code`)."""
    raw, text = read_yaml(spec_file, RecipeError, "encoder spec")
    check_code({"encoder": raw}, str(spec_file), YamlLines(text), trust_code, prefix=("encoder",))
    try:
        return EncoderSpec.model_validate(raw), text
    except ValidationError as exc:
        raise RecipeError(located_first_error(exc, str(spec_file), YamlLines(text))) from None


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML with every default filled in, the encoder's and each objective's
    options included (as validated); it loads back to the same recipe."""
    data = recipe.model_dump(mode="json", by_alias=True, exclude_none=True)
    for written, config in zip(data["objectives"], recipe.objective_configs):
        if config is not None:
            written.update(config.model_dump(mode="json", exclude_none=True))
    if recipe.encoder_config is not None:  # as validated: a preset its sizes override is gone
        written = {k: v for k, v in data["encoder"].items() if k in ("name", "_component_", "checkpoint")}
        data["encoder"] = written | recipe.encoder_config.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
