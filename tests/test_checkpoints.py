"""Checkpoint I/O: fair-esm .pt, Hugging Face ESM directories both ways, the native format, errors."""
from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
import yaml

from esm_reference import padded_tokens, real_sequences, tiny_hf_esm
from protjepa.build import build_encoder
from protjepa.encoders.weights import WeightsError, export_hf, load_weights
from protjepa.export import load_encoder, save_encoder
from protjepa.encoders.esm2 import ESM2
from protjepa.errors import UserError
from protjepa.recipe import Recipe

# fair-esm's names for transformers' modules inside a block, from esm/modules.py (TransformerLayer)
# and esm/multihead_attention.py; written out here so the test does not reuse the loader's table.
FAIR_ESM_BLOCK = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}


def fair_esm_state(hf) -> dict[str, torch.Tensor]:
    """transformers' EsmForMaskedLM weights as fair-esm's ESM-2 .pt stores them under "model"."""
    out = {}
    for name, t in hf.state_dict().items():
        if name.startswith("esm.encoder.layer."):
            layer, module, param = re.fullmatch(r"esm\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", name).groups()
            out[f"encoder.sentence_encoder.layers.{layer}.{FAIR_ESM_BLOCK[module]}.{param}"] = t
        elif name == "esm.embeddings.word_embeddings.weight":
            out["encoder.sentence_encoder.embed_tokens.weight"] = t
            out["encoder.lm_head.weight"] = t  # fair-esm stores the tied weight under both names
        elif name.startswith("esm.encoder.emb_layer_norm_after."):
            out[name.replace("esm.encoder.", "encoder.sentence_encoder.")] = t
        elif name.startswith("lm_head.") and "decoder" not in name:
            out[f"encoder.{name}"] = t
    for layer in range(hf.config.num_hidden_layers):  # buffers fair-esm saves and we recompute
        out[f"encoder.sentence_encoder.layers.{layer}.self_attn.rot_emb.inv_freq"] = torch.ones(8)
    out["contact_head.regression.weight"] = torch.zeros(1, 12)  # regression weights merged in: ignored
    return out


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_esm()


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def batch(data_root):
    return padded_tokens(real_sequences(data_root, (30, 17, 9)), mask_every=4)


def logits_of(encoder: ESM2, batch) -> torch.Tensor:
    tokens, padding = batch
    with torch.no_grad():
        return encoder.lm_head(encoder.eval()(tokens, padding).last)[~padding]


def hf_logits(hf, batch) -> torch.Tensor:
    tokens, padding = batch
    with torch.no_grad():
        return hf.eval()(tokens, attention_mask=(~padding).long()).logits[~padding]


@pytest.mark.parametrize("config_key", ["cfg", "args"])
def test_fair_esm_pt(hf_model, batch, tmp_path, config_key):
    model_cfg = argparse.Namespace(encoder_layers=3, encoder_embed_dim=64, encoder_attention_heads=4,
                                   token_dropout=True, arch="ESM-2")
    data = {"model": fair_esm_state(hf_model), config_key: {"model": model_cfg} if config_key == "cfg" else model_cfg}
    torch.save(data, tmp_path / "esm2_tiny.pt")
    encoder = load_encoder(tmp_path / "esm2_tiny.pt")
    assert (encoder.num_layers, encoder.embed_dim, encoder.attention_heads) == (3, 64, 4)
    torch.testing.assert_close(logits_of(encoder, batch), hf_logits(hf_model, batch), atol=1e-4, rtol=0)


def test_a_fair_esm_name_resolves_from_the_torch_hub_cache(hf_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    missing = one_line_error(load_encoder, "esm2_t6_8M_UR50D")
    assert missing == (f"esm2_t6_8M_UR50D: no such file here, nor in fair-esm's download cache "
                       f"({tmp_path}/hub/checkpoints/esm2_t6_8M_UR50D.pt); protjepa downloads nothing: "
                       "fetch it with fair-esm, or give the .pt's path")
    model_cfg = argparse.Namespace(encoder_layers=3, encoder_embed_dim=64, encoder_attention_heads=4, token_dropout=True)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"model": fair_esm_state(hf_model), "cfg": {"model": model_cfg}},
               tmp_path / "hub" / "checkpoints" / "esm2_t6_8M_UR50D.pt")
    assert load_encoder("esm2_t6_8M_UR50D").embed_dim == 64


