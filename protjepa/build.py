"""Recipe -> encoder, objectives, model."""
from __future__ import annotations

import importlib

from protjepa.encoders.base import Encoder
from protjepa.model import ProtJEPA
from protjepa.recipe import Recipe, RecipeError
from protjepa.registry import ENCODERS, OBJECTIVES


def import_dotted(path: str):
    """``pkg.module.attr`` -> the attribute (torchtune's ``_component_`` convention)."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise RecipeError(f"encoder._component_: {path!r} is not a dotted path (module.factory)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"encoder._component_: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RecipeError(f"encoder._component_: module {module_name!r} has no {attr!r}") from None


def build_encoder(recipe: Recipe) -> Encoder:
    spec = recipe.encoder
    if spec.component is not None:
        from protjepa.encoders.adapter import ModuleAdapter

        factory = import_dotted(spec.component)
        encoder = ModuleAdapter.wrap(factory(**spec.options))
    else:
        entry = ENCODERS.get(spec.name)
        encoder = entry.builder(recipe.encoder_config) if entry.config_cls else entry.builder(**spec.options)
    if spec.checkpoint:
        from protjepa.encoders.checkpoints import load_weights

        load_weights(encoder, spec.checkpoint)
    return encoder


def build_model(recipe: Recipe, encoder: Encoder | None = None) -> ProtJEPA:
    encoder = encoder if encoder is not None else build_encoder(recipe)
    objectives = []
    momenta: dict[tuple[float, float], str] = {}
    for spec, config in zip(recipe.objectives, recipe.objective_configs):
        cls = OBJECTIVES.get(spec.name).builder
        objective = cls(config, encoder, spec.key)
        objectives.append((spec.key, spec.weight, objective))
        schedule = getattr(objective, "ema_momentum", None)
        if schedule is not None:
            momenta.setdefault(tuple(schedule), spec.key)
    if len(momenta) > 1:
        raise RecipeError(
            "objectives: EMA teachers with different momentum schedules: "
            + "; ".join(f"{k}: {v}" for v, k in momenta.items())
        )
    return ProtJEPA(encoder, objectives, ema_momentum=next(iter(momenta), None))
