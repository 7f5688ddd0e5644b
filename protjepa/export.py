"""Whole encoders on disk in the native format: ``encoder.yaml`` (the recipe's ``encoder:``
section) beside ``model.safetensors``, for any encoder a recipe can build. Loading also takes
the ESM-2 formats of :mod:`protjepa.encoders.weights` (Hugging Face ESM, fair-esm), a run
folder of ``protjepa train`` (its export) and a training checkpoint inside one
(``<run>/checkpoints/ckpt-0.500.pt``: the encoder built from the recipe the checkpoint carries,
or the run's ``recipe.yaml`` for a checkpoint from before that record). All of them are data:
code an ``encoder.yaml`` or a recipe names is imported only with the user's ``trust_code``.

It sits above :mod:`protjepa.build` because loading a native directory builds the encoder
its ``encoder.yaml`` names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from protjepa.build import encoder_from_spec
from protjepa.checkpoint_file import read_checkpoint, recorded_recipe
from protjepa.encoders.base import Encoder
from protjepa.encoders.weights import (
    NATIVE_SPEC,
    WEIGHTS,
    WeightsError,
    esm2_from_checkpoint,
    check_state,
    is_native,
    load_weights,
    locate,
    tied_aliases,
    write_safetensors,
    write_text,
)
from protjepa.errors import UserError
from protjepa.recipe import (Recipe, RecipeError, Trust, load_recipe, parse_recipe, read_encoder_spec,
                             recipe_difference)
from protjepa.yamlio import YamlLines, load_yaml, located_first_error, read_yaml


RUN_RECIPE = "recipe.yaml"
_ENCODER_PREFIX = "model.encoder."  # ComposerProtJEPA.model (ProtJEPA).encoder


def load_encoder(path: str | os.PathLike, trust_code: Trust = False, notes: list[str] | None = None) -> Encoder:
    """An encoder built and loaded from a native directory, a Hugging Face ESM directory, a fair-esm .pt,
    a run folder (its final export) or a training checkpoint of a run (``<run>/checkpoints/*.pt``).
    These are data: code their ``encoder.yaml`` or recipe names is imported only as ``trust_code`` allows
    (:func:`~protjepa.recipe.check_code`). ``notes`` gets what the caller should say (a run's recipe.yaml
    that differs from the recipe its checkpoint was trained with)."""
    path, run_dir = resolve_checkpoint(path)
    if run_dir is not None and path.is_file():
        return _from_training_checkpoint(path, run_dir, trust_code, notes)
    if not is_native(path):
        return esm2_from_checkpoint(path)
    return load_weights(_build_native(path / NATIVE_SPEC, trust_code), path)


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(encoder path, run folder or None). A run's export is ``export/`` itself, or its ``final``
    or newest labelled sub-folder; a training checkpoint of a run stays as it is."""
    path = locate(path)
    if path.is_file() and path.parent.name == "checkpoints" and (path.parent.parent / RUN_RECIPE).is_file():
        return path, path.parent.parent
    export = path / "export"
    if not ((path / RUN_RECIPE).is_file() and export.is_dir()):
        return path, None
    if any(export.glob("*.safetensors")) or any(export.glob("*.json")) or any(export.glob("*.yaml")):
        return export, path
    labels = [d for d in export.iterdir() if d.is_dir()]
    if not labels:
        raise WeightsError(f"{export}: the run has no exported encoder yet")
    final = export / "final"
    return (final if final.is_dir() else max(labels, key=lambda d: d.stat().st_mtime)), path


def checkpoint_recipe(file: Path, data: dict, run_dir: Path, trust_code: Trust) -> tuple[Recipe, list[str]]:
    """The recipe a run's training checkpoint ``file`` (``data``: its contents) was trained with: the one it
    carries, else (a checkpoint older than that record) the run's ``recipe.yaml``; and a note when
    ``recipe.yaml`` now says otherwise (it was edited, or another run was written over it)."""
    run_recipe = run_dir / RUN_RECIPE
    recorded = recorded_recipe(data)
    if recorded is None:
        return load_recipe(run_recipe, trust_code=trust_code), []
    source = f"{file} (the recipe it was trained with)"
    try:
        raw = load_yaml(recorded)
    except yaml.YAMLError:
        raise WeightsError(f"{source}: not YAML: the checkpoint is damaged") from None
    recipe = parse_recipe(raw, source, recorded, trust_code=trust_code)
    if not run_recipe.is_file():
        return recipe, []
    current, _ = read_yaml(run_recipe, RecipeError, "run recipe")  # compared as data: nothing imported
    difference = recipe_difference(raw, current)
    if difference is None:
        return recipe, []
    key, then, now = difference
    return recipe, [f"{run_recipe} says {key}: {now}, but {file.name} was trained with {key}: {then}: "
                    "read with the checkpoint's own recipe"]


def _from_training_checkpoint(file: Path, run_dir: Path, trust_code: Trust, notes: list[str] | None) -> Encoder:
    """The encoder of a Composer checkpoint, built as the recipe it was trained with says."""
    data = read_checkpoint(file, mmap=True)
    try:
        model = data["state"]["model"]
    except (KeyError, TypeError):
        raise WeightsError(f"{file}: not a protjepa training checkpoint (no state.model in it)") from None
    recipe, said = checkpoint_recipe(file, data, run_dir, trust_code)
    if notes is not None:
        notes.extend(said)
    encoder = encoder_from_spec(recipe.encoder, recipe.encoder_config)
    state = {name[len(_ENCODER_PREFIX):]: t for name, t in model.items() if name.startswith(_ENCODER_PREFIX)}
    check_state(encoder, state, str(file))
    encoder.load_state_dict(state, strict=False)  # strict but for the tied aliases check_state allows
    return encoder


def save_encoder(encoder: Encoder, directory: str | os.PathLike, encoder_spec: dict[str, Any], *,
                 dtype: torch.dtype | None = None, part_bytes: int | None = None) -> Path:
    """Write ``encoder.yaml`` (``encoder_spec``: the recipe's encoder section) and ``model.safetensors``:
    its floating-point tensors cast to ``dtype`` when given (bf16 halves the file; loading casts them
    back to the encoder's), as parts of at most ``part_bytes`` bytes when given (:mod:`protjepa.parts`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = {k: v for k, v in encoder_spec.items() if k != "checkpoint"}  # the weights are here now
    tensors = {name: t.to(dtype) if dtype is not None and t.is_floating_point() else t
               for name, t in encoder.state_dict().items() if name not in tied_aliases(encoder)}
    write_safetensors(directory / WEIGHTS, tensors, part_bytes)
    write_text(directory / NATIVE_SPEC, yaml.safe_dump(spec, sort_keys=False))
    return directory


def _build_native(spec_file: Path, trust_code: Trust) -> Encoder:
    spec, text = read_encoder_spec(spec_file, trust_code)
    try:
        return encoder_from_spec(spec)
    except ValidationError as exc:
        raise RecipeError(located_first_error(exc, str(spec_file), YamlLines(text))) from None
    except UserError as exc:
        raise WeightsError(f"{spec_file}: {exc}") from None
