"""Composer training runs of a tiny ESM-2 on the real corpus: budgets, schedule, resume, EMA,
collapse monitors, and the one-line errors."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from composer.core import Callback

from protjepa.flops import BatchCounts
from protjepa.model import ProtJEPA
from protjepa.paths import DataPathError
from protjepa.recipe import parse_recipe
from protjepa.training import checkpoints as checkpoints_module
from protjepa.training.budget import TrainingClock
from protjepa.training.checkpoints import CheckpointError
from protjepa.training.composer_model import ComposerProtJEPA, unwrap
from protjepa.training.summary import read_records
from protjepa.training.schedule import LRSchedule
from protjepa.training.trainer import TrainingError, build_run, compile_step, fit, train

TINY = {
    "name": "tiny",
    "encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
    "objectives": [
        {"name": "mlm"},
        {"name": "jepa", "weight": 0.45},
        {"name": "sigreg", "input": "jepa.pred", "num_directions": 16},
    ],
    "data": {"crop": 62, "batch_tokens": 512, "shuffle_buffer": 16},
    "optim": {"lr": 1e-3, "warmup": 0.2, "min_lr_ratio": 0.1},
    "budget": {"steps": 6},
    "train": {"device": "cpu", "log_every": 2, "monitor_every": 3, "monitor_sequences": 8, "checkpoint_at": [0.5, 1.0]},
}


def tiny(**sections) -> dict:
    raw = copy.deepcopy(TINY)
    for key, value in sections.items():  # sections merge into TINY's, a budget replaces it
        raw[key] = {**raw[key], **value} if key in raw and key != "budget" else value
    return raw


def recipe(**sections):
    return parse_recipe(tiny(**sections), "tiny.yaml")


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Spy(Callback):
    """Records each step's LR and batch; optionally makes each step, or each pause between
    steps, cost fake seconds on the training clock's time source."""

    def __init__(self, time: FakeTime | None = None, step_cost: float = 0.0, pause_cost: float = 0.0):
        self.time, self.step_cost, self.pause_cost = time, step_cost, pause_cost
        self.lrs: list[float] = []
        self.residues: list[int] = []
        self.flops: list[float] = []  # each step's model FLOPs

    def before_forward(self, state, logger):
        self.lrs.append(state.optimizers[0].param_groups[0]["lr"])
        self.residues.append(state.batch.num_residues)
        self.flops.append(unwrap(state.model).step_flops(BatchCounts.of(state.batch)))
        if self.time is not None:
            self.time.t += self.step_cost

    def batch_checkpoint(self, state, logger):
        if self.time is not None:
            self.time.t += self.pause_cost  # a slow checkpoint or monitor: not training time


def run_to_end(r, run_dir, data_root, **kwargs):
    run = build_run(r, run_dir, data_root=str(data_root), console=False, **kwargs)
    try:
        fit(run)
    finally:
        run.log.close()
        run.trainer.close()
    return run


def model_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["model"]


@pytest.mark.filterwarnings("ignore:Spy is not in the state_dict")
def test_steps_budget_checkpoints_and_exact_resume(tmp_path, data_root):
    checkpoints = tmp_path / "checkpoints"
    full = train(recipe(), tmp_path, data_root=str(data_root), console=False)
    assert full.summary["steps"] == 6
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "ckpt-0.500.pt", "ckpt-0.500.pt.sha256", "ckpt-1.000.pt", "ckpt-1.000.pt.sha256"]
    uninterrupted = model_state(checkpoints / "ckpt-1.000.pt")

    spy = Spy()  # resume the same run from half-way, as after a crash at step 5
    resumed = train(recipe(), tmp_path, data_root=str(data_root), console=False,
                    resume=checkpoints / "ckpt-0.500.pt", callbacks=(spy,))
    assert len(spy.lrs) == 3  # steps 4..6 only: the first three are not redone
    assert resumed.summary["steps"] == 6
    assert [p.name for p in resumed.checkpoints] == ["ckpt-1.000.pt"]
    again = model_state(checkpoints / "ckpt-1.000.pt")
    assert again.keys() == uninterrupted.keys()
    for key in again:  # same data stream, RNG and optimizer state: the same weights
        torch.testing.assert_close(again[key], uninterrupted[key], rtol=0, atol=1e-6, msg=key)
    logged = [(r["kind"], r["step"]) for r in read_records(tmp_path / "metrics.jsonl")]
    assert logged == [("monitor", 0), ("train", 2), ("monitor", 3), ("train", 4), ("train", 6), ("monitor", 6)]

    spy = Spy()  # a finished run, resumed (a crash after its last checkpoint): nothing to redo
    again = train(recipe(), tmp_path, data_root=str(data_root), console=False,
                  resume=checkpoints / "ckpt-1.000.pt", callbacks=(spy,))
    assert spy.lrs == [] and again.summary["steps"] == 6 and "nothing left to train" in again.text
    assert (tmp_path / "export" / "config.json").is_file()


