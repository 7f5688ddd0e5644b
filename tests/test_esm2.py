"""ESM-2: parity with transformers' EsmForMaskedLM, depths, packing, token dropout, config."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from esm_reference import padded_tokens, real_sequences, tiny_hf_esm
from protjepa.alphabet import ESM_ALPHABET
from protjepa.attention import AttentionLayout
from protjepa.export import load_encoder
from protjepa.encoders.esm2 import ESM2, ESM2Config, build_esm2
from protjepa.registry import ENCODERS

MASK, CLS, EOS, PAD = ESM_ALPHABET.mask_idx, ESM_ALPHABET.cls_idx, ESM_ALPHABET.eos_idx, ESM_ALPHABET.pad_idx
A, L_ = ESM_ALPHABET.index["A"], ESM_ALPHABET.index["L"]


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory):
    hf = tiny_hf_esm()
    directory = tmp_path_factory.mktemp("hf_esm")
    hf.save_pretrained(directory)
    return hf, load_encoder(directory).eval()


@pytest.fixture(scope="module")
def masked_batch(data_root):
    return padded_tokens(real_sequences(data_root, (40, 27, 13, 33)), mask_every=5)


@pytest.mark.parametrize("backend", ["math", "sdpa", "sdpa_fp32"])
def test_matches_hugging_face(hf_and_ours, masked_batch, backend):
    hf, ours = hf_and_ours
    tokens, padding = masked_batch
    ours.attention = backend
    with torch.no_grad():
        expected = hf(tokens, attention_mask=(~padding).long(), output_hidden_states=True)
        out = ours(tokens, padding, layers=range(ours.num_layers + 1))
        logits = ours.lm_head(out.last)
    real = ~padding  # what padding positions hold is nobody's business
    assert len(expected.hidden_states) == ours.num_layers + 1
    for depth, hidden in enumerate(expected.hidden_states):
        torch.testing.assert_close(out.layers[depth][real], hidden[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits[real], expected.logits[real], atol=1e-4, rtol=0)
    assert out.last is out.layers[ours.num_layers]


def test_stop_at_returns_the_layer_and_skips_the_rest(hf_and_ours, masked_batch):
    _, ours = hf_and_ours
    tokens, padding = masked_batch
    calls = []
    hooks = [m.register_forward_hook(lambda *_, name=name: calls.append(name))
             for name, m in (("block3", ours.layers[2]), ("final_norm", ours.emb_layer_norm_after))]
    try:
        with torch.no_grad():
            full = ours(tokens, padding, layers=[0, 2])
            calls.clear()
            early = ours(tokens, padding, layers=[0, 2], stop_at=2)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []  # block 3 and the final LayerNorm never ran
    assert torch.equal(early.last, full.layers[2])
    assert torch.equal(early.layers[2], full.layers[2]) and torch.equal(early.layers[0], full.layers[0])
    with pytest.raises(ValueError, match="at most stop_at"):
        ours(tokens, padding, layers=[3], stop_at=2)


def test_packed_rows_match_each_sequence_alone(hf_and_ours, data_root):
    _, ours = hf_and_ours
    ours.attention = "sdpa"
    sequences, _ = padded_tokens(real_sequences(data_root, (20, 11, 7)), mask_every=3)
    alone = [row[row.ne(PAD)] for row in sequences]  # different mask ratios: token dropout is per sequence
    rows, length = [[0, 1], [2]], 40
    tokens = torch.full((2, length), PAD)
    segment_ids = torch.zeros(2, length, dtype=torch.long)
    positions = torch.zeros(2, length, dtype=torch.long)
    blocks, spans = [], {}
    for r, members in enumerate(rows):
        start = 0
        for s, i in enumerate(members, start=1):
            n = len(alone[i])
            tokens[r, start : start + n], segment_ids[r, start : start + n] = alone[i], s
            positions[r, start : start + n] = torch.arange(n)
            spans[i] = (r, start, start + n)
            blocks.append(n)
            start += n
        blocks.append(length - start)
    layout = AttentionLayout(segment_ids.eq(0), segment_ids, positions, tuple(blocks))
    with torch.no_grad():
        packed = ours(tokens, layout=layout, layers=[0])
        for i, ids in enumerate(alone):
            single = ours(ids[None], layers=[0])
            r, start, end = spans[i]
            torch.testing.assert_close(packed.layers[0][r, start:end], single.layers[0][0], atol=1e-6, rtol=0)
            torch.testing.assert_close(packed.last[r, start:end], single.last[0], atol=1e-5, rtol=0)


def test_rotary_reads_layout_positions(hf_and_ours, masked_batch):
    _, ours = hf_and_ours
    tokens, padding = masked_batch
    steps = torch.arange(tokens.shape[1]).expand_as(tokens)
    with torch.no_grad():
        default = ours(tokens, padding).last
        shifted = ours(tokens, layout=AttentionLayout(padding, positions=steps + 7)).last
        stretched = ours(tokens, layout=AttentionLayout(padding, positions=2 * steps)).last
    real = ~padding
    torch.testing.assert_close(shifted[real], default[real], atol=1e-5, rtol=0)  # rotary is relative
    assert (stretched[real] - default[real]).abs().max() > 1e-2


def test_rotary_as_a_complex_product_equals_rotate_half(monkeypatch):
    """fair-esm's rotation, x cos + rotate_half(x) sin with rotate_half(x) = (-x2, x1), equals ours on
    the paired rows (pair_halves) with q's scale folded into the table, back in the original order."""
    from protjepa.encoders.esm2 import apply_rotary, pair_halves, rotary_tables

    heads, head_dim, length = 3, 8, 5
    x = torch.randn(2, length, 2, heads, head_dim)  # [B, L, q|k, H, Dh]
    positions = torch.arange(length)[None]
    angles = positions.float()[..., None] / 10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    cos, sin = (torch.cat((f(angles),) * 2, -1)[:, :, None, None, :] for f in (torch.cos, torch.sin))
    first, second = x.chunk(2, -1)
    expected = x * cos + torch.cat((-second, first), -1) * sin
    expected[:, :, 0] *= 0.25  # the query scale
    order = pair_halves(heads * head_dim, heads).view(heads, head_dim) % head_dim  # within each head
    paired = x[..., order[0]]
    table = rotary_tables(positions, heads, head_dim, query_scale=0.25)
    torch.testing.assert_close(apply_rotary(paired, table), expected[..., order[0]], atol=1e-6, rtol=0)
    # Under torch.compile the same product runs in real arithmetic (inductor compiles no complex tensors).
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(apply_rotary(paired, table), expected[..., order[0]], atol=1e-6, rtol=0)
    assert order[0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_backend_resolved_once_per_device_and_dtype(monkeypatch, masked_batch):
    import protjepa.encoders.esm2 as esm2
    from protjepa import attention

    resolved, used = [], []
    monkeypatch.setattr(attention, "RESOLVED", {})
    monkeypatch.setattr(attention, "_decide", lambda *args: resolved.append(args) or "math")
    real_attend = esm2.attend
    monkeypatch.setattr(esm2, "attend", lambda *args: used.append(args[-1]) or real_attend(*args))
    encoder = ESM2(2, 32, 4, attention="xformers")
    tokens, padding = masked_batch
    for _ in range(2):
        encoder(tokens, padding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoder(tokens, padding)
    with torch.no_grad():
        encoder(tokens, padding)
    assert resolved == [("xformers", torch.device("cpu"), torch.float32, 8, True),
                        ("xformers", torch.device("cpu"), torch.bfloat16, 8, True),
                        ("xformers", torch.device("cpu"), torch.float32, 8, False)]
    assert used == ["math"] * 8


def test_token_dropout_by_hand():
    encoder = ESM2(1, 8, 2)
    tokens = torch.tensor([[CLS, A, MASK, L_, EOS, PAD, PAD]])
    embedding = encoder.embed_tokens.weight.detach()
    depth0 = encoder(tokens, layers=[0]).layers[0][0]
    # 1 <mask> among 5 real tokens: scale (1 - 0.12) / (1 - 1/5) = 1.1; <mask> and padding rows are zero.
    expected = torch.stack([1.1 * embedding[t] if t not in (MASK, PAD) else torch.zeros(8) for t in tokens[0]])
    torch.testing.assert_close(depth0, expected)

    encoder.token_dropout = False
    plain = encoder(tokens, layers=[0]).layers[0][0]
    torch.testing.assert_close(plain[:5], embedding[tokens[0, :5]])


def test_token_dropout_counts_each_packed_sequence():
    encoder = ESM2(1, 8, 2)
    # Row: sequence 1 = <cls> A <mask> <eos> (1 of 4 masked), sequence 2 = <cls> L L L <eos> (none), padding.
    tokens = torch.tensor([[CLS, A, MASK, EOS, CLS, L_, L_, L_, EOS, PAD]])
    segment_ids = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0]])
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 0]])
    layout = AttentionLayout(segment_ids.eq(0), segment_ids, positions, (4, 5, 1))
    depth0 = encoder(tokens, layout=layout, layers=[0]).layers[0][0]
    embedding = encoder.embed_tokens.weight.detach()
    scale = torch.tensor([0.88 / 0.75] * 4 + [0.88] * 5)
    expected = embedding[tokens[0, :9]] * scale[:, None]
    expected[2] = 0
    torch.testing.assert_close(depth0[:9], expected)
    assert depth0[9].abs().sum() == 0


