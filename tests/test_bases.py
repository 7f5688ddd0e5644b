"""A file in parts with digests (protjepa.parts), an encoder written that way in bf16, and a pretrained
base (``protjepa base``): written from a real run, loaded back by a recipe's ``encoder.checkpoint`` and by
an experiment's ``base: {checkpoint: ...}``, a truncated or altered part refused in one line."""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from protjepa.attention import AttentionLayout
from protjepa.batch import gather_positions
from protjepa.build import build_encoder
from protjepa.cli import main
from protjepa.data.corpus import held_out_batches
from protjepa.encoders.esm2 import ESM2
from protjepa.encoders.weights import WeightsError
from protjepa.evaluation.readout import CHUNK, SEED
from protjepa.errors import UserError
from protjepa.experiment.bases import BaseError, make_base, read_base
from protjepa.experiment.runner import run_experiment
from protjepa.experiment.spec import ExperimentError, load_experiment
from protjepa.export import load_encoder, save_encoder
from protjepa.parts import PartsError, read_parts, write_parts
from protjepa.recipe import load_recipe
from protjepa.training.trainer import train

DATA = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes


# --------------------------------------------------------------------------- parts


def test_parts_split_join_and_the_manifest(tmp_path):
    file = tmp_path / "model.safetensors"
    manifest = write_parts(DATA, file, part_bytes=4096)
    names = ["model.safetensors.part-1-of-3", "model.safetensors.part-2-of-3", "model.safetensors.part-3-of-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names + ["model.safetensors.parts.json"])
    assert [(p["file"], p["bytes"]) for p in manifest["parts"]] == list(zip(names, [4096, 4096, 2052]))
    assert manifest["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert manifest["parts"][2]["sha256"] == hashlib.sha256(DATA[8192:]).hexdigest()
    assert json.loads((tmp_path / "model.safetensors.parts.json").read_text()) == manifest
    assert read_parts(file) == DATA
    # Written again in fewer parts: the old third part goes, the manifest names the new two.
    write_parts(DATA, file, part_bytes=8192)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors.part-1-of-2",
                                                          "model.safetensors.part-2-of-2",
                                                          "model.safetensors.parts.json"]
    assert read_parts(file) == DATA


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1]),
     r"model.safetensors.part-2-of-3: 4095 bytes, model.safetensors.parts.json says 4096: the part was truncated "
     r"or altered$"),
    (lambda p: p.write_bytes(b"X" + p.read_bytes()[1:]),
     r"model.safetensors.part-2-of-3: its sha256 differs from the one in model.safetensors.parts.json: the part "
     r"was altered$"),
    (lambda p: p.unlink(), r"model.safetensors.part-2-of-3: missing: model.safetensors.parts.json lists 3 parts$"),
    (lambda p: p.with_name("model.safetensors.parts.json").write_text("{"),
     r"model.safetensors.parts.json: not a parts manifest \(JSONDecodeError: "),
    (lambda p: p.with_name("model.safetensors.parts.json").write_text('{"bytes": 1, "sha256": "x", "parts": '
                                                                      '[{"file": "../../etc/passwd"}]}'),
     r"parts.json: part 1 should be model.safetensors.part-1-of-1 with its bytes and sha256, found "),
])
def test_a_damaged_part_is_one_line_naming_it(tmp_path, damage, message):
    file = tmp_path / "model.safetensors"
    write_parts(DATA, file, part_bytes=4096)
    damage(tmp_path / "model.safetensors.part-2-of-3")
    with pytest.raises(PartsError, match=message) as caught:
        read_parts(file)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- an encoder in parts


