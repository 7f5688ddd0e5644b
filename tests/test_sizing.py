"""Tokens per step that fill a GPU (protjepa/training/sizing.py): the counts and the arithmetic."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from protjepa.build import build_model
from protjepa.training.sizing import (ADAMW_BYTES, StepMemory, full_rows, saved_bytes, state_bytes, step_memory,
                                     tokens_that_fill)
from protjepa.recipe import RecipeError, parse_recipe
from test_training import recipe, tiny

EMA = [{"name": "mlm"}, {"name": "jepa", "weight": 0.45, "target": {"source": "ema", "layer": "half"}}]


def test_state_is_sixteen_bytes_a_trainable_parameter_and_four_a_frozen_one():
    raw = tiny()
    raw["objectives"] = EMA
    model = build_model(parse_recipe(raw, "tiny.yaml"))
    student = sum(p.numel() for p in model.parameters() if p.requires_grad)
    teacher = sum(p.numel() for p in model.teacher.parameters())
    assert teacher > 0 and state_bytes(model) == ADAMW_BYTES * student + 4 * teacher
    assert state_bytes(model, ddp=True) == (ADAMW_BYTES + 4) * student + 4 * teacher  # DDP's gradient buckets


def test_saved_bytes_grow_by_the_same_amount_with_each_full_row():
    small = recipe()
    model = build_model(small).train()
    one, two, three = (saved_bytes(model, full_rows(small, model, n), bf16=False) for n in (1, 2, 3))
    assert two - one == three - two > 0  # every row is crop residues long: the same tensors, one row more
    batch = full_rows(small, model, 3)
    assert batch.tokens.shape == (3, 64) and not batch.padding_mask.any() and batch.masked_index.numel() > 0
    memory = step_memory(small, model, torch.device("cpu"), bf16=False)
    assert (memory.per_row, memory.fixed, memory.row) == (two - one, 2 * one - two, 64)
    # A row's saved tensors: at least its hidden states in fp32, one [64, 32] per layer and residual.
    assert memory.per_row >= 2 * 64 * 32 * 4


def test_tokens_that_fit_are_whole_rows_of_what_is_left():
    memory = StepMemory(state=1000, fixed=200, per_row=300, row=10)
    assert memory.tokens_that_fit(4000, fraction=0.5) == 20  # (2000 - 1200) // 300 = 2 rows
    assert memory.tokens_that_fit(4000, fraction=1.0) == 90  # (4000 - 1200) // 300 = 9 rows
    assert memory.tokens_that_fit(1000, fraction=1.0) == 0
    # A bench suite holds every row's state: that in place of the step's own
    assert memory.tokens_that_fit(4000, fraction=1.0, held=2500) == 40  # (4000 - 2500 - 200) // 300 = 4 rows
    assert "2.33 GiB held in all" in memory.describe(2 ** 33, held=2_500_000_000)
    assert memory.describe(2 ** 33, fraction=1.0).startswith(
        f"{(2 ** 33 - 1200) // 300 * 10} tokens a step fill 100% of 8.0 GiB")


def test_batch_tokens_fill_is_a_recipe_value_and_anything_else_is_refused_in_one_line():
    assert recipe(data={"batch_tokens": "fill"}).data.batch_tokens == "fill"
    for wrong in ("fil", 8, 2.5):
        with pytest.raises(RecipeError, match=rf"^tiny.yaml: data.batch_tokens: expected a whole number of tokens "
                                              rf"\(at least 16\) or fill, got {wrong!r}$"):
            recipe(data={"batch_tokens": wrong})


def test_fill_counts_a_copy_of_the_model_and_leaves_the_model_and_random_streams_as_they_were():
    raw = tiny(data={"batch_tokens": "fill"})
    raw["objectives"] = EMA  # a frozen teacher too: 4 bytes a parameter
    small = parse_recipe(raw, "tiny.yaml")
    model = build_model(small).eval()
    counted = step_memory(small, build_model(small).train(), torch.device("cpu"), bf16=False)
    # 75% of it holds the state, the fixed cost and 100 rows, with less to spare than DDP's buckets take
    memory = math.ceil((state_bytes(model) + counted.fixed + 100 * counted.per_row + 1000) / 0.75)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    streams = torch.get_rng_state()
    tokens, line = tokens_that_fill(small, model, torch.device("cpu"), memory, bf16=False)
    assert torch.equal(torch.get_rng_state(), streams) and not model.training
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
    assert tokens == counted.tokens_that_fit(memory) == 100 * 64
    assert line == f"data.batch_tokens fill: {counted.describe(memory)}"
    # Under DDP its gradient buckets (4 bytes a trainable parameter) in the state: a row fewer
    with_buckets = replace(counted, state=state_bytes(model, ddp=True))
    assert with_buckets.state - state_bytes(model) > 1000
    assert tokens_that_fill(small, model, torch.device("cpu"), memory, bf16=False, ddp=True) == (
        99 * 64, f"data.batch_tokens fill: {with_buckets.describe(memory)}") == (
        with_buckets.tokens_that_fit(memory), f"data.batch_tokens fill: {with_buckets.describe(memory)}")


def test_fill_memory_needs_a_gpu(capsys):
    from protjepa.cli import main

    assert main(["bench", "--quick", "--size", "tiny", "--device", "cpu", "--fill-memory"]) == 2
    assert capsys.readouterr().err.strip() == (
        "protjepa: error: --fill-memory: it fills a GPU's memory; this run is on the CPU")


def test_the_bench_fills_memory_with_the_tightest_variants_rows():
    from protjepa.bench.config import VARIANTS, BenchConfig, recipe_for
    from protjepa.bench.suite import rows_that_fill

    config = BenchConfig(size="tiny", crop=62)
    memory = 2 ** 29
    filled, line = rows_that_fill(config, torch.device("cpu"), memory)
    fits = {}
    for variant in VARIANTS:  # each variant's own count, at the suite's crop on padded rows
        recipe = recipe_for(config, variant)
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"crop": 62, "packing": False})})
        counted = step_memory(recipe, build_model(recipe).train(), torch.device("cpu"), bf16=False)
        fits[variant] = counted.tokens_that_fit(memory)
    tightest = min(fits, key=fits.get)
    assert filled.rows * 64 == fits[tightest] > 0 and filled.rows > 1
    assert line.startswith(
        f"--fill-memory: {filled.rows} rows; {tightest}: {fits[tightest]} tokens a step fill 75% of 0.5 GiB")
    # The suite's own models held beside the step (weights, gradients, moments): fewer rows
    held = 2 ** 27
    fewer, line = rows_that_fill(config, torch.device("cpu"), memory, held)
    assert 0 < fewer.rows < filled.rows and "0.12 GiB held in all" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_count_on_a_gpu_bounds_its_allocator_peak():
    small = recipe(data={"crop": 254, "batch_tokens": 4096})
    device = torch.device("cuda")
    model = build_model(small).to(device).train()
    memory = step_memory(small, model, device, bf16=True)
    batch = full_rows(small, model, 8).to(device)
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", torch.bfloat16):
        loss = model(batch).loss
    held = torch.cuda.memory_allocated() - start  # what the forward left alive for the backward
    loss.backward()
    assert 0.8 * (memory.fixed + 8 * memory.per_row) <= held <= 1.25 * (memory.fixed + 8 * memory.per_row)
