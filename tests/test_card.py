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


def test_sizes_that_override_a_preset_leave_its_name_out_of_the_card(tmp_path):
    """The recipe names esm2_8m (320 wide, 6 layers, 7.8M parameters), but its sizes make a 2 x 32 model:
    the resolved recipe, and the card made from it, name no preset and give the sizes it has."""
    from safetensors.torch import save_file
    import torch

    run = run_folder(tmp_path, native=False)
    small = {**RECIPE, "description": "", "encoder": {"name": "esm2", "preset": "esm2_8m", "num_layers": 2,
                                                      "embed_dim": 32, "attention_heads": 4}}
    (run / "recipe.yaml").write_text(dump_recipe(parse_recipe(small)))
    save_file({"embed": torch.zeros(33, 32), "block": torch.zeros(2, 32, 32)}, str(run / "export" / "model.safetensors"))
    card = write_card(run, run / "export").read_text()
    assert "esm2_8m" not in card and "8M" not in card
    assert "encoder `esm2` (2 layers x 32 wide, 4 attention heads, 3,104 parameters)" in card  # 33 x 32 + 2 x 32 x 32
    same = {**small, "encoder": {"name": "esm2", "preset": "esm2_8m", "num_layers": 6}}  # the preset's own sizes
    assert parse_recipe(same).encoder_config.preset == "esm2_8m"
