"""``import protjepa``: the README's Python example runs as written; loggers and callbacks from the
recipe (TensorBoard's event files read back); checkpoint retention; the run's provenance record;
encoders loaded from a run's intermediate checkpoints."""
from __future__ import annotations

import gzip
import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml

import protjepa
from protjepa.export import load_encoder

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    api = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", api, re.S).group(1)


def write_fasta(path: Path, data_root: Path, n: int = 80) -> Path:
    """The first ``n`` records of the real corpus's validation file, as a user's own FASTA."""
    lines, records = [], 0
    with gzip.open(data_root / "pretrain_swissprot50/swissprot2014_50_valid.fasta.gz", "rt") as f:
        for line in f:
            records += line.startswith(">")
            if records > n:
                break
            lines.append(line)
    path.write_text("".join(lines))
    return path


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch, data_root):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROTJEPA_DATA", str(data_root))
    write_fasta(tmp_path / "my_proteins.fasta", data_root)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md[python]", "exec"), namespace)
    assert namespace["pooled"].shape == (2, 32) and namespace["residues"][0].shape == (8, 32)
    assert -1 <= namespace["scores"]["tasks"]["stability"]["value"] <= 1


def tiny(tmp_path: Path, data_root: Path, **train) -> protjepa.api.Recipe:
    fasta = write_fasta(tmp_path / "corpus.fasta", data_root)
    return protjepa.load_recipe("mlm_jepa_masked", {
        "encoder": {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4},
        "data": {"train": str(fasta), "valid": None, "crop": 64, "batch_tokens": 512, "shuffle_buffer": 16},
        "budget": {"steps": 4}, "optim.warmup": 1,
        "train": {"device": "cpu", "log_every": 1, "monitor_every": 2, "monitor_sequences": 8, **train},
    })


@pytest.mark.slow
def test_recipe_loggers_and_callbacks_receive_our_metrics(tmp_path, data_root, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "tensorboard"
    recipe = tiny(tmp_path, data_root, checkpoint_at=[0.25, 0.5, 1.0], keep_checkpoints=1,
                  loggers=[{"_component_": "composer.loggers.TensorboardLogger", "log_dir": str(board),
                            "flush_interval": 1}],
                  callbacks=[{"_component_": "composer.callbacks.LRMonitor"}])
    result = protjepa.train(recipe, tmp_path / "run", console=False)

    events = EventAccumulator(str(next(board.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"mlm/loss", "jepa/loss", "train/loss", "monitor/effective_rank"} <= set(tags)
    assert any(tag.startswith("lr-") for tag in tags)  # the recipe's callback ran
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if r["kind"] == "train"]
    assert [e.value for e in events.Scalars("mlm/loss")] == pytest.approx([r["mlm/loss"] for r in train])

    # Retention: the last checkpoint before the final one, and the final; the summary says what was written.
    assert sorted(p.name for p in (result.run_dir / "checkpoints").glob("*.pt")) == ["ckpt-0.500.pt", "ckpt-1.000.pt"]
    assert re.search(r"checkpoints: ckpt-0.500.pt, ckpt-1.000.pt; this run wrote 3 \(\d+\.\d MB\), "
                     r"removed ckpt-0.250.pt \(train.keep_checkpoints: 1\)", result.text)

    # The record: every default, the versions, the machine, the corpus (outside the data root: by absolute path) with its digest.
    saved = yaml.safe_load((result.run_dir / "recipe.yaml").read_text())
    assert saved["objectives"][1]["target"]["momentum"] == 0.996
    assert saved["objectives"][1]["predictor"]["hidden_mult"] == pytest.approx(8 / 3)
    record = json.loads((result.run_dir / "provenance.json").read_text())
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["protjepa"] == protjepa.__version__ and record["packages"]["mosaicml"]
    assert record["machine"]["cpu"] and record["machine"]["torch_threads"] >= 1
    corpus = record["data"]["train"]
    assert corpus["path"] == str((tmp_path / "corpus.fasta").resolve()) and len(corpus["sha256"]) == 64
    assert corpus["bytes"] == (tmp_path / "corpus.fasta").stat().st_size

    # An intermediate checkpoint loads as an encoder, built from the run's recipe; the final one
    # holds the exported weights.
    middle = load_encoder(result.run_dir / "checkpoints" / "ckpt-0.500.pt")
    final, export = load_encoder(result.run_dir / "checkpoints" / "ckpt-1.000.pt"), load_encoder(result.run_dir)
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), export.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(middle.state_dict().values(), export.state_dict().values()))


def test_recipe_logger_entries_are_validated_like_the_rest(tmp_path):
    from protjepa.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"train.loggers\[0\]._component_: .*no 'NoSuchLogger'"):
        protjepa.load_recipe("mlm", {"train.loggers": [{"_component_": "composer.loggers.NoSuchLogger"}]})
    with pytest.raises(RecipeError, match=r"train.loggers\[0\]: composer.loggers.TensorboardLogger: .*flush_every"):
        protjepa.load_recipe("mlm", {"train.loggers": [{"_component_": "composer.loggers.TensorboardLogger",
                                                        "flush_every": 3}]})
