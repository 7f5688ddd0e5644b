"""Recipe -> encoder, objectives, model."""
from __future__ import annotations

from pydantic import BaseModel

from protjepa.encoders.adapter import ModuleAdapter
from protjepa.encoders.base import Encoder
from protjepa.encoders.weights import load_weights
from protjepa.model import ProtJEPA
from protjepa.recipe import EncoderSpec, Recipe, RecipeError
from protjepa.registry import ENCODERS, OBJECTIVES, import_component


def encoder_from_spec(spec: EncoderSpec, config: BaseModel | None = None) -> Encoder:
    """An encoder from a recipe's ``encoder:`` section; ``config``: its options, if already validated."""
    if spec.component is not None:
        return ModuleAdapter.wrap(import_component(spec.component)(**spec.options))
    entry = ENCODERS.get(spec.name)
    if entry.config_cls is None:
        return entry.builder(**spec.options)
    return entry.builder(config if config is not None else entry.config_cls.model_validate(spec.options))


def build_encoder(recipe: Recipe) -> Encoder:
    spec = recipe.encoder
    encoder = encoder_from_spec(spec, recipe.encoder_config)
    if spec.component is not None and recipe.data.packing and not getattr(encoder, "accepts_segments", True):
        raise RecipeError(f"data.packing: {spec.component} takes no segment_ids/positions: set packing to false")
    if spec.checkpoint:
        load_weights(encoder, spec.checkpoint)
    return encoder


def build_model(recipe: Recipe, encoder: Encoder | None = None) -> ProtJEPA:
    encoder = encoder if encoder is not None else build_encoder(recipe)
    objectives = []
    momenta: dict[tuple[float, float], str] = {}
    for spec, config in zip(recipe.objectives, recipe.objective_configs):
        cls = OBJECTIVES.get(spec.name).builder
        objective = cls(config, encoder, spec.id)
        objectives.append((spec.id, spec.weight, objective))
        if objective.ema_momentum is not None:
            momenta.setdefault(tuple(objective.ema_momentum), spec.id)
    if len(momenta) > 1:
        raise RecipeError(
            "objectives: EMA teachers with different momentum schedules: "
            + "; ".join(f"{k}: {v}" for v, k in momenta.items())
        )
    return ProtJEPA(encoder, objectives, ema_momentum=next(iter(momenta), None))
