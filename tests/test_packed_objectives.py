"""Every shipped recipe computes the same losses on packed rows as on padded rows of the same
sequences and masks: packing (the recipes' default) changes the speed, not the objective."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from protjepa.build import build_model
from protjepa.data.collate import Collator, encode_sequences
from protjepa.recipe import load_recipe

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = ["mlm", "mlm_jepa_masked", "mlm_jepa_all", "jepa_only", "mlm_jepa_ema_half", "mlm_jepa_vicreg"]
TINY = [("encoder.preset", None), ("encoder.num_layers", 2), ("encoder.embed_dim", 32), ("encoder.attention_heads", 4)]
LETTERS = "ACDEFGHIKLMNPQRSTVWY"


def random_sequences(count: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 60, (count,), generator=g).tolist()
    return ["".join(LETTERS[i] for i in torch.randint(0, 20, (n,), generator=g).tolist()) for n in lengths]


@pytest.mark.parametrize("name", RECIPES)
def test_packed_losses_equal_padded(name):
    recipe = load_recipe(RECIPE_DIR / f"{name}.yaml", TINY)
    assert recipe.data.packing, "the shipped recipes pack"
    torch.manual_seed(0)
    model = build_model(recipe).eval()
    sequences = encode_sequences(random_sequences(12))
    padded = Collator(masking=recipe.masking, seed=3)(sequences)
    packed = Collator(masking=recipe.masking, packing=True, row_length=128, seed=3)(sequences)
    assert packed.shape[0] < padded.shape[0] and packed.num_padding < padded.num_padding  # rows really shared
    assert packed.masked_index.numel() == padded.masked_index.numel()
    with torch.no_grad():
        a, b = model(padded), model(packed)
    assert set(a.metrics) == set(b.metrics)
    for key in a.metrics:
        torch.testing.assert_close(b.metrics[key], a.metrics[key], rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
