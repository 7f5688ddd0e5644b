"""Data-parallel training through Composer's launcher: two CPU processes (gloo) train a tiny
recipe on different shards of the corpus and end with the same weights."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

COMPOSER = Path(sys.executable).parent / "composer"

SCRIPT = '''
import hashlib, sys
from pathlib import Path

import torch
from composer.core import Callback
from composer.utils import dist

from protjepa.flops import BatchCounts
from protjepa.recipe import parse_recipe
from protjepa.training.budget import BudgetTracker
from protjepa.training.composer_model import unwrap
from protjepa.training.trainer import train

out, data_root = Path(sys.argv[1]), sys.argv[2]


def digest(tensors):
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest()


class Fingerprints(Callback):
    """Each rank writes a digest of its first batch and of its final weights (student and teacher),
    the model FLOPs of its own batches, and the run's FLOP count as its budget tracker holds it."""

    first_batch = None
    own_flops = 0.0

    def after_dataloader(self, state, logger):
        self.first_batch = self.first_batch or digest([state.batch.tokens])
        self.own_flops += unwrap(state.model).step_flops(BatchCounts.of(state.batch))

    def fit_end(self, state, logger):
        weights = digest(unwrap(state.model).state_dict().values())
        tracker = next(c for c in state.callbacks if isinstance(c, BudgetTracker))
        (out / f"rank{dist.get_global_rank()}.txt").write_text(
            f"{weights} {self.first_batch} {self.own_flops!r} {tracker.flops!r}")


recipe = parse_recipe({
    "name": "tiny_ddp",
    "encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
    "objectives": [
        {"name": "mlm"},
        {"name": "jepa", "weight": 0.45, "target": {"source": "ema", "layer": "half"}},
        {"name": "sigreg", "input": "jepa.pred", "num_directions": 16},
    ],
    "data": {"crop": 30, "batch_tokens": 256, "shuffle_buffer": 8},
    "budget": {"wall_clock": "2s"},  # each rank's clock differs: they must agree on LR, checkpoints, the end
    "train": {"device": "cpu", "threads": 1, "log_every": 5, "monitor_every": 10, "monitor_sequences": 4,
              "checkpoint_at": [0.5, 1.0]},
}, "tiny_ddp.yaml")
train(recipe, out / "run", data_root=data_root, callbacks=(Fingerprints(),), console=False)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_end_with_identical_weights(tmp_path, data_root):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(COMPOSER), "-n", "2", "--master_port", str(free_port()), str(script), str(tmp_path), str(data_root)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (weights0, batch0, own0, run0), (weights1, batch1, own1, run1) = (
        (tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert batch0 != batch1  # each rank read its own shard of the corpus
    assert weights0 == weights1  # gradients averaged every step: one model
    assert float(run0) == float(run1) == float(own0) + float(own1)  # the run's FLOPs: the sum over ranks
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "ckpt-0.500.pt", "ckpt-0.500.pt.sha256", "ckpt-1.000.pt", "ckpt-1.000.pt.sha256"]
    assert (tmp_path / "run" / "export" / "config.json").is_file()
