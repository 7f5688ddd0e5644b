"""Budgets, the training clock, the LR schedule and the collapse monitors, by hand."""
from __future__ import annotations

import math

import pytest
import torch

from protjepa.durations import BudgetError, parse_budget
from protjepa.recipe import BudgetConfig, OptimConfig, RecipeError, parse_recipe
from protjepa.training.budget import UNREACHABLE_STEPS, Budget, TrainingClock
from protjepa.training.monitors import effective_rank, embedding_std
from protjepa.training.schedule import LRSchedule


@pytest.mark.parametrize(
    "text, expected",
    [
        ("90s", {"wall_clock": "90s"}),
        ("24h", {"wall_clock": "24h"}),
        ("1h30m", {"wall_clock": "1h30m"}),
        ("30min", {"wall_clock": "30min"}),
        ("2e8tok", {"tokens": 2e8}),
        ("150000tokens", {"tokens": 150000.0}),
        ("1000steps", {"steps": 1000}),
        ("500ba", {"steps": 500}),
        ("3e14flop", {"flops": 3e14}),
        ("3e14flops", {"flops": 3e14}),
    ],
)
def test_budget_arguments_parse(text, expected):
    assert parse_budget(text) == expected
    Budget.from_config(BudgetConfig(**expected))  # and the recipe accepts them


@pytest.mark.parametrize("text, says", [("2x", "cannot parse duration '2x'"), ("0s", "must be positive"),
                                        ("1.5steps", "whole number"), ("0flop", "FLOPs positive")])
def test_bad_budget_arguments_say_why_in_one_line(text, says):
    with pytest.raises(BudgetError, match=says) as info:
        parse_budget(text)
    assert "\n" not in str(info.value)


def test_budget_units_and_composer_durations():
    assert Budget.from_config(BudgetConfig(wall_clock="1h30m")) == Budget("wall_clock", 5400.0)
    assert Budget.from_config(BudgetConfig(wall_clock="1h30m")).max_duration == f"{UNREACHABLE_STEPS}ba"
    assert Budget.from_config(BudgetConfig(tokens=2e8)).max_duration == "200000000tok"
    assert Budget.from_config(BudgetConfig(steps=10)).max_duration == "10ba"
    assert Budget.from_config(BudgetConfig(flops=3e14)) == Budget("flops", 3e14)
    assert Budget.from_config(BudgetConfig(flops=3e14)).max_duration == f"{UNREACHABLE_STEPS}ba"  # the tracker stops it


@pytest.mark.parametrize("budget, says", [
    ({"steps": 10, "flops": 3e14}, "budget: give exactly one of wall_clock, tokens, steps, flops (got steps, flops)"),
    ({"flops": 0}, "budget.flops: Input should be greater than 0"),
])
def test_bad_flop_budgets_in_recipes_are_one_line_errors(budget, says):
    with pytest.raises(RecipeError) as info:
        parse_recipe({"name": "x", "encoder": {"name": "esm2", "preset": "esm2_8m"}, "objectives": [{"name": "mlm"}],
                      "budget": budget}, "x.yaml")
    assert says in str(info.value) and "\n" not in str(info.value)


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_training_clock_counts_only_between_start_and_stop():
    now = FakeTime()
    clock = TrainingClock(now)
    clock.start()
    now.t += 2.0
    assert clock.elapsed == 0.0  # counts finished steps only
    clock.stop()
    now.t += 50.0  # a checkpoint or a monitor between batches
    assert clock.elapsed == 2.0
    clock.start()
    now.t += 1.0
    clock.start()  # a fetch that restarts (the spun batches of a resume) restarts the count
    now.t += 3.0
    clock.stop()
    clock.stop()
    assert clock.elapsed == 5.0


def test_compiling_inside_a_step_is_kept_off_the_clock():
    now, compiled = FakeTime(), FakeTime()
    clock = TrainingClock(now, compiling=compiled)
    clock.start()
    now.t += 10.0
    compiled.t += 7.0  # torch.compile compiled for 7 s of the step's 10
    clock.stop()
    clock.start()
    now.t += 2.0  # the compiled step, nothing left to compile
    clock.stop()
    assert (clock.elapsed, clock.compiled) == (5.0, 7.0)


def test_cosine_schedule_values_by_hand():
    schedule = LRSchedule("cosine", warmup=0.1, min_ratio=0.1)
    assert schedule(0.0, 0) == 0.0
    assert schedule(0.05, 3) == pytest.approx(0.5)
    assert schedule(0.1, 5) == pytest.approx(1.0)
    # Half the budget: progress (0.5 - 0.1) / 0.9 = 4/9, cos(80 degrees) = 0.173648
    assert schedule(0.5, 99) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + 0.17364818), abs=1e-7)
    assert schedule(1.0, 999) == pytest.approx(0.1)
    assert schedule(1.5, 999) == pytest.approx(0.1)  # clamped past the end


def test_linear_constant_and_step_warmup():
    assert LRSchedule("linear", 0.0, 0.0)(0.25, 0) == pytest.approx(0.75)
    assert LRSchedule("constant", 0.2, 0.0)(0.1, 0) == pytest.approx(0.5)
    assert LRSchedule("constant", 0.2, 0.0)(0.7, 0) == 1.0
    steps = LRSchedule("cosine", warmup=10, min_ratio=0.0)  # warm-up in optimizer steps
    assert steps(0.0, 5) == pytest.approx(0.5)
    assert steps(0.5, 20) == pytest.approx(0.5)  # cosine midpoint over the whole budget


def test_schedule_from_recipe():
    optim = OptimConfig(schedule="linear", warmup=0.05, min_lr_ratio=0.2)
    assert LRSchedule.from_config(optim) == LRSchedule("linear", 0.05, 0.2)


def test_embedding_std_by_hand():
    spread = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # normalised: (1, 0) and (0, 1)
    assert embedding_std(spread).item() == pytest.approx(math.sqrt(0.5))  # each column: std of (1, 0)
    collapsed = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])  # one direction
    assert embedding_std(collapsed).item() == pytest.approx(0.0, abs=1e-7)


def test_effective_rank_by_hand():
    assert effective_rank(torch.eye(4)).item() == pytest.approx(4.0, rel=1e-5)
    p = torch.tensor([0.75, 0.25])  # singular values 3 and 1
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))).item() == pytest.approx(
        math.exp(-(p * p.log()).sum().item()), rel=1e-5
    )
    assert effective_rank(torch.ones(5, 3)).item() == pytest.approx(1.0, rel=1e-4)
    assert effective_rank(torch.zeros(5, 3)).item() == pytest.approx(1.0)  # no direction at all: exp(0)
