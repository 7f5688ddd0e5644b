"""Whole encoders on disk in the native format: ``encoder.yaml`` (the recipe's ``encoder:``
section) beside ``model.safetensors``, for any encoder a recipe can build. Loading also takes
the ESM-2 formats of :mod:`protjepa.encoders.weights` (Hugging Face ESM, fair-esm).

It sits above :mod:`protjepa.build` because loading a native directory builds the encoder
its ``encoder.yaml`` names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from protjepa.build import encoder_from_spec
from protjepa.encoders.base import Encoder
from protjepa.encoders.weights import (
    NATIVE_SPEC,
    WEIGHTS,
    WeightsError,
    esm2_from_checkpoint,
    is_native,
    load_weights,
    read_encoder_spec,
    tied_aliases,
    write_safetensors,
    write_text,
)
from protjepa.errors import UserError
from protjepa.recipe import RecipeError
from protjepa.yamlio import YamlLines, located_first_error


def load_encoder(path: str | os.PathLike) -> Encoder:
    """An encoder built and loaded from a native directory, a Hugging Face ESM directory or a fair-esm .pt."""
    path = Path(path)
    if not is_native(path):
        return esm2_from_checkpoint(path)
    return load_weights(_build_native(path / NATIVE_SPEC), path)


def save_encoder(encoder: Encoder, directory: str | os.PathLike, encoder_spec: dict[str, Any]) -> Path:
    """Write ``encoder.yaml`` (``encoder_spec``: the recipe's encoder section) and ``model.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = {k: v for k, v in encoder_spec.items() if k != "checkpoint"}  # the weights are here now
    tensors = {name: t for name, t in encoder.state_dict().items() if name not in tied_aliases(encoder)}
    write_safetensors(directory / WEIGHTS, tensors)
    write_text(directory / NATIVE_SPEC, yaml.safe_dump(spec, sort_keys=False))
    return directory


def _build_native(spec_file: Path) -> Encoder:
    spec, text = read_encoder_spec(spec_file)
    try:
        return encoder_from_spec(spec)
    except ValidationError as exc:
        raise RecipeError(located_first_error(exc, str(spec_file), YamlLines(text))) from None
    except UserError as exc:
        raise WeightsError(f"{spec_file}: {exc}") from None
