"""The torchtune-built modern encoder: config, a hand-written reference, padding and packing invariance."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from protjepa.alphabet import ESM_ALPHABET
from protjepa.attention import AttentionLayout
from protjepa.build import build_model
from protjepa.data.collate import Collator, encode_sequences
from protjepa.encoders.modern import ModernConfig, ModernEncoder
from protjepa.recipe import RecipeError, parse_recipe
from protjepa.registry import ENCODERS

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLE", "MADEEKLPPGWEKRMSRSSGRVYYFNHITNASQW"]


def tiny(**overrides) -> ModernEncoder:
    cfg = dict(num_layers=2, embed_dim=32, attention_heads=4, kv_heads=2, max_seq_len=64) | overrides
    return ModernEncoder(ModernConfig(**cfg)).eval()


def padded(seqs: list[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [ESM_ALPHABET.encode(s) for s in seqs]
    length = length or max(len(r) for r in rows)
    tokens = torch.full((len(rows), length), ESM_ALPHABET.pad_idx)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    return tokens, tokens.eq(ESM_ALPHABET.pad_idx)


# ----------------------------------------------------------------------------- config


def test_presets_match_esm2_sizes_and_fields_override():
    cfg = ModernConfig(preset="modern_35m", num_layers=3)
    assert (cfg.num_layers, cfg.embed_dim, cfg.attention_heads, cfg.kv_heads) == (3, 480, 20, 20)
    assert cfg.ffn_hidden == 1280  # 8/3 x 480, a multiple of 64
    # ESM-2 8M has 7.8M parameters (6 x 320): a SwiGLU at 8/3 x width keeps the size.
    n = sum(p.numel() for p in ModernEncoder(ModernConfig(preset="modern_8m")).parameters())
    assert 7.0e6 < n < 8.5e6


@pytest.mark.parametrize(
    "options, message",
    [
        ({"embed_dim": 32}, "3: encoder: give a preset (modern_8m|modern_35m|modern_150m) or num_layers, attention_heads"),
        ({"num_layers": 1, "embed_dim": 30, "attention_heads": 4}, "3: encoder: embed_dim 30 must split into 4 heads"),
        ({"num_layers": 1, "embed_dim": 32, "attention_heads": 4, "kv_heads": 3}, "not a multiple of kv_heads 3"),
        ({"preset": "modern_1b"}, "4: encoder.preset: expected modern_8m|modern_35m|modern_150m"),
        ({"preset": "modern_8m", "heads": 4}, "5: encoder.heads: unknown key"),
    ],
)
def test_bad_config_names_line_and_key(options, message):
    text = yaml.safe_dump({"name": "r", "encoder": {"name": "modern", **options}, "objectives": [{"name": "mlm"}]},
                          sort_keys=False)
    with pytest.raises(RecipeError) as err:
        parse_recipe(yaml.safe_load(text), "r.yaml", text)
    assert str(err.value).startswith("r.yaml:") and message in str(err.value)


def test_registered_under_modern():
    entry = ENCODERS.get("modern")
    assert entry.config_cls is ModernConfig
    assert isinstance(entry.builder(ModernConfig(num_layers=1, embed_dim=8, attention_heads=2)), ModernEncoder)


# ----------------------------------------------------------------------------- architecture


def reference_forward(enc: ModernEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """The architecture written out by hand for one unpadded row: pre-RMSNorm blocks, bidirectional
    attention with interleaved-pair rotary on q and k, grouped kv heads, SwiGLU, a final RMSNorm."""
    cfg = enc.config
    heads, kv, dh = cfg.attention_heads, cfg.kv_heads, cfg.head_dim
    length = tokens.shape[1]

    def rms(x, norm):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * norm.scale

    def rotary(x):  # [L, H, dh]: pairs (2i, 2i+1) rotated by pos * base^(-2i/dh)
        freq = cfg.rope_base ** (-torch.arange(0, dh, 2).float() / dh)
        angle = torch.arange(length).float()[:, None] * freq  # [L, dh/2]
        cos, sin = angle.cos()[:, None], angle.sin()[:, None]
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, odd * cos + even * sin], -1).flatten(-2)

    x = enc.embed_tokens.weight[tokens[0]]
    for layer in enc.layers:
        a = layer.attn
        h = rms(x, layer.sa_norm)
        q = rotary((h @ a.q_proj.weight.T).view(length, heads, dh))
        k = rotary((h @ a.k_proj.weight.T).view(length, kv, dh)).repeat_interleave(heads // kv, dim=1)
        v = (h @ a.v_proj.weight.T).view(length, kv, dh).repeat_interleave(heads // kv, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(dh)
        attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(length, -1)
        x = x + attended @ a.output_proj.weight.T
        h = rms(x, layer.mlp_norm)
        mlp = layer.mlp
        x = x + (F.silu(h @ mlp.w1.weight.T) * (h @ mlp.w3.weight.T)) @ mlp.w2.weight.T
    return rms(x, enc.norm).unsqueeze(0)


@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_matches_hand_written_reference(attention):
    enc = tiny(attention=attention)
    tokens, mask = padded(SEQS[:1])
    torch.testing.assert_close(enc(tokens, mask).last, reference_forward(enc, tokens), atol=2e-5, rtol=1e-4)


def test_attention_is_bidirectional():
    enc = tiny()
    tokens, mask = padded(SEQS[:1])
    changed = tokens.clone()
    changed[0, -2] = ESM_ALPHABET.index["W"] if tokens[0, -2] != ESM_ALPHABET.index["W"] else ESM_ALPHABET.index["A"]
    first = enc(tokens, mask).last[0, 0]
    assert not torch.allclose(first, enc(changed, mask).last[0, 0], atol=1e-4)  # a causal mask would hide it


def test_shapes_layers_and_lm_head():
    enc = tiny()
    tokens, mask = padded(SEQS)
    out = enc(tokens, mask, layers=[0, 1, 2])
    assert out.last.shape == (3, tokens.shape[1], 32)
    assert sorted(out.layers) == [0, 1, 2]
    torch.testing.assert_close(out.layers[0], enc.embed_tokens(tokens))
    assert out.layers[2] is out.last  # depth num_layers is the final, normalised output
    assert enc.lm_head(out.last).shape == (3, tokens.shape[1], len(ESM_ALPHABET))
    assert enc.has_lm_head


def test_stop_at_returns_the_block_output_and_skips_the_rest():
    enc = tiny(num_layers=3)
    tokens, mask = padded(SEQS)
    full = enc(tokens, mask, layers=[1, 2])
    early = enc(tokens, mask, layers=[1], stop_at=2)
    torch.testing.assert_close(early.last, full.layers[2])
    torch.testing.assert_close(early.layers[1], full.layers[1])
    with pytest.raises(ValueError, match=r"layers \[3\] and stop_at 2 must lie in 0\.\.\d+, layers at most stop_at"):
        enc(tokens, mask, layers=[3], stop_at=2)
    with pytest.raises(ValueError, match="exceed max_seq_len 64"):
        enc(torch.full((1, 65), ESM_ALPHABET.index["A"]))


def test_padding_does_not_change_real_positions():
    enc = tiny()
    alone_tokens, alone_mask = padded(SEQS[1:2])
    alone = enc(alone_tokens, alone_mask, layers=[1]).last
    tokens, mask = padded(SEQS, length=48)  # SEQS[1] is row 1, padded by 40 tokens
    out = enc(tokens, mask, layers=[1])
    n = alone_tokens.shape[1]
    torch.testing.assert_close(out.last[1, :n], alone[0], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(out.last).all()  # padding attends to padding: no empty softmax rows


def test_packed_row_equals_separate_sequences():
    enc = tiny(attention="sdpa")
    rows = [ESM_ALPHABET.encode(s) for s in SEQS]
    lengths = [len(r) for r in rows]
    length = sum(lengths) + 5  # a padding tail
    tokens = torch.full((1, length), ESM_ALPHABET.pad_idx)
    tokens[0, : sum(lengths)] = torch.cat(rows)
    segment_ids = torch.zeros(1, length, dtype=torch.long)
    segment_ids[0, : sum(lengths)] = torch.repeat_interleave(torch.arange(1, 4), torch.tensor(lengths))
    positions = torch.zeros(1, length, dtype=torch.long)
    positions[0, : sum(lengths)] = torch.cat([torch.arange(n) for n in lengths])
    padding_mask = segment_ids.eq(0)
    layout = AttentionLayout(padding_mask, segment_ids, positions)

    packed = enc(tokens, padding_mask, layout=layout, layers=[1])
    starts = [0, lengths[0], lengths[0] + lengths[1]]
    for seq, start, n in zip(SEQS, starts, lengths):
        alone = enc(*padded([seq]), layers=[1])
        torch.testing.assert_close(packed.last[0, start : start + n], alone.last[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(packed.layers[1][0, start : start + n], alone.layers[1][0], atol=1e-5, rtol=1e-4)
    math = tiny(attention="math")
    math.load_state_dict(enc.state_dict())
    torch.testing.assert_close(math(tokens, padding_mask, layout=layout).last, packed.last, atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter():
    enc = tiny().train()
    tokens, mask = padded(SEQS)
    logits = enc.lm_head(enc(tokens, mask).last)
    F.cross_entropy(logits[~mask], tokens[~mask]).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_one_training_step_from_a_recipe(packing):
    recipe = parse_recipe({
        "name": "modern",
        "encoder": {"name": "modern", "num_layers": 2, "embed_dim": 32, "attention_heads": 4, "attention": "sdpa"},
        "objectives": [{"name": "mlm"}, {"name": "jepa", "weight": 0.45, "target": {"source": "ema", "layer": "half"}}],
        "data": {"packing": packing},
    })
    model = build_model(recipe)
    assert isinstance(model.encoder, ModernEncoder) and isinstance(model.teacher, ModernEncoder)
    batch = Collator(ESM_ALPHABET, recipe.masking, packing=packing, row_length=64, seed=3)(encode_sequences(SEQS))
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.metrics["mlm/loss"] > 0
    assert all(p.grad is not None for p in model.encoder.parameters())
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    model.ema_update(0.9)  # the deep-copied teacher still has its own parameters and attention hook
    torch.testing.assert_close(next(model.teacher.parameters()), before[0] + 0.1)
