"""Several processes through Composer's launcher: two CPU ranks (gloo) under DDP and under FSDP train
what one process trains on the same global batch (the two ranks' batches of each step together),
stop together under every budget, resume an FSDP checkpoint to the uninterrupted losses, export
the same encoder, hold half the weights and optimizer state each under FSDP; and a killed rank ends
the run in one line, with a checkpoint that the command it prints resumes.

Each launch costs a few seconds of start-up on two cores: one script per strategy runs all of its
runs in the same two processes.
"""
from __future__ import annotations

import copy
import gzip
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from composer.core import DataSpec
from torch.utils.data import DataLoader, IterableDataset

from protjepa.batch import Batch
from protjepa.build import build_model
from protjepa.data.corpus import make_corpus
from protjepa.data.fasta import FastaReader
from protjepa.export import load_encoder
from protjepa.flops import BatchCounts
from protjepa.objectives.sigreg import SIGReg, SIGRegConfig
from protjepa.objectives.vicreg import VICReg, VICRegConfig
from protjepa.recipe import RecipeError, parse_recipe
from protjepa.training import trainer as trainer_module
from protjepa.training.parallel import composer_parallelism
from protjepa.training.summary import read_records

COMPOSER = Path(sys.executable).parent / "composer"
RANKS = 2
CROP = 30
# Losses of 2 ranks against 1 process after each of 20 steps: the same sums in another order
# (DDP's average of the ranks' gradients, FSDP's reduce-scatter), drifting through AdamW.
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-4  # the exported weights, likewise
STOP_STEP = 6  # where the FLOP and token budgets below run out, counted from the ranks' own shards

# The ranks' runs: sequences of at least CROP residues, packed one to a row, so that every rank's
# batch selects as many positions (6 of 30 per sequence) and DDP's mean of the ranks' mean losses
# is the global batch's mean loss.
GLOBAL = {
    "name": "two_ranks",
    "encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
    "objectives": [
        {"name": "mlm"},
        {"name": "jepa", "weight": 0.45, "target": {"source": "ema", "layer": "half"}},
        {"name": "sigreg", "weight": 0.05, "input": "jepa.pred", "num_directions": 16},
        {"name": "vicreg", "weight": 0.02, "input": "jepa.pred"},
    ],
    "data": {"valid": None, "crop": CROP, "batch_tokens": 8 * (CROP + 2), "packing": True, "shuffle_buffer": 8},
    "optim": {"lr": 1e-3, "warmup": 0.1},
    "budget": {"steps": 20},
    "train": {"device": "cpu", "precision": "fp32", "threads": 1, "log_every": 1, "monitor_every": 10,
              "monitor_sequences": 4, "checkpoint_at": [0.5, 1.0]},
}
# The budget runs: the real corpus, padded rows of every length, so the ranks' batches differ in size.
BUDGETS = {
    "name": "budgets",
    "encoder": GLOBAL["encoder"],
    "objectives": [{"name": "mlm"}, {"name": "jepa", "weight": 0.45}],
    "data": {"crop": CROP, "batch_tokens": 256, "shuffle_buffer": 8},
    "train": {**GLOBAL["train"], "log_every": 5, "checkpoint_at": [1.0]},
}