def test_an_encoder_in_bf16_parts_loads_as_its_weights_rounded_to_bf16(tmp_path):
    torch.manual_seed(1)
    encoder = ESM2(2, 32, 4)
    folder = save_encoder(encoder, tmp_path / "enc", {"name": "esm2", "num_layers": 2, "embed_dim": 32,
                                                      "attention_heads": 4}, dtype=torch.bfloat16, part_bytes=20_000)
    manifest = json.loads((folder / "model.safetensors.parts.json").read_text())
    assert len(manifest["parts"]) == math.ceil(manifest["bytes"] / 20_000) > 1
    assert not (folder / "model.safetensors").exists()
    loaded = load_encoder(folder)
    assert next(loaded.parameters()).dtype == torch.float32  # cast back to the encoder's type on loading
    for name, value in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value.to(torch.bfloat16).float()), name
    # One byte of a part flipped: the encoder is refused, in one line naming the part.
    part = folder / manifest["parts"][1]["file"]
    raw = bytearray(part.read_bytes())
    raw[100] ^= 1
    part.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match=rf"^{part}: its sha256 differs from the one in "
                                           r"model.safetensors.parts.json: the part was altered$"):
        load_encoder(folder)


# --------------------------------------------------------------------------- a base from a real run


TINY = {"encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
        "data.crop": 64, "data.batch_tokens": 512, "data.shuffle_buffer": 64, "budget": {"steps": 3},
        "train.device": "cpu", "train.log_every": 1, "train.monitor_every": 3, "train.monitor_sequences": 8,
        "train.checkpoint_at": [1.0], "optim.lr": 1.0e-3}


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_root):
    """A 3-step MLM run on the real corpus, made a base in parts of 40,000 bytes: (run folder, base folder)."""
    folder = tmp_path_factory.mktemp("base")
    recipe = load_recipe("mlm", list(TINY.items()))
    train(recipe, folder / "run", data_root=str(data_root), console=False)
    assert main(["base", str(folder / "run"), str(folder / "base"), "--part-mib", str(40_000 / 2**20),
                 "--sequences", "16", "--data-root", str(data_root)]) == 0
    return folder / "run", folder / "base"


