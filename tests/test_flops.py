"""Model FLOPs of a training step: hand counts, FlopCounterMode's count, the bench's former formula."""
from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from protjepa import attention
from protjepa.bench.batches import Prepared
from protjepa.bench.rows import step_flops
from protjepa.build import build_model
from protjepa.data.collate import Collator, encode_sequences
from protjepa.flops import BatchCounts
from protjepa.recipe import parse_recipe
from protjepa.training.budget import Budget, FlopCountError
from protjepa.training.summary import read_records
from protjepa.training.trainer import flop_counter, train
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


# --------------------------------------------------------------------------- encoders that declare no count


@pytest.mark.parametrize("encoder", ["esm2", "modern"])
def test_flop_counter_mode_counts_our_encoders_as_their_formulas_do(encoder):
    """Counted on three sample sequences (SDPA's CPU kernel included), the fit gives what the formula
    declares on any batch, padded or packed, to any depth: within 2%, in fact exactly."""
    if encoder == "modern":
        pytest.importorskip("torchtune")
    config = {**ESM2_2x16, "name": encoder, "num_layers": 4} | ({"kv_heads": 2} if encoder == "modern" else {})
    net = model_of({"name": "mlm"}, encoder=config).encoder
    counted = net.count_flops({2, 4})
    sequences = encode_sequences(["MKTAYIAKQRQISFVKSHFSRQ", "GLSDGEWQLVLNVWGKVEAD", "PEPTIDE"])
    for batch in (Collator()(sequences), Collator(packing=True, row_length=64)(sequences)):
        counts = BatchCounts.of(batch)
        for depth in (2, 4):
            assert counted.forward[depth](counts) == pytest.approx(net.forward_flops(counts, depth), rel=0.02)
            assert counted.forward[depth](counts) == net.forward_flops(counts, depth)
    assert counted.lm_head * 5 == net.lm_head_flops(5)


def small_transformer_flops(tokens: int, pairs: int, masked: int) -> float:
    """SmallTransformer(32, 2 layers) by hand: per layer the q, k, v and out projections (32 x 96, 32 x 32),
    the MLP (32 x 64, 64 x 32), attention 4 x 32 FLOPs a pair; the adapter's LM head, 32 x 33."""
    layer = tokens * (2 * 32 * 96 + 2 * 32 * 32 + 2 * 2 * 32 * 64) + 4 * 32 * pairs
    return 3 * 2 * layer + 3 * masked * 2 * 32 * 33  # the student forward and backward; MLM's head likewise


def test_a_component_encoder_is_counted_by_flop_counter_mode():
    model = build_model(parse_recipe({"name": "t", "encoder": {"_component_": "toy_model.SmallTransformer"},
                                      "objectives": [{"name": "mlm"}]}))
    counts = BatchCounts.of(small_batch())
    assert model.step_flops(counts) is None  # it declares no count
    line = model.count_encoder_flops()
    assert re.fullmatch(r"model FLOPs of ModuleAdapter: it declares no count; counted by torch's FlopCounterMode on "
                        r"sample sequences in \d+\.\d\d s: a forward 3\.28e\+04 a token \+ 256 an attending pair, "
                        r"the LM head 2\.11e\+03 a position", line), line
    assert model.step_flops(counts) == small_transformer_flops(counts.tokens, counts.attention_pairs, counts.masked)
    assert model.count_encoder_flops() is None  # counted once


def test_a_component_encoder_trains_under_a_flop_budget(tmp_path, data_root):
    recipe = parse_recipe({"name": "component", "encoder": {"_component_": "toy_model.SmallTransformer"},
                           "objectives": [{"name": "mlm"}], "data": {"crop": 64, "batch_tokens": 512,
                                                                    "shuffle_buffer": 64, "packing": False},
                           "budget": {"flops": 3e8}, "train": {"device": "cpu", "monitor_sequences": 4,
                                                               "log_every": 1, "checkpoint_at": [1.0]}})
    result = train(recipe, tmp_path, data_root=str(data_root), console=False)
    summary = result.summary
    steps = [r for r in read_records(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert summary["flops"] >= 3e8 > steps[-2]["flops"]  # it stopped at the first step that reached the budget
    assert "model FLOPs of ModuleAdapter: it declares no count; counted by torch's FlopCounterMode" in result.text


def test_a_module_the_counter_cannot_run_stays_uncounted_and_says_why(monkeypatch):
    model = build_model(parse_recipe({"name": "t", "encoder": {"_component_": "toy_model.SmallTransformer"},
                                      "objectives": [{"name": "mlm"}]}))

    def fails(depths):
        raise RuntimeError("a custom kernel with no meta function")

    monkeypatch.setattr(model.encoder, "count_flops", fails)
    assert model.count_encoder_flops() == ("model FLOPs of ModuleAdapter: not counted (it declares no count, and "
                                           "FlopCounterMode raised RuntimeError: a custom kernel with no meta function)")
    with pytest.raises(FlopCountError, match=r"^budget.flops: cannot count the FLOPs of encoder ModuleAdapter, "):
        flop_counter(model, Budget("flops", 1e12))


def test_the_bench_counts_a_component_encoders_steps_as_training_does():
    model = build_model(parse_recipe({"name": "t", "encoder": {"_component_": "toy_model.SmallTransformer"},
                                      "objectives": [{"name": "mlm"}]}))
    batch = small_batch()
    counts = BatchCounts.of(batch)
    assert step_flops(model)(Prepared(batch, counts.tokens, counts, {})) == \
        small_transformer_flops(counts.tokens, counts.attention_pairs, counts.masked)
