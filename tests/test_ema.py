"""The EMA teacher: built when a JEPA target asks for it, moved by exactly the schedule's momentum."""
from __future__ import annotations

import pytest
import torch

from protjepa.build import build_model
from protjepa.recipe import RecipeError
from toy_model import ToyEncoder, recipe_of, toy_batch


def ema_model(momentum: float = 0.996, momentum_end: float = 1.0, layer="last"):
    target = {"source": "ema", "momentum": momentum, "momentum_end": momentum_end, "layer": layer}
    return build_model(recipe_of({"name": "mlm"}, {"name": "jepa", "target": target}), encoder=ToyEncoder())


def fill_dyadic(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Multiples of 1/8 in [-1, 1): every product by 0.75 or 0.25 and their sum are exact in float32."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-8, 8, p.shape, generator=generator) / 8)


def test_schedule_is_linear_from_momentum_to_momentum_end():
    model = ema_model()
    assert model.ema_momentum == (0.996, 1.0)
    assert model.momentum_at(0.0) == 0.996
    assert model.momentum_at(0.5) == pytest.approx(0.998, abs=1e-12)
    assert model.momentum_at(1.0) == 1.0
    assert model.momentum_at(1.5) == 1.0 and model.momentum_at(-0.1) == 0.996


def test_teacher_moves_by_exactly_the_momentum():
    model = ema_model(momentum=0.5, momentum_end=1.0)
    generator = torch.Generator().manual_seed(1)
    fill_dyadic(model.teacher, generator)
    fill_dyadic(model.encoder, generator)
    teacher = [p.clone() for p in model.teacher.parameters()]
    student = [p.clone() for p in model.encoder.parameters()]

    momentum = model.momentum_at(0.5)
    assert momentum == 0.75
    model.ema_update(momentum)
    for new, old, s in zip(model.teacher.parameters(), teacher, student):
        assert torch.equal(new, 0.75 * old + 0.25 * s)
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.parameters(), student))  # the student is untouched

    model.ema_update(model.momentum_at(1.0))  # momentum 1: the teacher stays
    for new, old, s in zip(model.teacher.parameters(), teacher, student):
        assert torch.equal(new, 0.75 * old + 0.25 * s)


def test_teacher_update_with_the_default_schedule():
    model = ema_model()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    teacher = [p.clone() for p in model.teacher.parameters()]
    momentum = model.momentum_at(0.25)  # 0.997
    model.ema_update(momentum)
    for new, old, s in zip(model.teacher.parameters(), teacher, model.encoder.parameters()):
        torch.testing.assert_close(new, momentum * old + (1 - momentum) * s, rtol=0, atol=1e-6)


def test_teacher_starts_as_the_student_and_is_never_trained():
    model = ema_model()
    assert all(torch.equal(t, s) for t, s in zip(model.teacher.parameters(), model.encoder.parameters()))
    model.train()
    assert not model.teacher.training
    model(toy_batch()).loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert model.encoder.embed.weight.grad is not None


def test_ema_target_comes_from_the_teacher():
    model = ema_model(layer="half")
    model.encoder.calls.clear()
    model.teacher.calls.clear()
    with torch.no_grad():  # an optimiser step the teacher has not followed yet
        for p in model.encoder.parameters():
            p.add_(1.0)
    batch = toy_batch()
    ctx = model.context(batch)
    model.objectives[1](ctx)
    assert [c["stop_at"] for c in model.teacher.calls] == [2]  # the target pass, at half depth
    assert [c["stop_at"] for c in model.encoder.calls] == [None]  # the student pass only
    with torch.no_grad():
        expected = model.teacher(batch.tokens, layers=[2]).layers[2].flatten(0, 1)[batch.masked_index]
    torch.testing.assert_close(ctx.shared["jepa.target"], expected)


def test_student_target_needs_no_teacher():
    model = build_model(recipe_of({"name": "jepa"}), encoder=ToyEncoder())
    assert model.teacher is None and model.ema_momentum is None
    assert model.objectives[0].ema_momentum is None


def test_two_different_schedules_are_refused():
    recipe = recipe_of(
        {"name": "jepa", "target": {"source": "ema"}},
        {"name": "jepa", "id": "slow", "target": {"source": "ema", "momentum": 0.999}},
    )
    with pytest.raises(RecipeError, match="EMA teachers with different momentum schedules"):
        build_model(recipe, encoder=ToyEncoder())