SCRIPT = r'''
"""One rank of tests/test_parallel.py's runs: argv = the test's folder, the data root, ddp | fsdp."""
import hashlib, json, sys
from pathlib import Path

import torch
from composer.core import Callback
from composer.utils import dist

from protjepa.flops import BatchCounts
from protjepa.objectives.sigreg import SIGReg, SIGRegConfig
from protjepa.objectives.vicreg import VICReg, VICRegConfig
from protjepa.recipe import parse_recipe
from protjepa.training.budget import BudgetTracker, TrainingClock
from protjepa.training.composer_model import unwrap
from protjepa.training.parallel import end_process_group, local_shard
from protjepa.training.trainer import train

out, data_root, strategy = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
recipes = json.loads((out / "recipes.json").read_text())
rank = dist.get_global_rank()


def digest(tensors):
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest()


class Record(Callback):
    """Per step the LR, a digest of this rank's batch and its FLOPs (``cost``: fake seconds on this rank's
    training clock); at the end the step, the run's FLOP count, this rank's weights and what it holds."""

    def __init__(self, time=None, cost=0.0):
        self.time, self.cost = time, cost
        self.lrs, self.batches, self.flops = [], [], []

    def before_forward(self, state, logger):
        self.lrs.append(state.optimizers[0].param_groups[0]["lr"])
        self.batches.append(digest([state.batch.tokens]))
        self.flops.append(unwrap(state.model).step_flops(BatchCounts.of(state.batch)))
        if self.time is not None:
            self.time[0] += self.cost

    def fit_end(self, state, logger):
        model = unwrap(state.model)
        tracker = next(c for c in state.callbacks if isinstance(c, BudgetTracker))
        moments = [v for s in state.optimizers[0].state.values() for k, v in s.items() if k != "step"]
        self.result = {
            "lrs": self.lrs, "batches": self.batches, "flops": self.flops, "steps": int(state.timestamp.batch),
            "run_flops": tracker.flops, "weights": digest(local_shard(p) for p in model.parameters()),
            "held": {"weights": [sum(local_shard(p).numel() for p in model.parameters()),
                                 sum(p.numel() for p in model.parameters())],
                     "optimizer": [sum(local_shard(v).numel() for v in moments), sum(v.numel() for v in moments)]},
        }


def run(name, recipe, record=None, **options):
    record = record or Record()
    train(parse_recipe(recipes[recipe], f"{recipe}.yaml"), out / name, data_root=data_root, callbacks=(record,),
          console=False, **options)
    return record.result


def statistics():
    """SIGReg and VICReg training on this rank's half of 96 rows (with its gradient, divided by the
    ranks as DDP averages), and in evaluation on all 96 rows."""
    x = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))
    found = {}
    for make in (lambda: SIGReg(SIGRegConfig(num_directions=8), None, "sigreg"),
                 lambda: VICReg(VICRegConfig(), None, "vicreg")):
        mine, whole = x[rank::2].clone().requires_grad_(), x.clone().requires_grad_()
        trained, evaluated = make().regularize(mine).loss, make().eval().regularize(whole).loss
        (trained + evaluated).backward()
        found[type(make()).__name__] = {"trained": trained.item(), "evaluated": evaluated.item(),
                                        "grad": (mine.grad / dist.get_world_size()).tolist(),
                                        "whole_grad": whole.grad[rank::2].tolist()}
    return found


report = {}
if strategy == "ddp":
    report["ddp"] = run("ddp", "global")
    time = [0.0]  # rank 1's steps cost twice rank 0's: the slower clock ends the run for both
    report["wall_clock"] = run("wall_clock", "wall_clock", Record(time, 0.125 * (1 + rank)),
                               clock=TrainingClock(now=lambda: time[0]))
    report["flops"] = run("flops", "flops")
    report["statistics"] = statistics()
else:
    report["fsdp"] = run("fsdp", "fsdp")
    report["fsdp_resumed"] = run("fsdp_resumed", "fsdp", resume=out / "fsdp" / "checkpoints" / "ckpt-0.500.pt")
    report["tokens"] = run("tokens", "tokens")
(out / f"rank{rank}.json").write_text(json.dumps(report))
end_process_group()  # as `protjepa train` does: gloo's threads left at exit can abort a rank
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``composer -n 2 ARGS`` on this machine's CPU, one torch thread a rank."""
    return subprocess.run([str(COMPOSER), "-n", str(RANKS), "--master_port", str(free_port()), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data_root) -> Path:
    """The test's folder: a FASTA of the first real sequences of at least CROP residues, and the recipes."""
    folder = tmp_path_factory.mktemp("parallel")
    source = data_root / "pretrain_swissprot50" / "swissprot2014_50_train.fasta.gz"
    long_enough = (r for r in FastaReader(source) if len(r.sequence) >= CROP)
    with gzip.open(folder / "long.fasta.gz", "wt") as f:
        for _, record in zip(range(400), long_enough):
            f.write(f">{record.id}\n{record.sequence}\n")
    recipes = {"global": copy.deepcopy(GLOBAL), "wall_clock": {**BUDGETS, "budget": {"wall_clock": 1}},
               "flops": {**BUDGETS, "budget": {"flops": budget_at(BUDGETS, data_root, "flops")}},
               "tokens": {**BUDGETS, "budget": {"tokens": budget_at(BUDGETS, data_root, "tokens")},
                          "train": {**BUDGETS["train"], "parallelism": "fsdp"}}}
    recipes["global"]["data"]["train"] = str(folder / "long.fasta.gz")
    recipes["fsdp"] = copy.deepcopy(recipes["global"])
    recipes["fsdp"]["train"]["parallelism"] = "fsdp"
    (folder / "recipes.json").write_text(json.dumps(recipes))
    (folder / "ranks.py").write_text(SCRIPT)
    return folder


def shards(raw: dict, data_root: Path) -> list:
    """The training corpus of each of the two ranks, as the launched runs read it."""
    recipe = parse_recipe(raw, "shards.yaml")
    corpora = [make_corpus(recipe.data, recipe.masking, "train", seed=recipe.seed, root=str(data_root))
               for _ in range(RANKS)]
    for rank, corpus in enumerate(corpora):
        corpus.rank, corpus.world_size = rank, RANKS
    return corpora


def budget_at(raw: dict, data_root: Path, unit: str) -> float:
    """The run's model FLOPs or non-padding tokens, over both ranks, after STOP_STEP steps."""
    model = build_model(parse_recipe(raw, "budget.yaml"))
    steps = zip(*shards(raw, data_root))
    batches = [batch for _, step in zip(range(STOP_STEP), steps) for batch in step]
    if unit == "tokens":
        return sum(b.num_residues for b in batches)
    return sum(model.step_flops(BatchCounts.of(b)) for b in batches)


def together(a: Batch, b: Batch) -> Batch:
    """Rank 0's and rank 1's batches of one step as one batch, b's rows after a's (packed rows of one length)."""
    rows, length = a.shape
    assert b.shape[1] == length
    flat = rows * length
    return Batch(
        tokens=torch.cat([a.tokens, b.tokens]), inputs=torch.cat([a.inputs, b.inputs]),
        padding_mask=torch.cat([a.padding_mask, b.padding_mask]),
        masked_index=torch.cat([a.masked_index, b.masked_index + flat]),
        residue_index=torch.cat([a.residue_index, b.residue_index + flat]),
        residue_sequence=torch.cat([a.residue_sequence, b.residue_sequence + a.num_sequences]),
        segment_ids=torch.cat([a.segment_ids, b.segment_ids]), positions=torch.cat([a.positions, b.positions]),
        block_seqlens=a.block_seqlens + b.block_seqlens,
        num_residues=a.num_residues + b.num_residues, num_sequences=a.num_sequences + b.num_sequences,
        num_padding=a.num_padding + b.num_padding, attention_pairs=a.attention_pairs + b.attention_pairs,
    )


class GlobalBatches(IterableDataset):
    def __init__(self, corpora):
        self.corpora = corpora

    def __iter__(self):
        return (together(*step) for step in zip(*self.corpora))


@pytest.fixture(scope="module")
def one_process(folder, data_root) -> Path:
    """The 20-step run on one process, each step on both ranks' batches of that step together."""
    recipes = json.loads((folder / "recipes.json").read_text())
    corpora = shards(recipes["global"], data_root)
    spec = DataSpec(DataLoader(GlobalBatches(corpora), batch_size=None), split_batch=lambda batch, size: [batch],
                    get_num_samples_in_batch=len, get_num_tokens_in_batch=lambda batch: batch.num_residues)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "train_data", lambda recipe, root, model: spec)
        trainer_module.train(parse_recipe(recipes["global"], "global.yaml"), folder / "one_process",
                             data_root=str(data_root), console=False)
    return folder / "one_process"


def ranks_report(folder: Path, data_root: Path, strategy: str) -> list[dict]:
    done = launch([str(folder / "ranks.py"), str(folder), str(data_root), strategy], folder)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(RANKS)]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def assert_same_losses(run_dir: Path, reference: Path, tolerance: float) -> None:
    ours, theirs = losses(run_dir), losses(reference)
    assert list(ours) == list(theirs)
    for step in ours:
        assert ours[step] == pytest.approx(theirs[step], abs=tolerance), f"step {step}"


def assert_same_encoder(run_dir: Path, reference: Path) -> None:
    ours, theirs = load_encoder(run_dir / "export").state_dict(), load_encoder(reference / "export").state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=WEIGHT_TOLERANCE, msg=name)


def assert_stopped_together(report: list[dict], run: str, step: int) -> None:
    assert [r[run]["steps"] for r in report] == [step] * RANKS
    assert report[0][run]["lrs"] == report[1][run]["lrs"]  # one budget fraction: one schedule


def test_ddp_trains_what_one_process_trains_on_the_global_batch(folder, data_root, one_process):
    report = ranks_report(folder, data_root, "ddp")
    ddp = [r["ddp"] for r in report]
    assert ddp[0]["batches"][0] != ddp[1]["batches"][0]  # each rank reads its own shard
    assert ddp[0]["weights"] == ddp[1]["weights"]  # the gradients averaged every step: one model
    # the run's FLOPs: the sum over the ranks of their own batches', on every rank
    assert ddp[0]["run_flops"] == ddp[1]["run_flops"] == pytest.approx(sum(ddp[0]["flops"]) + sum(ddp[1]["flops"]))
    assert_same_losses(folder / "ddp", one_process, LOSS_TOLERANCE)
    assert_same_encoder(folder / "ddp", one_process)
    assert sorted(p.name for p in (folder / "ddp" / "checkpoints").iterdir()) == [
        "ckpt-0.500.pt", "ckpt-0.500.pt.sha256", "ckpt-1.000.pt", "ckpt-1.000.pt.sha256"]

    # 1 fake second of training clock, steps costing 0.125 s on rank 0 and 0.25 s on rank 1: the
    # slowest clock ends the run for both after 4 steps (rank 0 alone would have run 8).
    assert_stopped_together(report, "wall_clock", 4)
    assert_stopped_together(report, "flops", STOP_STEP)

    # SIGReg and VICReg statistics are all-reduced over the ranks while training: each rank's loss on
    # its 48 rows is the 96 rows' loss, and its gradient (averaged as DDP does) the 96 rows' gradient
    # there; in evaluation they are this process's rows, as on one process.
    x = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))
    alone = {"SIGReg": SIGReg(SIGRegConfig(num_directions=8), None, "sigreg").eval().regularize(x).loss.item(),
             "VICReg": VICReg(VICRegConfig(), None, "vicreg").eval().regularize(x).loss.item()}
    for name, loss in alone.items():
        for rank in report:
            found = rank["statistics"][name]
            assert found["trained"] == pytest.approx(loss, rel=1e-5)
            assert found["evaluated"] == pytest.approx(loss, rel=1e-5)
            torch.testing.assert_close(torch.tensor(found["grad"]), torch.tensor(found["whole_grad"]),
                                       rtol=1e-4, atol=1e-7)


def test_fsdp_shards_resumes_and_trains_what_one_process_trains(folder, data_root, one_process):
    report = ranks_report(folder, data_root, "fsdp")
    for rank in report:  # each rank holds about half of the weights (EMA teacher included) and of AdamW's moments
        for part in ("weights", "optimizer"):
            held, total = rank["fsdp"]["held"][part]
            assert 0.45 * total <= held <= 0.55 * total, part
    for part in ("weights", "optimizer"):
        assert sum(r["fsdp"]["held"][part][0] for r in report) == report[0]["fsdp"]["held"][part][1]
    assert_same_losses(folder / "fsdp", one_process, LOSS_TOLERANCE)
    assert_same_encoder(folder / "fsdp", one_process)

    # resumed at step 10 from the checkpoint FSDP wrote: the uninterrupted run's losses from there on
    resumed = losses(folder / "fsdp_resumed")
    assert list(resumed) == list(range(11, 21))
    uninterrupted = losses(folder / "fsdp")
    for step, loss in resumed.items():
        assert loss == pytest.approx(uninterrupted[step], abs=1e-6), f"step {step}"
    assert_same_encoder(folder / "fsdp_resumed", folder / "fsdp")
    assert_stopped_together(report, "tokens", STOP_STEP)


KILLER = '''
import os, signal
from pathlib import Path