def test_wall_clock_budget_stops_on_the_training_clock_and_schedules_by_time(tmp_path, data_root):
    # 10 fake seconds per step, 1000 per pause between steps (not counted): 100 s = 10 steps.
    time = FakeTime()
    spy = Spy(time, step_cost=10.0, pause_cost=1000.0)
    r = recipe(budget={"wall_clock": "100s"}, optim={"schedule": "cosine", "warmup": 0.2, "min_lr_ratio": 0.1},
               train={"monitor_every": 100, "log_every": 5, "checkpoint_at": [1.0]})
    run = run_to_end(r, tmp_path / "a", data_root, clock=TrainingClock(time), callbacks=(spy,))
    assert len(spy.lrs) == 10 and int(run.trainer.state.timestamp.batch) == 10
    assert run.tracker.clock.elapsed == pytest.approx(100.0)
    schedule = LRSchedule.from_config(r.optim)
    assert spy.lrs[5] == pytest.approx(1e-3 * schedule(0.5, 5))  # 50 s spent before step 6
    assert spy.lrs[0] == 0.0 and spy.lrs[1] == pytest.approx(1e-3 * 0.5)  # warm-up over 20 s

    # Steps that cost 2.5x as much reach the same LR at the same time.
    time = FakeTime()
    slow = Spy(time, step_cost=25.0)
    run_to_end(r, tmp_path / "b", data_root, clock=TrainingClock(time), callbacks=(slow,))
    assert len(slow.lrs) == 4
    assert slow.lrs[2] == pytest.approx(spy.lrs[5])


def test_tokens_budget_counts_non_padding_residues(tmp_path, data_root):
    spy = Spy()
    run = run_to_end(recipe(budget={"tokens": 1500}, train={"checkpoint_at": [1.0]}), tmp_path, data_root,
                     callbacks=(spy,))
    assert sum(spy.residues) >= 1500 > sum(spy.residues[:-1])  # stopped at the first step past the budget
    assert int(run.trainer.state.timestamp.token) == sum(spy.residues)
    records = read_records(tmp_path / "metrics.jsonl")
    assert records[-1]["tokens"] == sum(spy.residues)
    assert records[-1]["flops"] == run.tracker.flops == sum(spy.flops)  # counted whatever the budget's unit


@pytest.mark.filterwarnings("ignore:Spy is not in the state_dict")
def test_flops_budget_stops_at_the_first_step_that_reaches_it_and_resumes_its_count(tmp_path, data_root):
    budget = 3.5e8  # the tiny MLM+JEPA+SIGReg step on ~500-token batches: about 1.4e8 FLOPs
    r = recipe(budget={"flops": budget}, train={"checkpoint_at": [0.5, 1.0], "monitor_every": 100})
    spy = Spy()
    full = train(r, tmp_path, data_root=str(data_root), console=False, callbacks=(spy,))
    assert sum(spy.flops) >= budget > sum(spy.flops[:-1])  # stopped at the first step that reached the budget
    assert full.summary["steps"] == len(spy.flops) == 3
    assert full.summary["flops"] == sum(spy.flops)
    assert f"{sum(spy.flops):.3g} model FLOPs" in full.text
    half = sum(spy.flops[:2])  # the 0.5 checkpoint is written after step 2, the first past half the budget
    assert half >= budget / 2 > spy.flops[0]

    resumed_spy = Spy()
    resumed = train(r, tmp_path, data_root=str(data_root), console=False, callbacks=(resumed_spy,),
                    resume=tmp_path / "checkpoints" / "ckpt-0.500.pt")
    assert resumed_spy.flops == spy.flops[2:]  # the count went on from the checkpoint's, on the same batches
    assert resumed.summary["flops"] == full.summary["flops"] and resumed.summary["steps"] == 3


