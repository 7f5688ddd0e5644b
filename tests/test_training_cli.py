"""``protjepa train`` end to end (a subprocess, a tiny ESM-2 on the real corpus), the main
job's settings, and the CLI's one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from protjepa.cli import main
from protjepa.commands.train import main_job_settings, unused_run_dir
from protjepa.export import load_encoder
from protjepa.recipe import load_recipe
from protjepa.checkpoint_file import latest_checkpoint
from protjepa.training.summary import read_records

REPO = Path(__file__).resolve().parents[1]

TINY_RECIPE = """\
name: tiny_cli
encoder: {name: esm2, num_layers: 2, embed_dim: 32, attention_heads: 4}
objectives:
  - name: mlm
  - {name: jepa, weight: 0.45}
  - {name: sigreg, input: jepa.pred, num_directions: 16}
data: {crop: 64, batch_tokens: 1024, shuffle_buffer: 64}
optim: {lr: 3.0e-3, warmup: 0.1}
budget: {steps: 30}
train: {device: cpu, threads: 1, log_every: 5, monitor_every: 15, monitor_sequences: 16, precision: fp32}
"""


# fp32: how much 30 steps learn must not hang on whether this CPU's bf16 products are faster (precision
# auto's choice by timing; bf16 at this size learned 0.09 nats, not 0.1, on an AMD EPYC with avx512_bf16)
def test_train_command_writes_the_run_directory_and_learns(tmp_path, data_root):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(TINY_RECIPE)
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "protjepa.cli", "train", str(recipe_file), "--run-dir", str(run_dir),
         "--data-root", str(data_root)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "steps 30 |" in done.stdout and "held-out batch" in done.stdout
    # The first lines say what runs: precision, the attention kernels, torch.compile.
    set_up = done.stdout[:done.stdout.index("run directory:")].splitlines()  # progress goes to stderr here
    assert set_up[0].startswith("precision: fp32")
    assert set_up[1:] == ["attention: sdpa (SDPA's flash_attention, fp32) (requested auto; padded rows)",
                          "torch.compile: off (train.compile auto: off on a CPU)",
                          "collapse monitors on 16 held-out records"]

    resolved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert resolved["budget"] == {"steps": 30} and resolved["data"]["crop"] == 64
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == [
        "ckpt-0.125.pt", "ckpt-0.500.pt", "ckpt-1.000.pt"]

    train = [r for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
    assert train[-1]["loss"] < 0.8 * train[0]["loss"]
    assert train[-1]["mlm/loss"] < train[0]["mlm/loss"] - 0.1
    assert all(r["tokens_per_s"] > 0 and 0 <= r["padding_fraction"] < 0.5 for r in train)

    # The Hugging Face export holds the final weights.
    exported = load_encoder(run_dir / "export").state_dict()
    final = torch.load(run_dir / "checkpoints" / "ckpt-1.000.pt", map_location="cpu", weights_only=False)
    trained = {k.removeprefix("model.encoder."): v for k, v in final["state"]["model"].items()
               if k.startswith("model.encoder.")}
    for key, value in exported.items():
        torch.testing.assert_close(value, trained[key], msg=key)


def test_main_job_fits_the_paper_recipe_to_a_cpu():
    recipe_file = REPO / "recipes" / "mlm_jepa_masked.yaml"
    raw = yaml.safe_load(recipe_file.read_text())
    overrides, notes = main_job_settings(raw, has_gpu=False)
    recipe = load_recipe(recipe_file, overrides)
    assert recipe.budget.wall_clock == "3min"
    assert (recipe.data.crop, recipe.data.batch_tokens, recipe.train.device) == (128, 2048, "cpu")
    assert [o.name for o in recipe.objectives] == ["mlm", "jepa"]  # the method is untouched
    assert recipe.encoder.options["preset"] == "esm2_8m"
    assert "data.crop 512 -> 128" in notes[1]
    assert notes[0] == "main job: budget wall_clock 3min (the recipe's: wall_clock 30min)"

    overrides, notes = main_job_settings(raw, has_gpu=True)
    on_gpu = load_recipe(recipe_file, overrides)
    assert on_gpu.budget.wall_clock == "3min" and on_gpu.data.crop == raw["data"]["crop"] and len(notes) == 1

    overrides, notes = main_job_settings(raw, has_gpu=False, budget={"steps": 20})  # from --budget 20steps
    assert load_recipe(recipe_file, overrides).budget.steps == 20 and notes[0].startswith("main job: budget steps 20")


def test_the_main_job_never_reuses_a_run_directory(tmp_path):
    assert unused_run_dir(tmp_path / "main") == tmp_path / "main"
    (tmp_path / "main").mkdir()
    (tmp_path / "main-2").mkdir()
    assert unused_run_dir(tmp_path / "main") == tmp_path / "main-3"


def test_latest_checkpoint_is_the_furthest_into_the_budget(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for name in ("ckpt-0.125.pt", "ckpt-1.000.pt", "ckpt-0.500.pt", ".partial-ckpt-0.750.pt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "ckpt-1.000.pt"


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--budget", "2x"], "protjepa: error: --budget: cannot parse duration '2x'"),
        (["--data-root", "/nonexistent/data"], "protjepa: error: data root /nonexistent/data"),
        (["--resume"], "no checkpoint to resume from"),
        (["--set", "data.batch_tokens=fill"],
         "tiny.yaml: --set data.batch_tokens: data.batch_tokens: fill sizes the step to a GPU's memory, and this run "
         "is on the CPU: give a number, e.g. --set data.batch_tokens=8192"),
    ],
)
def test_bad_input_is_one_line_on_stderr(tmp_path, capsys, extra, says):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(TINY_RECIPE)
    code = main(["train", str(recipe_file), "--run-dir", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and "\n" not in err
    assert not (tmp_path / "run" / "recipe.yaml").exists()
