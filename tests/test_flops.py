"""Model FLOPs of a training step: hand counts, FlopCounterMode's count, the bench's former formula."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from protjepa import attention
from protjepa.build import build_model
from protjepa.data.collate import Collator, encode_sequences
from protjepa.flops import BatchCounts
from protjepa.recipe import parse_recipe
from protjepa.training.budget import Budget, FlopCountError
from protjepa.training.trainer import flop_counter
from toy_model import make_batch, recipe_of

ESM2_2x16 = {"name": "esm2", "num_layers": 2, "embed_dim": 16, "attention_heads": 4}


def model_of(*objectives: dict, encoder: dict = ESM2_2x16):
    return build_model(parse_recipe({"name": "t", "encoder": encoder, "objectives": list(objectives)}))


def small_batch():
    """Two sequences of 10 and 8 tokens (<cls>, residues, <eos>) padded to 10; three positions selected."""
    return make_batch(["MKTAYIAK", "GLSDGE"], [[1, 4], [0]])


def test_batch_counts_come_from_the_host_and_skip_padding():
    assert BatchCounts.of(small_batch()) == BatchCounts(tokens=18, attention_pairs=10 * 10 + 8 * 8, masked=3,
                                                        residues=14, sequences=2)
    sequences = encode_sequences(["MKTAYIAK", "GLSDGE", "PEPTIDE"])  # 10, 8 and 9 tokens
    padded = Collator()(sequences)  # rows of 16 (a multiple of 8)
    packed = Collator(packing=True, row_length=20)(sequences)  # segments: pairs inside each sequence only
    for batch in (padded, packed):
        assert BatchCounts.of(batch) == BatchCounts(27, 100 + 64 + 81, 0, 21, 3)


# Per ESM-2 block on T tokens and P attending pairs, width 16: q, k, v, out (16 x 16 each), the
# MLP (16 x 64, 64 x 16), and q k^T plus probabilities x v: 2 x 16 FLOPs a pair each.
T, P = 18, 10 * 10 + 8 * 8
BLOCK = T * (4 * 2 * 16 * 16 + 2 * 2 * 16 * 64) + 2 * 2 * 16 * P  # 121088
ENCODER = 2 * BLOCK
LM_HEAD = 3 * (2 * 16 * 16 + 2 * 16 * 33)  # 3 masked positions: dense 16 x 16, then onto 33 tokens


def test_mlm_step_by_hand():
    parts = model_of({"name": "mlm"}).flop_parts(BatchCounts.of(small_batch()))
    assert parts == {"encoder ESM2": 3 * ENCODER, "objective mlm": 3 * LM_HEAD}  # forward + backward: 3 forwards
    assert 3 * (ENCODER + LM_HEAD) == 740640


def test_mlm_jepa_sigreg_step_by_hand():
    model = model_of({"name": "mlm"}, {"name": "jepa"}, {"name": "sigreg", "num_directions": 16})
    swiglu = 3 * (2 * 16 * 43 + 2 * 16 * 43 + 2 * 43 * 16)  # hidden round(8/3 x 16) = 43, on the 3 masked rows
    sigreg = 2 * 3 * 16 * 16 + 2 * 16 * 17  # 16 directions; then the [16, 17 knots] x [17] integral
    assert model.flop_parts(BatchCounts.of(small_batch())) == {
        "encoder ESM2": 3 * ENCODER,
        "target pass (student)": ENCODER,  # no grad: forward only, to the last layer
        "objective mlm": 3 * LM_HEAD,
        "objective jepa": 3 * swiglu,
        "objective sigreg": 3 * sigreg,
    }


def test_ema_half_depth_target_and_all_positions():
    model = model_of({"name": "mlm"}, {"name": "jepa", "positions": "all", "target": {"source": "ema", "layer": "half"}},
                     {"name": "vicreg"})
    parts = model.flop_parts(BatchCounts.of(small_batch()))
    assert parts["target pass (ema)"] == BLOCK  # stops after block 1 of 2
    assert parts["objective jepa"] == 3 * 3 * 2 * 14 * 16 * 43  # the SwiGLU on all 14 residues
    assert parts["objective vicreg"] == 3 * 2 * 16 * 14 * 16  # covariance of the 14 predictions
    assert model.step_flops(BatchCounts.of(small_batch())) == sum(parts.values())


def test_mlm_count_is_the_bench_formula_it_replaced():
    # The bench's former MLM row: 3 x (depth (24 d^2 T + 4 d P) + 2 N (d^2 + 33 d)).
    counts = BatchCounts(tokens=4000, attention_pairs=90_000, masked=500, residues=3900, sequences=50)
    d, depth = 320, 6
    model = model_of({"name": "mlm"}, encoder={"name": "esm2", "preset": "esm2_8m"})
    assert model.step_flops(counts) == 3 * (depth * (24 * d**2 * 4000 + 4 * d * 90_000) + 2 * 500 * (d**2 + d * 33))


@pytest.mark.parametrize("encoder", ["esm2", "modern"])
@pytest.mark.parametrize("predictor", [{"kind": "mlp"}, {"kind": "transformer", "layers": 2, "heads": 2}])
def test_forward_count_matches_flop_counter_mode(encoder, predictor, monkeypatch):
    if encoder == "modern":
        pytest.importorskip("torchtune")
    # The math backend: attention as two batched matmuls FlopCounterMode counts (CPU SDPA it does not).
    monkeypatch.setitem(attention._BACKEND_FUNCTIONS, "sdpa", attention.math_attention)
    config = {**ESM2_2x16, "name": encoder} | ({"kv_heads": 2} if encoder == "modern" else {})
    model = model_of({"name": "mlm"}, {"name": "jepa", "predictor": predictor},
                     {"name": "sigreg", "num_directions": 16}, {"name": "vicreg"}, encoder=config)
    batch = make_batch(["MKTAYIAK", "GLSDGEWQ"], [[1, 4], [0]])  # unpadded: every computed pair attends
    parts = model.flop_parts(BatchCounts.of(batch))
    forward = sum(flops if part.startswith("target") else flops / 3 for part, flops in parts.items())
    with FlopCounterMode(display=False) as counter:
        model(batch)
    # Exact, but for SIGReg's [16, 17] x [17] integral: a matrix-vector product FlopCounterMode does not count.
    assert counter.get_total_flops() == forward - 2 * 16 * 17
    with FlopCounterMode(display=False) as counter:
        model(batch).loss.backward()
    # Forward and backward: "backward = 2 x forward" is within 1% of the products autograd runs
    # (it runs fewer where an operand needs no gradient: SIGReg's directions).
    assert counter.get_total_flops() == pytest.approx(model.step_flops(BatchCounts.of(batch)), rel=0.01)


def test_an_encoder_without_a_count_refuses_a_flop_budget_in_one_line():
    model = build_model(recipe_of({"name": "mlm"}))  # tests' ToyEncoder declares no count
    assert flop_counter(model, Budget("steps", 10)) is None  # other budgets run, uncounted
    with pytest.raises(FlopCountError) as info:
        flop_counter(model, Budget("flops", 1e12))
    assert str(info.value).startswith("budget.flops: cannot count the FLOPs of encoder ToyEncoder, objective mlm")
    assert "\n" not in str(info.value)


def test_counter_reads_the_batch_without_the_device():
    model = model_of({"name": "mlm"})
    count = flop_counter(model, Budget("flops", 1e12))
    # On the meta device a tensor has a shape and no values: reading one (a host sync) would fail.
    assert count(small_batch().to("meta")) == 3 * (ENCODER + LM_HEAD)
