"""The model card of a run's export: the recipe, the budget, the data, the final losses, the
probe results once there are some, and how to load the folder (transformers, or protjepa)."""
from __future__ import annotations

import json

from protjepa.card import write_card
from protjepa.recipe import dump_recipe, parse_recipe

RECIPE = {"name": "carded", "description": "a card test", "encoder": {"name": "modern", "num_layers": 1,
          "embed_dim": 16, "attention_heads": 2}, "objectives": [{"name": "mlm"}], "budget": {"steps": 3}}


def run_folder(tmp_path, native: bool):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "recipe.yaml").write_text(dump_recipe(parse_recipe(RECIPE)))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 3, "loss": 3.25, "mlm/loss": 3.25}) + "\n")
    (run / "provenance.json").write_text(json.dumps({"data": {"train": {"path": "/d/corpus.fasta", "bytes": 1234,
                                                                         "sha256": "ab" * 32}}}))
    (run / "export" / ("encoder.yaml" if native else "config.json")).write_text("{}")
    return run


def test_native_card_says_how_to_load_it_and_picks_up_probe_results(tmp_path):
    run = run_folder(tmp_path, native=True)
    card = write_card(run, run / "export").read_text()
    assert card.startswith("---\nlibrary_name: protjepa\n") and "# carded\n\na card test" in card
    assert "budget steps 3" in card and "- train: `corpus.fasta`, 1,234 bytes" in card and "- mlm/loss: 3.2500" in card
    assert 'protjepa.load_encoder("PATH/TO/THIS/FOLDER")' in card and "## Probe results" not in card
    (run / "probe").mkdir()
    (run / "probe" / "results.json").write_text(json.dumps({"tasks": {"stability": {"metric": "spearman",
                                                                                  "value": 0.41234}}}))
    assert "| stability | spearman | 0.4123 |" in write_card(run, run / "export").read_text()


def test_hugging_face_card_loads_with_transformers(tmp_path):
    run = run_folder(tmp_path, native=False)
    card = write_card(run, run / "export").read_text()
    assert "library_name: transformers" in card and "EsmModel.from_pretrained" in card