from composer.core import Callback
from composer.utils import dist


class KillOnce(Callback):
    """SIGKILLs global rank ``rank`` at the end of step ``step``, once: ``marker`` says it happened."""

    def __init__(self, rank: int, step: int, marker: str):
        self.rank, self.step, self.marker = rank, step, Path(marker)

    def batch_end(self, state, logger):
        if dist.get_global_rank() == self.rank and int(state.timestamp.batch) == self.step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_killed_rank_ends_the_run_in_one_line_with_a_checkpoint_to_resume(tmp_path, data_root):
    """A shipped recipe through the command line under FSDP: rank 1 is killed after step 6 (checkpoints
    after steps 3 and 5); rank 0 stops with one line naming the newest checkpoint and the command that
    resumes it, and that command trains the run to its end."""
    (tmp_path / "killer.py").write_text(KILLER)
    run_dir = tmp_path / "run"
    sets = {"encoder.num_layers": 2, "encoder.embed_dim": 32, "encoder.attention_heads": 4, "data.crop": CROP,
            "data.batch_tokens": 256, "data.shuffle_buffer": 8, "train.device": "cpu", "train.precision": "fp32",
            "train.threads": 1, "train.monitor_sequences": 4, "train.monitor_every": 5, "train.log_every": 5,
            "train.checkpoint_at": "[0.25, 0.5, 1.0]", "train.parallelism": "fsdp",
            "train.callbacks": f"[{{_component_: killer.KillOnce, rank: 1, step: 6, marker: {tmp_path / 'killed'}}}]"}
    args = ["-m", "protjepa", "train", "mlm_jepa_ema_half", "--budget", "10steps", "--run-dir", str(run_dir),
            "--data-root", str(data_root)] + [word for key, value in sets.items() for word in ("--set", f"{key}={value}")]
    killed = launch(args, tmp_path, PYTHONPATH=str(tmp_path))
    output = killed.stdout + killed.stderr
    assert killed.returncode != 0 and (tmp_path / "killed").exists(), output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    said = [line for line in output.splitlines() if line.startswith("protjepa:")]
    assert len(said) == 1, output[-4000:]
    newest = run_dir / "checkpoints" / "ckpt-0.500.pt"
    # rank 0 saw rank 1's socket close, or else the launcher's SIGTERM reached it first
    assert said[0].startswith(("protjepa: error: rank 0 of 2: another process of the run is gone (",
                               "protjepa: stopped by SIGTERM: stopped after step")), said[0]
    assert f"newest checkpoint: {newest}; continue with: composer -n 2 -m protjepa train" in said[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [  # whole files, nothing half-written
        "ckpt-0.250.pt", "ckpt-0.250.pt.sha256", "ckpt-0.500.pt", "ckpt-0.500.pt.sha256"]

    command = shlex.split(said[0].split("continue with: ", 1)[1])
    assert command[-1] == "--resume"
    resumed = launch(command[3:], tmp_path, PYTHONPATH=str(tmp_path))  # after "composer -n 2"
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert f"resumed from {newest} at step 5" in resumed.stdout
    assert max(losses(run_dir)) == 10
    assert (run_dir / "export" / "config.json").is_file()


def test_the_strategy_key_old_run_recipes_and_fsdp_on_the_cpus_of_a_gpu_machine(tmp_path, data_root, monkeypatch):
    with pytest.raises(RecipeError, match=r"train\.parallelism: expected ddp\|fsdp"):
        parse_recipe({**BUDGETS, "train": {"parallelism": "zero3"}}, "strategy.yaml")
    # the recipe.yaml of a run written before the key: fsdp null was the default (DDP); an FSDP config is refused
    assert parse_recipe({**BUDGETS, "train": {"fsdp": None}}, "recipe.yaml").train.parallelism == "ddp"
    with pytest.raises(RecipeError, match=r"^recipe\.yaml: train: fsdp: replaced by parallelism: fsdp \(Composer's"):
        parse_recipe({**BUDGETS, "train": {"fsdp": {"sharding_strategy": "FULL_SHARD"}}}, "recipe.yaml")
    fsdp = parse_recipe({**BUDGETS, "train": {**BUDGETS["train"], "parallelism": "fsdp"}}, "fsdp.yaml")
    assert composer_parallelism(fsdp.train) is None  # one process: plain training, whatever the strategy
    monkeypatch.setenv("WORLD_SIZE", "2")  # as Composer's launcher sets it; refused before the ranks connect
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # Composer's FSDP2 set-up would use the GPU
    with pytest.raises(trainer_module.TrainingError,
                       match="^train.parallelism: fsdp on the CPUs of a machine with a GPU: set train.device: cuda"):
        trainer_module.build_run(fsdp, tmp_path / "run", data_root=str(data_root), console=False)