def test_the_base_folder_holds_what_comes_back_from_a_device(base):
    run, folder = base
    parts = sorted(p.name for p in folder.glob("model.safetensors.part-*"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["base.json", "encoder.yaml", "metrics.jsonl", "model.safetensors.parts.json", "recipe.yaml", *parts])
    record = json.loads((folder / "base.json").read_text())
    assert len(parts) == record["weights"]["parts"] == math.ceil(record["weights"]["bytes"] / 40_000) == 2
    assert all(p.stat().st_size <= 40_000 for p in folder.glob("model.safetensors.part-*"))
    assert (folder / "recipe.yaml").read_text() == (run / "recipe.yaml").read_text()
    assert record["training"]["steps"] == 3 and record["training"]["budget"] == "steps 3"
    assert record["weights"]["dtype"] == "bfloat16"
    assert record["weights"]["parameters"] == sum(t.numel() for t in load_encoder(run).parameters())
    assert record["run"]["provenance"]["data"]["train"]["sha256"]  # the corpus, by digest


def test_the_held_out_loss_is_the_written_weights_beside_the_unigram_entropy(base, data_root):
    """Recomputed by hand from the base folder's encoder: cross-entropy of the LM head at the masked positions
    of the same held-out rows (the readout's seed and chunks), and the entropy of those residues' counts."""
    run, folder = base
    held = json.loads((folder / "base.json").read_text())["held_out"]
    recipe = load_recipe(run / "recipe.yaml")
    encoder = load_encoder(folder).eval()
    batches, _ = held_out_batches(recipe.data, recipe.masking, 16, chunk=min(CHUNK, 8), seed=SEED,
                                  root=str(data_root))
    losses, labels = [], []
    with torch.no_grad():
        for batch in batches:
            hidden = encoder(batch.inputs, layout=AttentionLayout.from_batch(batch)).last
            label = gather_positions(batch.tokens, batch.masked_index)
            logits = encoder.lm_head(gather_positions(hidden, batch.masked_index)).float()
            losses.append(F.cross_entropy(logits, label, reduction="none"))
            labels += label.tolist()
    assert held["mlm_loss"] == pytest.approx(float(torch.cat(losses).mean()), rel=1e-5)
    counts = Counter(labels)
    entropy = -sum(n / len(labels) * math.log(n / len(labels)) for n in counts.values())
    assert held["unigram_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert held["under_unigram"] == pytest.approx(entropy - held["mlm_loss"], rel=1e-5)
    assert held["sequences"] == 16


def test_a_base_record_without_its_held_out_numbers_is_one_line(tmp_path):
    (tmp_path / "base.json").write_text('{"held_out": {"mlm_loss": "low"}}')
    with pytest.raises(BaseError, match=r"base.json: not a base record \(expected a JSON object whose held_out "
                                        r"gives mlm_loss, unigram_entropy and under_unigram\)$"):
        read_base(tmp_path)
    assert read_base(tmp_path / "elsewhere") is None  # a checkpoint of another kind: no record


def test_a_recipe_continues_from_the_base(base):
    run, folder = base
    recipe = load_recipe("mlm", list(TINY.items()) + [("encoder.checkpoint", str(folder))])
    state = build_encoder(recipe).state_dict()
    exported = load_encoder(run).state_dict()  # the run's fp32 export
    assert state.keys() == exported.keys()
    assert all(torch.equal(state[k], exported[k].to(torch.bfloat16).float()) for k in state)


def test_a_base_is_never_written_over_and_only_from_an_mlm_run(base, tmp_path):
    run, folder = base
    with pytest.raises(BaseError, match=rf"^{folder}: already exists; give a new folder"):
        make_base(run, folder)
    recipe = (run / "recipe.yaml").read_text()
    jepa = tmp_path / "jepa"
    jepa.mkdir()
    (jepa / "recipe.yaml").write_text(recipe.replace("- name: mlm", "- name: mlm\n- name: jepa", 1))
    (jepa / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
    with pytest.raises(BaseError, match=rf"^{jepa}: the run has not finished \(no export/\): train it"):
        make_base(jepa, tmp_path / "out")
    (jepa / "export").mkdir()
    with pytest.raises(BaseError, match=r"recipe.yaml: a base is MLM-only pretraining; this run also trains jepa$"):
        make_base(jepa, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- an experiment continues from it


def experiment_file(path: Path, checkpoint: str, encoder: dict | None = None, base: dict | None = None) -> int:
    """An experiment at the base run's settings (TINY) continuing from ``checkpoint``: MLM-only and masked
    MLM+JEPA, 2 steps each, probed on one task; written to ``path``. Returns the line of base.checkpoint."""
    spec = {"name": "pretrained", "baseline": "mlm", "budget": {"steps": 2}, "encoder": encoder or TINY["encoder"],
            "data": {key.split(".")[1]: value for key, value in TINY.items() if key.startswith("data.")},
            "set": {**{key: value for key, value in TINY.items() if key.startswith("train.")}, "optim.warmup": 1},
            "base": {"checkpoint": checkpoint, **(base or {})},
            "variants": [{"recipe": "mlm"}, {"recipe": "mlm_jepa_masked", "name": "masked"}],
            "probe": {"tasks": ["stability"], "check_leakage": False, "max_train": 100, "max_test": 50}}
    text = yaml.safe_dump(spec, sort_keys=False)
    path.write_text(text)
    return text.splitlines().index(f"  checkpoint: {checkpoint}") + 1


def test_an_experiment_continues_from_the_pretrained_base(base, tmp_path, data_root, capsys):
    run, folder = base
    spec = tmp_path / "exp" / "pretrained.yaml"
    spec.parent.mkdir()
    relative = os.path.relpath(folder, spec.parent)
    experiment_file(spec, relative)  # relative to the experiment file
    experiment = load_experiment(spec, output=tmp_path / "out")
    assert experiment.base_checkpoint == folder and experiment.trained_runs == experiment.runs
    assert all(r.recipe.encoder.checkpoint == str(folder) for r in experiment.runs)
    assert main(["experiment", str(spec), "--dry-run", "--output", str(tmp_path / "out")]) == 0
    assert f"pretrained, not trained here: {folder}" in capsys.readouterr().out

    outcome = run_experiment(experiment, data_root=str(data_root), console=False, log=lambda line: None)
    assert outcome.trained == ["mlm/seed0", "masked/seed0"]
    assert outcome.probed == ["base/seed0", "mlm/seed0", "masked/seed0", "random_init_esm2_2x32/seed0"]
    assert (tmp_path / "out" / "base" / "probe" / "results.json").is_file()
    assert not (folder / "probe").exists()  # the base folder is only read
    record = json.loads((folder / "base.json").read_text())
    report = outcome.report.read_text()
    assert (f"- continued pretraining: every variant starts from the weights (encoder and LM head) of the "
            f"pretrained **base** `{relative}`, esm2 2 x 32, not trained here (3 steps, "
            f"{record['training']['tokens']:,} tokens, budget steps 3, on no GPU; held-out MLM loss "
            f"{record['held_out']['mlm_loss']:.4f}") in report
    again = run_experiment(load_experiment(spec, output=tmp_path / "out"), data_root=str(data_root), console=False,
                           log=lambda line: None)
    assert again.trained == again.probed == []

    # The base's bytes change under the runs made from it: refused, saying what to delete.
    (folder / "metrics.jsonl").write_text((folder / "metrics.jsonl").read_text() + "\n")
    with pytest.raises(ExperimentError, match=rf"^{folder}: the pretrained base changed since mlm/seed0, "
                                              r"masked/seed0 started from it .*: delete .*/out/runs, or give"):
        run_experiment(load_experiment(spec, output=tmp_path / "out"), console=False, log=lambda line: None)


def test_a_missing_or_damaged_base_is_one_line_at_validation(base, tmp_path, capsys):
    _, folder = base
    spec = tmp_path / "pretrained.yaml"
    line = experiment_file(spec, "bases/none")
    missing = (f"{spec}:{line}: base.checkpoint: {tmp_path}/bases/none: no such base (make one from a finished MLM run "
               "with protjepa base RUN FOLDER, or name another)")
    with pytest.raises(ExperimentError) as caught:
        load_experiment(spec)
    assert str(caught.value) == missing
    assert main(["validate", str(spec)]) == 1
    assert capsys.readouterr().out == f"FAIL {missing}\n"
    assert main(["experiment", str(spec), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"protjepa: error: {missing}\n"

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in folder.iterdir():
        (damaged / file.name).write_bytes(file.read_bytes())
    last = sorted(damaged.glob("model.safetensors.part-*"))[-1]
    last.write_bytes(last.read_bytes()[:-10])
    line = experiment_file(spec, str(damaged))
    with pytest.raises(ExperimentError, match=rf"^{spec}:{line}: base.checkpoint: {last}: \d+ bytes, "
                                              r"model.safetensors.parts.json says \d+: the part was truncated"):
        load_experiment(spec)

    line = experiment_file(spec, str(folder), encoder={**TINY["encoder"], "embed_dim": 64})
    with pytest.raises(ExperimentError, match=rf"^{spec}:{line}: base.checkpoint: .*has shape"):
        load_experiment(spec)
    experiment_file(spec, str(folder), base={"recipe": "mlm"})
    with pytest.raises(ExperimentError, match=r"base: .*a pretrained base is not trained here, so it takes no recipe"):
        load_experiment(spec)


def test_a_run_folder_that_names_code_is_refused_without_trust_code(tmp_path):
    """A run folder is data: making a base of one whose recipe names code runs none of it."""
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    marker = tmp_path / "ran"
    (run / "recipe.yaml").write_text(
        "name: booby\nencoder: {_component_: os.system, command: 'touch " + str(marker) + "'}\n"
        "objectives: [{name: mlm}]\n")
    with pytest.raises(UserError, match=r"recipe.yaml:2: encoder._component_: .*--trust-code"):
        make_base(run, tmp_path / "base")
    assert not marker.exists() and not (tmp_path / "base").exists()
