"""bf16 on the CPU: chosen only where the CPU multiplies bf16 natively, and a bf16 run trains
like an fp32 one (the same seed and batches) with fp32 losses, optimizer state and EMA teacher.
The 200-step measurement at the main job's sizes is benchmarks/bf16_parity.py."""
from __future__ import annotations

import math

import pytest
import torch
from composer.core import Callback

from protjepa import precision
from protjepa.precision import PrecisionError, choose_bf16, cpu_bf16_missing
from protjepa.recipe import TrainConfig, parse_recipe
from protjepa.training.composer_model import unwrap
from protjepa.training.trainer import build_run, fit, resolve_precision
from test_training import tiny

NATIVE_BF16 = cpu_bf16_missing() is None


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_flags", lambda: {"avx512_bf16": False, "amx_bf16": False})


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_flags", lambda: {"avx512_bf16": False, "amx_bf16": True})


def test_auto_is_bf16_on_a_cpu_where_it_is_native_and_faster(cpu_with_bf16, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 3.4)
    chosen = resolve_precision(TrainConfig(precision="auto"), "cpu")
    assert (chosen.composer, chosen.cpu_bf16) == ("fp32", True)  # Composer's amp_bf16 would not autocast here
    assert chosen.note == ("precision: bf16 autocast on the CPU (train.precision auto: its matrix products ran "
                           "3.40x faster here)")
    assert resolve_precision(TrainConfig(precision="fp32"), "cpu").cpu_bf16 is False


def test_auto_is_fp32_where_native_bf16_is_slower_but_bf16_can_be_asked_for(cpu_with_bf16, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.83)
    chosen = resolve_precision(TrainConfig(precision="auto"), "cpu")
    assert chosen.cpu_bf16 is False and "ran at 0.83x fp32's, under the 1.2x it takes" in chosen.note
    assert resolve_precision(TrainConfig(precision="bf16"), "cpu").cpu_bf16 is True


def test_the_speedup_is_measured_once():
    assert precision.cpu_bf16_speedup() is precision.cpu_bf16_speedup() > 0


def test_auto_is_fp32_on_a_cpu_without_it_and_says_why(cpu_without_bf16):
    chosen = resolve_precision(TrainConfig(precision="auto"), "cpu")
    assert (chosen.composer, chosen.cpu_bf16) == ("fp32", False)
    assert "neither AVX512-BF16 nor AMX-BF16" in chosen.note
    with pytest.raises(PrecisionError, match=r"^train.precision bf16: this CPU has neither"):
        resolve_precision(TrainConfig(precision="bf16"), "cpu")


def test_the_gpu_uses_composers_autocast(cpu_without_bf16):
    for requested in ("auto", "bf16"):
        assert resolve_precision(TrainConfig(precision=requested), "gpu").composer == "amp_bf16"
    assert resolve_precision(TrainConfig(precision="fp32"), "gpu").composer == "fp32"
    assert choose_bf16("auto", "cuda", "--precision") == (True, "bf16 autocast on the GPU (--precision auto)")


class Record(Callback):
    """Each training step's MLM loss, and the dtypes the encoder's first MLP layer computed in
    during training forwards (the collapse monitors run between steps, in fp32)."""

    def __init__(self):
        self.losses: list[float] = []
        self.dtypes: set[torch.dtype] = set()
        self.seen: set[torch.dtype] = set()
        self.hooked = False

    def fit_start(self, state, logger):
        if not self.hooked:
            layer = unwrap(state.model).encoder.layers[0].fc1
            layer.register_forward_hook(lambda module, args, out: self.seen.add(out.dtype))
            self.hooked = True

    def before_forward(self, state, logger):
        self.seen.clear()

    def after_forward(self, state, logger):
        self.dtypes |= self.seen
        self.losses.append(state.outputs.metrics["mlm/loss"].item())


def train_tiny(precision: str, tmp_path, data_root) -> tuple[Record, object]:
    raw = tiny(budget={"steps": 16}, train={"precision": precision, "checkpoint_at": [1.0], "monitor_every": 100})
    raw["objectives"][1]["target"] = {"source": "ema", "layer": "last", "momentum": 0.99}  # an EMA teacher too
    r = parse_recipe(raw, "tiny.yaml")
    spy = Record()
    run = build_run(r, tmp_path / precision, data_root=str(data_root), console=False, callbacks=(spy,))
    try:
        fit(run)
    finally:
        run.log.close()
        run.trainer.close()
    return spy, run


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16: auto trains in fp32 here")
def test_cpu_bf16_trains_like_fp32_with_fp32_state(tmp_path, data_root):
    fp32, _ = train_tiny("fp32", tmp_path, data_root)
    bf16, run = train_tiny("bf16", tmp_path, data_root)
    assert fp32.dtypes == {torch.float32} and bf16.dtypes == {torch.bfloat16}  # the forward did run in bf16
    assert len(bf16.losses) == len(fp32.losses) == 16 and all(math.isfinite(v) for v in bf16.losses)
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=0.01)  # the same batch and weights
    assert sum(bf16.losses[-4:]) == pytest.approx(sum(fp32.losses[-4:]), rel=0.03)  # and it learns alike
    model = run.model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.dtype for p in model.teacher.parameters()} == {torch.float32}
    state = run.trainer.state.optimizers[0].state
    assert state and {t.dtype for s in state.values() for t in s.values() if t.is_floating_point()} == {torch.float32}
    assert any(not torch.equal(t, s) for t, s in zip(model.teacher.parameters(), model.encoder.parameters()))
