"""Where a step's time goes (protjepa/bench/profile.py), and the utilisation targets bench prints
beside it (protjepa/bench/ratios.py): categories by hand on a made-up trace, then a real profile."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from protjepa.attention import PROFILER_SCOPE
from protjepa.bench.profile import OPTIMIZER_SCOPE, StepProfile, category_of_operator, profile_row, split_events
from protjepa.bench.ratios import utilisation_targets
from protjepa.bench.steps import OptimizerStep
from protjepa.bench.timing import RowResult
from protjepa.recipe import OptimConfig

CPU = torch.autograd.DeviceType.CPU


def event(name, spent, parent=None, sequence_nr=-1, thread=1, fwd_thread=0):
    return SimpleNamespace(name=name, self_cpu_time_total=spent, cpu_parent=parent, sequence_nr=sequence_nr,
                           thread=thread, fwd_thread=fwd_thread, device_type=CPU, self_device_time_total=0)


def test_categories_by_hand():
    # Forward: attention's scope holds a cast (seq 7) and the kernel (seq 8); a linear outside it (seq 9).
    scope = event(PROFILER_SCOPE, 2)
    cast = event("aten::_to_copy", 3, scope, sequence_nr=7)
    kernel = event("aten::_scaled_dot_product_flash_attention_for_cpu", 50, scope, sequence_nr=8)
    linear = event("aten::linear", 1)
    mm = event("aten::addmm", 40, linear, sequence_nr=9)
    # Backward: the nodes of seq 8 (attention) and 9 (a matrix product); autograd's own time is "other"
    # (a node of attention's is attention's).
    node8 = event("autograd::engine::evaluate_function: FlashBackward0", 4, sequence_nr=8, fwd_thread=1)
    grad8 = event("aten::_scaled_dot_product_flash_attention_for_cpu_backward", 100, node8)
    node9 = event("autograd::engine::evaluate_function: AddmmBackward0", 5, sequence_nr=9, fwd_thread=1)
    grad9 = event("aten::mm", 80, node9)
    gelu = event("aten::gelu_backward", 30, node9)
    # The optimizer's scope claims even its matrix-free norms and its foreach ops.
    optimizer = event(OPTIMIZER_SCOPE, 1)
    norm = event("aten::linalg_vector_norm", 6, optimizer)
    adam = event("aten::_fused_adamw_", 9, optimizer)
    embedding = event("aten::embedding_dense_backward", 7)
    events = [scope, cast, kernel, linear, mm, node8, grad8, node9, grad9, gelu, optimizer, norm, adam, embedding]
    assert split_events(events, on_device=False) == {
        "attention": 2 + 3 + 50 + 4 + 100, "matmul": 1 + 40 + 80, "elementwise": 30, "optimizer": 1 + 6 + 9,
        "other": 5 + 7}
    # The same sequence number recorded on another thread is another operator.
    node8.fwd_thread = 2
    assert split_events(events, on_device=False)["attention"] == 2 + 3 + 50


def test_operator_names():
    assert [category_of_operator(n) for n in ("aten::bmm", "aten::native_layer_norm", "aten::copy_",
                                              "aten::embedding", "aten::nll_loss_forward")] == [
        "matmul", "elementwise", "elementwise", "other", "other"]


def test_a_real_step_splits_into_every_category(data_root):
    from protjepa.bench.batches import corpus_batches
    from protjepa.bench.config import BenchConfig, recipe_for
    from protjepa.bench.steps import model_step
    from protjepa.build import build_model

    config = BenchConfig(size="tiny", data_root=str(data_root))
    recipe = recipe_for(config, "mlm")
    model = build_model(recipe)
    batches = corpus_batches(recipe, 64, 4 * 72, False, 2, torch.device("cpu"), str(data_root))
    profile = profile_row("mlm", model_step(model, recipe.optim, torch.device("cpu"), "fp32"), batches, 2,
                          torch.device("cpu"))
    assert all(profile.split[c] > 0 for c in ("attention", "matmul", "elementwise", "optimizer")), profile.split
    assert sum(profile.share(c) for c in profile.split) == pytest.approx(1.0)
    assert sum(profile.split.values()) <= profile.ms_per_step * 1.05  # self times never exceed the clock


def row(name, mfu):
    return RowResult(name, name, "padded", 1.0, 1.0, (1.0, 1.0), 1.0, tflops=1.0, mfu=mfu)


def test_utilisation_targets_on_a_cpu():
    rows = [row("mlm", 0.55), row("mlm+bf16", 0.2)]
    profiles = [StepProfile("mlm", 10.0, dict(attention=2.0, matmul=8.0)),
                StepProfile("mlm+bf16", 10.0, dict(attention=3.0, matmul=7.0)),
                StepProfile("jepa_only", 10.0, dict(attention=9.0, matmul=1.0))]
    fast = {q.name: q for q in utilisation_targets(rows, profiles, {"fp32": 1.0, "bf16": 5.0}, torch.device("cpu"),
                                                   None)}
    assert (fast["mlm MFU"].target, fast["mlm MFU"].met) == (">= 0.5", True)
    assert (fast["mlm+bf16 MFU"].target, fast["mlm+bf16 MFU"].met) == (">= 0.25", False)
    assert fast["attention share mlm"].value == pytest.approx(0.2) and fast["attention share mlm"].met
    assert fast["attention share mlm+bf16"].value == pytest.approx(0.3) and fast["attention share mlm+bf16"].met is False
    assert fast["attention share jepa_only"].target is None  # only the MLM step's share has a target
    # bf16 products only 1.5x fp32's: the bf16 target is printed, not judged, and says why.
    slow = {q.name: q for q in utilisation_targets(rows, [], {"fp32": 1.0, "bf16": 1.5}, torch.device("cpu"), None)}
    assert slow["mlm+bf16 MFU"].met is None and "not applicable here" in slow["mlm+bf16 MFU"].what
    assert "1.5x fp32's" in slow["mlm+bf16 MFU"].what
    # No bf16 rows at all (no native bf16): still printed as not applicable, with the reason.
    none = {q.name: q for q in utilisation_targets(rows[:1], [], {"fp32": 1.0, "bf16": 0.5}, torch.device("cpu"),
                                                   "no AVX512-BF16")}
    assert math.isnan(none["mlm+bf16 MFU"].value) and none["mlm+bf16 MFU"].met is None
    assert "no AVX512-BF16" in none["mlm+bf16 MFU"].what


def test_utilisation_targets_on_a_gpu():
    rows = [row("mlm", 0.41), row("mlm_jepa_masked", 0.30)]
    targets = {q.name: q for q in utilisation_targets(rows, [], {"fp32": 1.0, "bf16": 1.0}, torch.device("cuda"),
                                                      None)}
    assert (targets["mlm MFU"].target, targets["mlm MFU"].met) == (">= 0.4", True)
    assert (targets["mlm_jepa_masked MFU"].target, targets["mlm_jepa_masked MFU"].met) == (">= 0.35", False)
    # Compiled rows (training compiles on a GPU by default) are judged each, beside the eager ones.
    rows += [row("mlm+compile", 0.39), row("mlm_jepa_masked+static", 0.36)]
    targets = {q.name: q for q in utilisation_targets(rows, [], {"fp32": 1.0, "bf16": 1.0}, torch.device("cuda"),
                                                      None)}
    assert sorted(targets) == ["mlm MFU", "mlm+compile MFU", "mlm_jepa_masked MFU", "mlm_jepa_masked+static MFU"]
    assert (targets["mlm+compile MFU"].target, targets["mlm+compile MFU"].met) == (">= 0.4", False)
    assert targets["mlm_jepa_masked+static MFU"].met and "CUDA graphs" in targets["mlm_jepa_masked+static MFU"].what


def test_the_optimizer_step_runs_in_its_scope():
    module = torch.nn.Linear(2, 2)
    step = OptimizerStep(module, lambda p: module(torch.ones(1, 2)).sum(), OptimConfig(), torch.device("cpu"), "fp32")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(None)
    scoped = [e for e in prof.events() if e.cpu_parent is not None and e.cpu_parent.name == OPTIMIZER_SCOPE]
    assert any("adamw" in e.name.lower() for e in scoped), [e.name for e in scoped]