def test_backward_is_finite(masked_batch):
    encoder = ESM2(2, 32, 4, attention="sdpa")
    tokens, padding = masked_batch
    out = encoder(tokens, padding, layers=[1])
    assert torch.isfinite(out.last).all()  # padding rows included
    (encoder.lm_head(out.last).logsumexp(-1).mean() + out.layers[1].pow(2).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_initialisation():
    torch.manual_seed(0)
    encoder = ESM2(2, 256, 4)
    fc1 = encoder.layers[0].fc1
    assert abs(fc1.weight.std().item() - 0.02) < 1e-3 and fc1.bias.abs().sum() == 0
    assert abs(encoder.embed_tokens.weight[2:].std().item() - 0.02) < 2e-3
    assert encoder.embed_tokens.weight[PAD].abs().sum() == 0
    assert torch.equal(encoder.layers[1].final_layer_norm.weight, torch.ones(256))
    assert encoder.lm_head.weight is encoder.embed_tokens.weight and encoder.lm_head.bias.abs().sum() == 0
    assert encoder.has_lm_head


@pytest.mark.parametrize("preset,sizes", [("esm2_8m", (6, 320, 20)), ("esm2_35m", (12, 480, 20)),
                                          ("esm2_150m", (30, 640, 20)), ("esm2_650m", (33, 1280, 20))])
def test_presets(preset, sizes):
    config = ESM2Config(preset=preset)
    assert (config.num_layers, config.embed_dim, config.attention_heads) == sizes


def test_esm2_8m_has_the_hugging_face_parameter_count():
    from transformers import EsmConfig, EsmForMaskedLM

    ours = build_esm2(ESM2Config(preset="esm2_8m"))
    hf = EsmForMaskedLM(EsmConfig(vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=320,
                                  num_hidden_layers=6, num_attention_heads=20, intermediate_size=1280,
                                  position_embedding_type="rotary", token_dropout=True, layer_norm_eps=1e-5))
    hf_count = sum(p.numel() for name, p in hf.named_parameters() if "contact_head" not in name)
    d = 320
    per_block = 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * 2 * d  # attention, fc1, fc2, 2 LNs
    by_hand = 33 * d + 6 * per_block + 2 * d + (d * d + d + 2 * d + 33)  # embeddings, blocks, final LN, LM head
    assert sum(p.numel() for p in ours.parameters()) == hf_count == by_hand == 7_512_353


def test_config_overrides_and_errors():
    config = ESM2Config(preset="esm2_35m", num_layers=4, attention="math", token_dropout=False)
    assert (config.num_layers, config.embed_dim, config.attention_heads) == (4, 480, 20)
    custom = ESM2Config(num_layers=2, embed_dim=64, attention_heads=4)
    encoder = ENCODERS.get("esm2").builder(custom)
    assert isinstance(encoder, ESM2) and encoder.num_layers == 2 and encoder.attention == "auto"
    with pytest.raises(ValidationError, match="give a preset"):
        ESM2Config(num_layers=2, embed_dim=64)
    with pytest.raises(ValidationError, match="heads of even size"):
        ESM2Config(num_layers=2, embed_dim=60, attention_heads=4)  # head size 15
    with pytest.raises(ValidationError, match="extra"):
        ESM2Config(preset="esm2_8m", layers=3)
    with pytest.raises(ValidationError):
        ESM2Config(preset="esm2_9m")
