"""The model card of a run's export: the recipe, the budget, the data, the final losses, the
probe results once there are some, and how to load the folder (transformers, or protjepa)."""
from __future__ import annotations

import json

from protjepa import __version__
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
    assert card.startswith("---\nlibrary_name: protjepa\n")
    assert "# carded\n\nThe encoder trained: `modern` (1 layers x 16 wide, 2 attention heads)." in card
    assert "The recipe's description:\n\n> a card test\n" in card and "**Note:**" not in card
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


def small_esm2_run(tmp_path, description: str, encoder: dict | None = None):
    """A run whose recipe says ``description`` and whose sizes override ``esm2_8m``'s (6 x 320, 7.8M
    parameters) with 2 x 32; its weights file holds 3,104 parameters (33 x 32 + 2 x 32 x 32)."""
    from safetensors.torch import save_file
    import torch

    run = run_folder(tmp_path, native=False)
    small = {**RECIPE, "description": description, "encoder": encoder or {
        "name": "esm2", "preset": "esm2_8m", "num_layers": 2, "embed_dim": 32, "attention_heads": 4}}
    (run / "recipe.yaml").write_text(dump_recipe(parse_recipe(small)))
    weights = {"embed": torch.zeros(33, 32), "block": torch.zeros(2, 32, 32)}
    save_file(weights, str(run / "export" / "model.safetensors"))
    return run


def test_sizes_that_override_a_preset_leave_its_name_out_of_the_card(tmp_path):
    """The recipe names esm2_8m, but its sizes make a 2 x 32 model: the resolved recipe, and the card made
    from it, name no preset and give the sizes it has."""
    run = small_esm2_run(tmp_path, "")
    card = write_card(run, run / "export").read_text()
    assert "esm2_8m" not in card and "8M" not in card
    assert "The encoder trained: `esm2` (2 layers x 32 wide, 4 attention heads, 3,104 parameters)." in card
    assert "The recipe's description" not in card  # it has none
    same = {**RECIPE, "encoder": {"name": "esm2", "preset": "esm2_8m", "num_layers": 6}}  # the preset's own sizes
    assert parse_recipe(same).encoder_config.preset == "esm2_8m"


def test_a_description_naming_another_preset_is_the_recipes_and_flagged(tmp_path):
    """The shipped recipes' descriptions say "ESM-2 8M"; a recipe that overrides the sizes keeps those words.
    The card leads with the encoder trained, quotes the description as the recipe's, and notes the difference."""
    run = small_esm2_run(tmp_path, "MLM-only baseline (ESM-2 8M from scratch), about 7.8M parameters")
    card = write_card(run, run / "export").read_text()
    top = card[card.index("# carded\n\n"):card.index("## Data")].split("\n\n")
    assert top[1] == (f"The encoder trained: `esm2` (2 layers x 32 wide, 4 attention heads, 3,104 parameters). Trained "
                      f"with protjepa {__version__}: objectives mlm x 1, budget steps 3. The whole recipe, every "
                      "default filled in, is below.")
    assert top[2:5] == ["The recipe's description:",
                        "> MLM-only baseline (ESM-2 8M from scratch), about 7.8M parameters",
                        "**Note:** the recipe's description names ESM-2 8M (esm2_8m: 6 layers x 320) and 7.8M; this "
                        "encoder is 2 x 32, 3,104 parameters."]
    # the preset's name as a recipe writes it, and a count that is not the model's (2M steps) left alone
    run = small_esm2_run(tmp_path / "b", "esm2_8m sizes shrunk for a test; 2M steps")
    assert ("**Note:** the recipe's description names esm2_8m (6 layers x 320); this encoder is 2 x 32, 3,104 "
            "parameters.") in write_card(run, run / "export").read_text()


def test_a_description_that_fits_the_encoder_has_no_note(tmp_path):
    # it names no preset; 0.003M is the weights' 3,104 within 10% (the layer count is not what the card checks)
    run = small_esm2_run(tmp_path, "a tiny ESM-2 (2 layers), 0.003M parameters, for tests")
    card = write_card(run, run / "export").read_text()
    assert "> a tiny ESM-2 (2 layers), 0.003M parameters, for tests" in card and "**Note:**" not in card
    # the preset's own sizes: "ESM-2 8M" is what was trained (the weights file here is not 7.8M: the sizes decide)
    run = small_esm2_run(tmp_path / "b", "ESM-2 8M from scratch", {"name": "esm2", "preset": "esm2_8m"})
    assert "**Note:**" not in write_card(run, run / "export").read_text()


def test_a_component_encoders_card_checks_a_named_preset_by_its_count(tmp_path):
    """A ``_component_`` encoder has no sizes in its recipe: a preset its description names is checked by the
    count in the preset's name against the weights'."""
    component = {"_component_": "toy_model.SmallTransformer"}
    run = small_esm2_run(tmp_path, "a transformer the size of ESM-2 8M", component)
    card = write_card(run, run / "export").read_text()
    assert "The encoder trained: `toy_model.SmallTransformer` (3,104 parameters)." in card
    assert ("**Note:** the recipe's description names ESM-2 8M (esm2_8m: 6 layers x 320); this encoder is "
            "`toy_model.SmallTransformer`, 3,104 parameters.") in card
