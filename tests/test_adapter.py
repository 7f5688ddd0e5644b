"""Foreign modules behind the Encoder interface: the adapter protocol, ``_component_`` recipes, a training step."""
from __future__ import annotations

import sys

import pytest
import torch
import yaml
from torch import nn

from protjepa.alphabet import ESM_ALPHABET
from protjepa.attention import AttentionLayout
from protjepa.build import build_encoder, build_model
from protjepa.data.collate import Collator, encode_sequences
from protjepa.encoders.adapter import AdapterError, ModuleAdapter
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.recipe import RecipeError, parse_recipe

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLE", "MADEEKLPPGWEKRMSRSSGRVYYFNHITNASQW"]

# A third-party lab's model, as it would live outside this repository.
LAB_MODELS = '''
import torch
from torch import nn


class TinyTransformer(nn.Module):
    """Embedding + nn.TransformerEncoderLayer blocks; returns hidden states per depth, or the last only."""

    def __init__(self, width=16, layers=2, per_depth=True, lm_head=False):
        super().__init__()
        self.num_layers = layers
        self.embed = nn.Embedding(33, width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True) for _ in range(layers)
        )
        self.per_depth = per_depth
        if lm_head:
            self.lm_head = nn.Linear(width, 33)

    def forward(self, tokens, padding_mask):
        h = self.embed(tokens)
        states = [h]
        for block in self.blocks:
            h = block(h, src_key_padding_mask=padding_mask)
            states.append(h)
        return tuple(states) if self.per_depth else h


def make_encoder(width=16, layers=2, per_depth=True, lm_head=False):
    return TinyTransformer(width, layers, per_depth, lm_head)


def make_nothing():
    return "not a module"
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``adapter_lab_models`` importable from a temporary folder, as a user's own package would be."""
    folder = tmp_path_factory.mktemp("lab")
    (folder / "adapter_lab_models.py").write_text(LAB_MODELS)
    sys.path.insert(0, str(folder))
    import adapter_lab_models

    yield adapter_lab_models
    sys.path.remove(str(folder))
    sys.modules.pop("adapter_lab_models", None)


def padded(seqs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = Collator(ESM_ALPHABET)(encode_sequences(seqs))
    return batch.tokens, batch.padding_mask


class Returns(nn.Module):
    """Returns whatever ``shape_output`` makes of [embeddings, +1, +2] (depths 0, 1, 2)."""

    def __init__(self, shape_output, **attributes):
        super().__init__()
        self.embed = nn.Embedding(33, 8)
        self.shape_output = shape_output
        for key, value in attributes.items():
            setattr(self, key, value)

    def forward(self, tokens, padding_mask):
        h = self.embed(tokens)
        return self.shape_output([h, h + 1, h + 2])


# ----------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize(
    "shape_output, depths",
    [
        (lambda s: s[-1], [2]),
        (lambda s: tuple(s), [0, 1, 2]),
        (lambda s: list(s), [0, 1, 2]),
        (lambda s: {"hidden_states": tuple(s), "last_hidden_state": s[-1]}, [0, 1, 2]),
        (lambda s: {"last_hidden_state": s[-1]}, [2]),
        (lambda s: EncoderOutput(s[-1], {1: s[1]}), [1, 2]),
    ],
    ids=["tensor", "tuple", "list", "hf-mapping", "hf-last-only", "encoder-output"],
)
def test_accepted_outputs(shape_output, depths):
    enc = ModuleAdapter.wrap(Returns(shape_output, num_layers=2))
    assert (enc.embed_dim, enc.num_layers) == (8, 2)
    tokens, mask = padded(SEQS)
    h = enc.module.embed(tokens)
    out = enc(tokens, mask, layers=depths)
    torch.testing.assert_close(out.last, h + 2)
    for d in depths:
        torch.testing.assert_close(out.layers[d], h + d)
    missing = sorted({0, 1, 2} - set(depths))
    if missing:
        with pytest.raises(AdapterError, match=rf"Returns: layer {missing[0]} was requested, but the module returns "):
            enc(tokens, mask, layers=[missing[0]])


def test_inferred_sizes_and_stop_at():
    enc = ModuleAdapter.wrap(Returns(lambda s: tuple(s)))  # no attributes: read from the probe call
    assert (enc.embed_dim, enc.num_layers, enc.alphabet) == (8, 2, ESM_ALPHABET)
    tokens, mask = padded(SEQS)
    torch.testing.assert_close(enc(tokens, mask, stop_at=1).last, enc.module.embed(tokens) + 1)
    assert ModuleAdapter.wrap(Returns(lambda s: s[-1])).num_layers == 1  # final output only


def test_adds_a_linear_lm_head_only_when_missing(lab):
    tokens, mask = padded(SEQS)
    plain = ModuleAdapter.wrap(lab.make_encoder())
    assert isinstance(plain.head, nn.Linear) and plain.has_lm_head
    assert plain.lm_head(plain(tokens, mask).last).shape == (*tokens.shape, 33)
    own = ModuleAdapter.wrap(lab.make_encoder(lm_head=True))
    assert own.head is None
    hidden = own(tokens, mask).last
    torch.testing.assert_close(own.lm_head(hidden), own.module.lm_head(hidden))


@pytest.mark.parametrize(
    "module, message",
    [
        (Returns(lambda s: "oops"), r"\.Returns\.forward returned str; expected a \[B, L, D\] tensor"),
        (Returns(lambda s: s[-1][0]), r"returned hidden states of shape \(12, 8\); expected \[B, L, D\]"),
        (Returns(lambda s: s[-1], embed_dim=16), r"Returns\.embed_dim is 16, but its hidden states have width 8"),
        (Returns(lambda s: tuple(s), num_layers=1), r"num_layers is 1, but it returns hidden states at depth 2"),
        (Returns(lambda s: s[-1], lm_head=nn.Linear(8, 20)), r"lm_head returns 20 logits; its alphabet has 33"),
        ("a string", r"the encoder factory returned a str, not a torch nn\.Module"),
    ],
)
def test_protocol_violations_are_named(module, message):
    with pytest.raises(AdapterError, match=message):
        ModuleAdapter.wrap(module)


def test_native_encoders_pass_through():
    from protjepa.encoders.modern import ModernConfig, ModernEncoder

    native = ModernEncoder(ModernConfig(num_layers=1, embed_dim=8, attention_heads=2))
    assert ModuleAdapter.wrap(native) is native and isinstance(native, Encoder)


class RecordsMode(Returns):
    def forward(self, tokens, padding_mask):
        self.modes.append(self.training)
        return super().forward(tokens, padding_mask)


def test_probe_runs_in_eval_mode_and_restores_training():
    module = RecordsMode(lambda s: s[-1], modes=[]).train()
    ModuleAdapter.wrap(module)
    assert module.modes == [False] and module.training  # no dropout or batch-norm updates from the probe


# ----------------------------------------------------------------------------- packed rows


class Segmented(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(33, 8)
        self.seen = {}

    def forward(self, tokens, padding_mask, segment_ids=None, positions=None):
        self.seen = {"segment_ids": segment_ids, "positions": positions}
        return self.embed(tokens)


def packed_batch():
    return Collator(ESM_ALPHABET, packing=True, row_length=64)(encode_sequences(SEQS))


def test_packed_rows_reach_modules_that_take_segments():
    batch = packed_batch()
    enc = ModuleAdapter.wrap(Segmented())
    assert enc.accepts_segments
    enc(batch.tokens, batch.padding_mask, layout=AttentionLayout.from_batch(batch))
    assert enc.module.seen["segment_ids"] is batch.segment_ids and enc.module.seen["positions"] is batch.positions


def test_packed_rows_are_refused_by_modules_without_segments():
    batch = packed_batch()
    enc = ModuleAdapter.wrap(Returns(lambda s: s[-1]))
    with pytest.raises(AdapterError, match=r"Returns cannot encode packed rows .*set data\.packing: false"):
        enc(batch.tokens, batch.padding_mask, layout=AttentionLayout.from_batch(batch))


# ----------------------------------------------------------------------------- recipes


def lab_recipe(encoder: dict, **extra) -> dict:
    return {
        "name": "lab",
        "encoder": {"_component_": "adapter_lab_models.make_encoder", **encoder},
        "objectives": [{"name": "mlm"}, {"name": "jepa", "weight": 0.45, "target": {"layer": "half"}}],
        **extra,
    }


def test_component_recipe_trains_one_step(lab):
    recipe = parse_recipe(lab_recipe({"width": 24, "layers": 2}))
    model = build_model(recipe)
    assert isinstance(model.encoder, ModuleAdapter) and model.encoder.embed_dim == 24
    batch = Collator(ESM_ALPHABET, recipe.masking, seed=1)(encode_sequences(SEQS))
    out = model(batch)
    assert torch.isfinite(out.loss) and set(out.metrics) >= {"mlm/loss", "jepa/loss"}
    out.loss.backward()
    assert model.encoder.head.weight.grad.abs().sum() > 0  # the adapter's own LM head trains
    for name, p in model.encoder.module.named_parameters():
        assert p.grad is not None, name


def test_intermediate_target_from_a_final_only_module_names_the_layer(lab):
    recipe = parse_recipe(lab_recipe({"per_depth": False, "layers": 2}))
    model = build_model(recipe)
    batch = Collator(ESM_ALPHABET, recipe.masking)(encode_sequences(SEQS))
    with pytest.raises(AdapterError, match=r"TinyTransformer: layer 1 was requested, but the module returns depths \[2\] only"):
        model(batch)  # the JEPA target at "half" of 2 layers


@pytest.mark.parametrize(
    "encoder, message",
    [
        ({"_component_": "adapter_lab_models.make_decoder"},
         "encoder._component_: module 'adapter_lab_models' has no 'make_decoder'"),
        ({"_component_": "no_such_lab.models.make"}, "encoder._component_: cannot import 'no_such_lab.models'"),
        ({"_component_": "make"}, "encoder._component_: 'make' is not a dotted path"),
        ({"_component_": "adapter_lab_models.make_encoder", "depth": 3},
         "encoder: adapter_lab_models.make_encoder: got an unexpected keyword argument 'depth'"),
    ],
)
def test_bad_components_fail_validation_with_their_line(lab, encoder, message):
    raw = {"name": "lab", "encoder": encoder, "objectives": [{"name": "mlm"}]}
    text = yaml.safe_dump(raw, sort_keys=False)
    with pytest.raises(RecipeError) as err:
        parse_recipe(raw, "lab.yaml", text)
    assert str(err.value).startswith(f"lab.yaml:3: {message}")


def test_factory_returning_a_non_module_is_named(lab):
    recipe = parse_recipe({"name": "lab", "encoder": {"_component_": "adapter_lab_models.make_nothing"},
                           "objectives": [{"name": "mlm"}]})
    with pytest.raises(AdapterError, match="returned a str, not a torch nn.Module"):
        build_encoder(recipe)


def test_packing_with_a_module_without_segments_is_refused_at_build(lab):
    recipe = parse_recipe(lab_recipe({}, data={"packing": True}))
    with pytest.raises(RecipeError, match=r"data\.packing: adapter_lab_models\.make_encoder takes no segment_ids"):
        build_encoder(recipe)
