"""The latent readout of a run's checkpoint: ridge and residue readouts on known data, and
``protjepa readout`` on a tiny trained run, against the rows and numbers computed directly."""
from __future__ import annotations

import json

import pytest
import torch

from protjepa.checkpoint_file import CheckpointError
from protjepa.cli import main
from protjepa.data.corpus import held_out_batches
from protjepa.evaluation.readout import load_run_model, read_out, residue_r2, ridge_r2
from protjepa.objectives.base import latent_scores
from protjepa.recipe import load_recipe
from protjepa.training.trainer import train

TINY = {
    "name": "tiny_readout",
    "encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
    "objectives": [{"name": "mlm"}, {"name": "jepa", "weight": 0.45}],
    "data": {"crop": 64, "batch_tokens": 1024, "shuffle_buffer": 64},
    "optim": {"lr": 3.0e-3, "warmup": 0.1},
    "budget": {"steps": 6},
    "train": {"device": "cpu", "log_every": 3, "monitor_every": 3, "monitor_sequences": 8,
              "checkpoint_at": [0.5, 1.0]},
}


def test_a_linear_target_reads_out_whole_and_noise_not_at_all():
    x = torch.randn(400, 6)
    y = x @ torch.randn(6, 3)
    assert ridge_r2(x[:200], y[:200], x[200:], y[200:]) == pytest.approx(1, abs=1e-3)
    noise = torch.randn(400, 3)
    assert ridge_r2(x[:200], noise[:200], x[200:], noise[200:]) < 0.05


def test_a_target_that_is_only_the_residue_reads_out_from_the_residue():
    table = torch.randn(33, 4)
    residues = torch.randint(4, 24, (300,))
    target = table[residues]
    assert residue_r2(residues[:150], target[:150], residues[150:], target[150:], 33) == pytest.approx(1, abs=1e-6)
    unseen = torch.full((5,), 30)  # no fit row has it: the overall mean, which scores 0 on itself
    fit_mean = target[:150].mean(0)
    assert residue_r2(residues[:150], target[:150], unseen, fit_mean.expand(5, 4) + torch.randn(5, 4), 33) < 0.5


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_root):
    from protjepa.recipe import parse_recipe

    run_dir = tmp_path_factory.mktemp("readout") / "run"
    train(parse_recipe(TINY), run_dir, data_root=str(data_root), console=False)
    return run_dir


def test_readout_scores_the_rows_the_held_out_batches_select(tiny_run, data_root):
    result = read_out(tiny_run, sequences=8, data_root=str(data_root))
    model, _, path, _ = load_run_model(tiny_run)
    assert path.name == "ckpt-1.000.pt" and result["checkpoint_sha256"] == \
        (path.parent / "ckpt-1.000.pt.sha256").read_text().split()[0]
    recipe = load_recipe(tiny_run / "recipe.yaml")
    batches, _ = held_out_batches(recipe.data, recipe.masking, 8, chunk=4, seed=0, root=str(data_root))
    jepa = model.objectives[1]
    preds, targets = [], []
    with torch.no_grad():
        for batch in batches:
            ctx = model.context(batch)
            model.losses(ctx)
            preds.append(jepa.normalized(ctx.shared["jepa.pred"]))
            targets.append(jepa.normalized(ctx.shared["jepa.target"]))
    expected = latent_scores(torch.cat(preds), torch.cat(targets), r2=False)
    held = result["latent"]["jepa"]
    assert held["rows"] == sum(b.masked_index.numel() for b in batches)
    for key in ("cosine", "cosine_of_mean", "lift"):
        assert held[key] == pytest.approx(float(expected[key]), abs=1e-5)
    assert held["metric"] == "lift" and held["constant"] == 0 and held["score"] == held["lift"] and "r2" not in held
    assert set(held["readout_r2"]) == {"student", "predictions", "residue"}
    assert all(value <= 1 for value in held["readout_r2"].values())
    mlm = result["mlm"]["mlm"]
    assert 2.0 < mlm["unigram_entropy"] < 3.1 and mlm["loss"] > 0


def test_readout_command_prints_and_writes_readout_json(tiny_run, data_root, capsys):
    assert main(["readout", str(tiny_run), "--sequences", "8", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tiny_run / "readout.json").read_text())
    held = saved["latent"]["jepa"]
    assert f"jepa: lift {held['lift']:+.4f} (cosine {held['cosine']:.4f}, the mean target's " \
           f"{held['cosine_of_mean']:.4f}) ({held['rows']} rows; lift > 0 beats the constant)" in out
    assert f"from the student state {held['readout_r2']['student']:.4f}" in out
    assert f"written: {tiny_run / 'readout.json'}" in out


def test_readout_of_a_half_way_checkpoint_and_bad_input(tiny_run, data_root, tmp_path, capsys):
    half = read_out(tiny_run, checkpoint=tiny_run / "checkpoints" / "ckpt-0.500.pt", sequences=4,
                    data_root=str(data_root))
    assert half["checkpoint"].endswith("ckpt-0.500.pt")
    assert main(["readout", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == \
        f"protjepa: error: {tmp_path}: not a run folder of protjepa train (no recipe.yaml)"
    other = tmp_path / "other"
    other.mkdir()
    wider = {**TINY, "encoder": {**TINY["encoder"], "embed_dim": 48}}
    import yaml

    (other / "recipe.yaml").write_text(yaml.safe_dump(wider))
    with pytest.raises(CheckpointError, match="ckpt-1.000.pt: not a checkpoint of .*other"):  # its scores under other
        read_out(other, checkpoint=tiny_run / "checkpoints" / "ckpt-1.000.pt", sequences=4, data_root=str(data_root))
    with pytest.raises(CheckpointError, match="no training checkpoint to read out"):
        read_out(other, sequences=4, data_root=str(data_root))