def test_ema_teacher_moves_after_each_step_on_the_budget_schedule(tmp_path, data_root, monkeypatch):
    calls = []
    original = ProtJEPA.ema_update

    def recording(self, momentum):
        calls.append(momentum)
        original(self, momentum)

    monkeypatch.setattr(ProtJEPA, "ema_update", recording)
    target = {"source": "ema", "momentum": 0.5, "momentum_end": 1.0, "layer": "half"}
    objectives = [{"name": "mlm"}, {"name": "jepa", "weight": 0.45, "target": target}]
    r = parse_recipe({**tiny(budget={"steps": 4}), "objectives": objectives}, "tiny.yaml")
    run = run_to_end(r, tmp_path, data_root)
    assert calls == pytest.approx([0.625, 0.75, 0.875, 1.0])  # momentum_at(k / 4) after step k
    teacher, student = run.model.teacher.state_dict(), run.model.encoder.state_dict()
    assert not torch.equal(teacher["embed_tokens.weight"], student["embed_tokens.weight"])


def test_jepa_only_collapses_where_mlm_does_not(tmp_path, data_root):
    """The monitors must show the JEPA-only failure mode (latent loss, no anti-collapse term)
    on a short run: the mean embeddings of different proteins become one direction."""
    train_cfg = {"monitor_every": 1000, "log_every": 1000, "monitor_sequences": 32, "checkpoint_at": [1.0]}
    jepa_only = [{"name": "jepa", "positions": "all", "loss": "mse"}]
    common = dict(budget={"steps": 60}, optim={"lr": 3e-3, "warmup": 0.1}, train=train_cfg)
    final = {}
    for name, objectives in (("mlm", [{"name": "mlm"}]), ("jepa_only", jepa_only)):
        r = parse_recipe({**tiny(**common), "objectives": objectives, "name": name}, f"{name}.yaml")
        run_to_end(r, tmp_path / name, data_root)
        final[name] = [x for x in read_records(tmp_path / name / "metrics.jsonl") if x["kind"] == "monitor"][-1]
    mlm, jepa = final["mlm"], final["jepa_only"]
    assert jepa["monitor/embed_std"] < 0.25 * mlm["monitor/embed_std"]
    assert jepa["monitor/effective_rank"] < 0.75 * mlm["monitor/effective_rank"]


def test_checkpoint_of_another_architecture_is_refused_in_one_line(tmp_path, data_root):
    small = recipe(budget={"steps": 1}, train={"checkpoint_at": [1.0]})
    run_to_end(small, tmp_path / "small", data_root)
    ckpt = tmp_path / "small" / "checkpoints" / "ckpt-1.000.pt"
    wider = recipe(encoder={"embed_dim": 48})
    with pytest.raises(CheckpointError, match="different architecture") as info:
        build_run(wider, tmp_path / "wide", data_root=str(data_root), resume=ckpt, console=False)
    assert str(ckpt) in str(info.value) and "\n" not in str(info.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a protjepa training checkpoint"):
        build_run(small, tmp_path / "junk", data_root=str(data_root), resume=junk, console=False)


def test_out_of_memory_is_one_line_naming_batch_tokens(tmp_path, data_root, monkeypatch):
    def oom(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(ComposerProtJEPA, "forward", oom)
    with pytest.raises(TrainingError, match=r"out of memory .* data\.batch_tokens=512.*data\.batch_tokens=256") as info:
        run_to_end(recipe(), tmp_path, data_root)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "checkpoints").glob("*"))


