"""data.static_shapes: every training batch the same shapes (what CUDA graphs replay), with the
masked positions filled up to a fixed count by weight-0 filler that no objective counts."""
from __future__ import annotations

import copy

import pytest
import torch
from composer.core import Callback
from torch._dynamo.utils import counters

from protjepa.alphabet import ESM_ALPHABET
from protjepa.batch import masked_budget
from protjepa.build import build_model
from protjepa.data.collate import Collator, encode_sequences
from protjepa.data.corpus import FastaCorpus
from protjepa.data.fasta import FastaReader
from protjepa.recipe import MaskingConfig, RecipeError, parse_recipe
from protjepa.training import trainer as trainer_module
from protjepa.training.trainer import build_run, compile_step, fit, replays_cuda_graphs

VALID = "pretrain_swissprot50/swissprot2014_50_valid.fasta.gz"
ROW = 130  # crop 128 + <cls>/<eos>
ROWS = 4
ENCODER = {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4}


def recipe(objectives, **data):
    return parse_recipe({"name": "static", "encoder": ENCODER, "objectives": objectives,
                         "data": {"crop": 128, "batch_tokens": ROWS * ROW, "packing": True, "static_shapes": True,
                                  **data}}, "static.yaml")


def sequences(data_root, n=40):
    """``n`` held-out records, the first 22 to 40 residues of each (3 to a row)."""
    records = []
    for record in FastaReader(data_root / VALID):
        records.append(record.sequence[:40 - 3 * (len(records) % 7)])
        if len(records) == n:
            return encode_sequences(records)


def pair(tokens, masking=MaskingConfig(rate=0.2), seed=3):
    """The same sequences collated with static shapes and without, by equally seeded collators."""
    static = Collator(ESM_ALPHABET, masking, packing=True, row_length=ROW, seed=seed, static_rows=ROWS)(tokens)
    dynamic = Collator(ESM_ALPHABET, masking, packing=True, row_length=ROW, seed=seed)(tokens)
    return static, dynamic


def test_a_static_corpus_yields_one_shape_and_the_filler_weighs_nothing(data_root):
    corpus = FastaCorpus(data_root / VALID, masking=MaskingConfig(rate=0.2), crop=128, batch_tokens=ROWS * ROW + 50,
                         packing=True, static_shapes=True, infinite=False, shuffle_buffer=1)
    batches = [b for _, b in zip(range(30), corpus)]
    budget = masked_budget(ROWS * ROW, 0.2)
    assert budget == 104  # ceil(0.2 * 520) rounded up to 8
    for b in batches:
        assert b.shape == (ROWS, ROW) and b.masked_index.shape == b.masked_weight.shape == (budget,)
        assert b.static_shapes and b.block_seqlens is None
        n = b.num_masked
        assert b.masked_weight[:n].eq(1).all() and b.masked_weight[n:].eq(0).all()
        assert b.masked_index[n:].eq(0).all()  # row 0's <cls>: never selected
        assert b.tokens.flatten()[0] == ESM_ALPHABET.cls_idx
        assert 0 < n <= budget
    assert len({b.num_masked for b in batches}) > 1  # the real count varies; the shapes do not


def test_static_and_dynamic_collation_select_the_same_positions(data_root):
    static, dynamic = pair(sequences(data_root, 9))
    rows = dynamic.shape[0]
    assert rows < ROWS  # the static batch adds empty rows
    assert torch.equal(static.tokens[:rows], dynamic.tokens) and static.padding_mask[rows:].all()
    assert torch.equal(static.inputs[:rows], dynamic.inputs)
    assert torch.equal(static.masked_index[:static.num_masked], dynamic.masked_index)
    assert static.num_masked == dynamic.num_masked == dynamic.masked_index.numel()
    assert static.num_residues == dynamic.num_residues
    assert static.num_padding == dynamic.num_padding + (ROWS - rows) * ROW


def test_an_excess_over_the_budget_is_left_unselected_with_its_inputs_restored():
    # 40 two-residue sequences: each selects 1 of its 2 residues (at least 1), 40 in all, far above
    # the budget of 0.2 x the tokens (160 tokens, 4 rows of 40 -> 32).
    tokens = encode_sequences(["MK"] * 40)
    masking = MaskingConfig(rate=0.2, mask_prob=1.0, random_prob=0.0)
    batch = Collator(ESM_ALPHABET, masking, packing=True, row_length=40, seed=0, static_rows=4)(tokens)
    assert masked_budget(160, 0.2) == 32 == batch.num_masked and batch.masked_filler == 0
    masked = batch.inputs.eq(ESM_ALPHABET.mask_idx)
    assert masked.sum() == 32  # the 8 left unselected are their residues again
    selected = torch.zeros(batch.inputs.numel(), dtype=torch.bool)
    selected[batch.masked_index] = True
    assert torch.equal(selected.view_as(masked), masked)


OBJECTIVES = [
    [{"name": "mlm"}, {"name": "jepa", "weight": 0.45},
     {"name": "vicreg", "input": "jepa.pred"}, {"name": "sigreg", "input": "jepa.pred", "num_directions": 16}],
    [{"name": "mlm"}, {"name": "jepa", "loss": "mse", "predictor": {"kind": "transformer", "layers": 1}},
     {"name": "vicreg", "id": "vic", "input": "student.masked"}],
    [{"name": "jepa", "loss": "smooth_l1", "target": {"source": "ema"}}],
]