def test_export_hf_loads_in_transformers(batch, tmp_path):
    from transformers import AutoTokenizer, EsmForMaskedLM

    torch.manual_seed(1)
    ours = ESM2(2, 32, 4)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_hf(ours, tmp_path)
    hf = EsmForMaskedLM.from_pretrained(tmp_path)
    torch.testing.assert_close(hf_logits(hf, batch), logits_of(ours, batch), atol=1e-4, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temp files
        "config.json", "model.safetensors", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for sequence in ("MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIKLMNPQRSTVWYXBUZO"):
        assert tokenizer(sequence)["input_ids"] == ours.alphabet.encode(sequence).tolist()
    assert tokenizer.mask_token_id == ours.alphabet.mask_idx and tokenizer.pad_token_id == ours.alphabet.pad_idx


def test_hugging_face_to_ours_and_back(hf_model, hf_dir, batch, tmp_path):
    from transformers import EsmForMaskedLM

    ours = load_encoder(hf_dir)
    torch.testing.assert_close(logits_of(ours, batch), hf_logits(hf_model, batch), atol=1e-4, rtol=0)
    export_hf(ours, tmp_path)
    again = EsmForMaskedLM.from_pretrained(tmp_path).state_dict()
    original = hf_model.state_dict()
    compared = [name for name in original if "contact_head" not in name]
    assert set(compared) <= set(again)
    for name in compared:
        assert torch.equal(again[name], original[name]), name


def test_native_round_trip(batch, tmp_path):
    torch.manual_seed(2)
    spec = {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4, "checkpoint": "elsewhere.pt"}
    ours = ESM2(2, 32, 4)
    save_encoder(ours, tmp_path / "ckpt", spec)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["encoder.yaml", "model.safetensors"]
    assert yaml.safe_load((tmp_path / "ckpt" / "encoder.yaml").read_text()) == {
        "name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4}  # the weights are here now

    loaded = load_encoder(tmp_path / "ckpt")
    assert loaded.lm_head.weight is loaded.embed_tokens.weight  # still tied after loading
    torch.testing.assert_close(logits_of(loaded, batch), logits_of(ours, batch), atol=0, rtol=0)

    recipe = Recipe.model_validate({"name": "r", "objectives": [{"name": "mlm"}],
                                    "encoder": {**spec, "checkpoint": str(tmp_path / "ckpt")}})
    built = build_encoder(recipe)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), ours.state_dict().values()))


def one_line_error(call, *args) -> str:
    with pytest.raises(WeightsError) as info:
        call(*args)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_shape_names_the_file_the_key_and_both_shapes(tmp_path):
    save_encoder(ESM2(2, 32, 4), tmp_path, {"name": "esm2", "num_layers": 2, "embed_dim": 32, "attention_heads": 4})
    message = one_line_error(load_weights, ESM2(2, 48, 4), tmp_path)
    assert message == (f"{tmp_path / 'model.safetensors'}: embed_tokens.weight has shape (33, 32) in the checkpoint "
                       "but (33, 48) in the encoder")


def test_architecture_mismatches(hf_dir, tmp_path):
    weights = hf_dir / "model.safetensors"
    assert re.fullmatch(rf"{weights}: unexpected key layers\.2\.[\w.]+: ESM2 has no such parameter",
                        one_line_error(load_weights, ESM2(2, 64, 4), hf_dir))
    assert one_line_error(load_weights, ESM2(4, 64, 4), hf_dir).startswith(
        f"{weights}: missing layers.3.self_attn.q_proj.weight (shape (64, 64))")
    assert one_line_error(load_weights, ESM2(3, 64, 8), hf_dir) == (
        f"{weights}: the checkpoint has 4 attention heads, the encoder 8")

    config = json.loads((hf_dir / "config.json").read_text())
    bad = tmp_path / "absolute"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**config, "position_embedding_type": "absolute"}))
    assert one_line_error(load_encoder, bad) == (
        f"{bad / 'config.json'}: position_embedding_type is 'absolute'; ESM-2 needs 'rotary'")


class NotAWeight:  # a pickled object torch.load must refuse to build
    pass


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.pt"
    assert one_line_error(load_encoder, missing) == f"{missing}: no such checkpoint file or directory"
    assert "not a checkpoint directory" in one_line_error(load_encoder, tmp_path)
    torch.save({"model": {}, "extra": NotAWeight()}, tmp_path / "pickled.pt")
    message = one_line_error(load_encoder, tmp_path / "pickled.pt")
    assert message.startswith(f"{tmp_path / 'pickled.pt'}: not a plain fair-esm checkpoint") and "NotAWeight" in message
    torch.save({"model": {}, "cfg": {"model": {"encoder_layers": 2}}}, tmp_path / "partial.pt")
    assert one_line_error(load_encoder, tmp_path / "partial.pt") == (
        f"{tmp_path / 'partial.pt'}: cfg.model has no encoder_embed_dim: not a fair-esm ESM-2 checkpoint")