def test_interrupted_checkpoint_leaves_no_file(tmp_path, data_root, monkeypatch):
    def half_write(state, filename):
        Path(filename).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints_module, "save_checkpoint", half_write)
    with pytest.raises(KeyboardInterrupt):
        run_to_end(recipe(), tmp_path, data_root)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_missing_corpus_and_reused_run_dir_are_one_line_errors(tmp_path, data_root):
    with pytest.raises(DataPathError, match="nope.fasta.gz: no such data file"):
        build_run(recipe(data={"train": "nope.fasta.gz"}), tmp_path, data_root=str(data_root), console=False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-0.500.pt").write_bytes(b"")
    with pytest.raises(TrainingError, match="already holds checkpoints; pass --resume"):
        build_run(recipe(), tmp_path, data_root=str(data_root), console=False)


def test_unwrap_reaches_the_model_through_a_ddp_style_wrapper():
    inner = ComposerProtJEPA.__new__(ComposerProtJEPA)
    torch.nn.Module.__init__(inner)
    inner.model = torch.nn.Linear(1, 1)
    wrapper = torch.nn.Module()
    wrapper.module = inner
    assert unwrap(inner) is inner.model and unwrap(wrapper) is inner.model


def test_the_optimizer_is_fused_adamw_and_steps_as_the_reference_does():
    """build_optimizer: torch's fused AdamW (one kernel per parameter group) with the recipe's settings and
    no decay on 1-D parameters; its update equals the for-loop AdamW's on the same gradients."""
    from protjepa.recipe import OptimConfig
    from protjepa.training.trainer import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    reference = copy.deepcopy(model)
    settings = OptimConfig(lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(model, settings)
    assert fused.defaults["fused"] and [g["weight_decay"] for g in fused.param_groups] == [0.1, 0.0]
    plain = torch.optim.AdamW([{"params": [reference[0].weight], "weight_decay": 0.1},
                               {"params": [reference[0].bias, *reference[1].parameters()], "weight_decay": 0.0}],
                              lr=1e-2, betas=settings.betas, eps=settings.eps, foreach=False)
    x = torch.randn(8, 4)
    for _ in range(3):
        for m, opt in ((model, fused), (reference, plain)):
            m(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_compile_auto_is_on_on_a_gpu_only():
    settings = recipe()
    assert compile_step(settings, "gpu") == ({}, "torch.compile: on (train.compile auto: on on a GPU)")
    assert compile_step(settings, "cpu") == (None, "torch.compile: off (train.compile auto: off on a CPU)")
    assert compile_step(recipe(train={"compile": True}), "cpu") == ({}, "torch.compile: on (train.compile true)")
    assert compile_step(recipe(train={"compile": False}), "gpu")[0] is None


def test_a_compiled_single_objective_step_keeps_its_gradient():
    """One graph for the whole step (inductor): with one objective at weight 1, torch 2.14's inductor
    dropped the product by 1, and the loss it returned beside its detached copy (the logged metric)
    had no grad_fn. The compiled step's loss and gradients equal eager's."""
    from protjepa.build import build_model
    from protjepa.data.collate import Collator, encode_sequences

    r = parse_recipe({"name": "one", "encoder": TINY["encoder"], "objectives": [{"name": "mlm"}]}, "one.yaml")
    model = build_model(r)
    twin = copy.deepcopy(model)
    batch = Collator(masking=r.masking)(encode_sequences(["MKTAYIAKQRQISFVKSHFSRQ", "GLSDGEWQLVLNVWGKVEAD"]))
    eager = twin(batch)  # first: it decides the attention backend, which the graph then reads (no break)
    torch._dynamo.reset()
    compiled = torch.compile(model)(batch)
    assert compiled.loss.requires_grad
    torch.testing.assert_close(compiled.loss, eager.loss, rtol=1e-5, atol=1e-6)
    compiled.loss.backward()
    eager.loss.backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_a_compiled_run_trains_as_the_eager_one_and_its_compiling_is_off_the_clock(tmp_path, data_root):
    """train.compile: the same losses as eager (6 steps, fp32) within float tolerance; torch.compile's
    compiling is counted apart (clock.compiled), not as training time. (Not a comparison of seconds:
    how long 6 steps take beside compiling them depends on the machine's load.)"""
    from protjepa.training.summary import read_records

    def losses(compiled: bool):
        train = {**TINY["train"], "compile": compiled, "precision": "fp32", "log_every": 1, "checkpoint_at": [1.0]}
        run = run_to_end(recipe(train=train), tmp_path / str(compiled), data_root)
        return [r["loss"] for r in read_records(run.log.path) if "loss" in r], run.tracker.clock

    eager, eager_clock = losses(False)
    compiled, clock = losses(True)
    assert len(compiled) == len(eager) == 6
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert eager_clock.compiled == 0.0 and clock.compiled > 0