@pytest.mark.parametrize("objectives", OBJECTIVES, ids=["mlm_jepa_regularisers", "transformer_mse", "ema_smooth_l1"])
def test_every_objective_scores_a_static_batch_as_the_dynamic_one(data_root, objectives):
    """Losses, metrics and gradients on a static batch (empty rows, filler) equal those on the same
    batch collated without: the filler and the empty rows count for nothing."""
    static, dynamic = pair(sequences(data_root, 9))
    torch.manual_seed(0)
    model = build_model(recipe(objectives)).eval()  # eval: no dropout; the regularisers' rows are local
    twin = copy.deepcopy(model)
    got, want = model(static), twin(dynamic)
    assert set(got.metrics) == set(want.metrics)
    for key in want.metrics:
        torch.testing.assert_close(got.metrics[key], want.metrics[key], rtol=2e-5, atol=2e-6, msg=key)
    got.loss.backward()
    want.loss.backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=2e-6, msg=name)


def test_a_compiled_step_on_static_batches_compiles_once(data_root):
    """dynamic=False on static batches: one set of graphs, however many positions each batch selects
    (dynamo's graphs and guards; aot_eager leaves out inductor's code generation, which they do not need)."""
    tokens = sequences(data_root, 40)
    torch.manual_seed(0)
    model = build_model(recipe([{"name": "mlm"}, {"name": "jepa", "weight": 0.45}]))
    counters.clear()
    torch._dynamo.reset()
    step = torch.compile(model, dynamic=False, backend="aot_eager")
    graphs, selected = [], set()
    for start in (0, 10, 20, 30):
        collate = Collator(ESM_ALPHABET, MaskingConfig(rate=0.2), packing=True, row_length=ROW, seed=start,
                           static_rows=ROWS)
        batch = collate(tokens[start:start + 10])
        step(batch).loss.backward()
        graphs.append(counters["stats"]["unique_graphs"])
        selected.add(batch.num_masked)
    assert len(selected) > 1 and graphs == graphs[:1] * 4
    assert not counters["recompiles"]


class GraphCount(Callback):
    """dynamo's count of graphs made so far, after each step."""

    def __init__(self):
        self.graphs: list[int] = []

    def batch_end(self, state, logger):
        self.graphs.append(counters["stats"]["unique_graphs"])


def test_a_compiled_training_run_on_static_shapes_compiles_once(tmp_path, data_root, monkeypatch):
    """Through Composer: batches reach the compiled step on the device already, and nothing of
    theirs that changes per batch (host-side counts) is read inside it, so 6 steps of a compiled
    static-shapes run make one graph, in the first step (aot_eager: dynamo's graphs and guards,
    without inductor's code generation)."""
    objectives = [{"name": "mlm"}, {"name": "jepa", "weight": 0.45},
                  {"name": "sigreg", "weight": 0.05, "input": "jepa.pred", "num_directions": 16},
                  {"name": "vicreg", "weight": 0.01, "input": "student.masked"}]
    raw = {"name": "static", "encoder": ENCODER, "objectives": objectives,
           "data": {"crop": 254, "batch_tokens": 1024, "packing": True, "static_shapes": True, "shuffle_buffer": 16},
           "budget": {"steps": 6},
           "train": {"device": "cpu", "compile": True, "log_every": 2, "monitor_every": 3, "monitor_sequences": 8,
                     "checkpoint_at": [1.0]}}
    monkeypatch.setattr(trainer_module, "compile_step",
                        lambda recipe, device: ({"dynamic": False, "backend": "aot_eager"}, "torch.compile: on"))
    counters.clear()
    torch._dynamo.reset()
    spy = GraphCount()
    run = build_run(parse_recipe(raw, "static.yaml"), tmp_path / "run", data_root=str(data_root), console=False,
                    callbacks=(spy,))
    try:
        fit(run)
    finally:
        run.log.close()
        run.trainer.close()
    # One graph, made in the first step: no recompilation, and no graph break anywhere in the step
    # (the attention backend, decided before it, is read inside the graph; SIGReg's directions are
    # drawn in it, from its step buffer).
    assert spy.graphs == [1] * 6 and not counters["recompiles"]


def test_recipes_that_cannot_keep_shapes_static_are_refused():
    with pytest.raises(RecipeError, match=r"data: .*static_shapes needs packing: true"):
        recipe([{"name": "mlm"}], packing=False)
    with pytest.raises(RecipeError, match=r"objectives\[1\]: with data.static_shapes: true, positions: all predicts "
                                          r"every residue, a count that changes per batch$"):
        recipe([{"name": "mlm"}, {"name": "jepa", "positions": "all"}])
    with pytest.raises(RecipeError, match=r"objectives\[1\]: .*input student.pooled has a row count that changes"):
        recipe([{"name": "mlm"}, {"name": "vicreg", "input": "student.pooled"}])


def test_compile_config_follows_static_shapes_and_the_device():
    static = recipe([{"name": "mlm"}], **{})
    static.train.compile = True
    assert compile_step(static, "gpu") == ({"dynamic": False, "mode": "reduce-overhead"},
                                           "torch.compile: on, CUDA graphs (train.compile true; "
                                           "data.static_shapes: mode reduce-overhead)")
    assert compile_step(static, "cpu")[0] == {"dynamic": False}
    # only the GPU's config replays CUDA graphs, whose steps the trainer (and the bench) must mark
    assert replays_cuda_graphs(compile_step(static, "gpu")[0])
    assert not replays_cuda_graphs(compile_step(static, "cpu")[0]) and not replays_cuda_graphs(None)
    static.train.compile = False
    assert compile_step(static, "gpu") == (None, "torch.compile: off (train.compile false)")
