"""Encoder weights on local disk: fair-esm ``.pt`` files, Hugging Face ESM directories,
and the native format for any encoder (built and written whole by :mod:`protjepa.export`).

* fair-esm: ``{"model": state dict with "encoder.sentence_encoder." / "encoder." prefixes,
  "cfg": {"model": <encoder_layers, encoder_embed_dim, encoder_attention_heads,
  token_dropout>}}`` (older files: the same fields under ``"args"``). Our ESM-2 modules
  carry fair-esm's names, so only the prefixes go.
* Hugging Face: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``), as
  ``EsmForMaskedLM.save_pretrained`` writes them; names mapped by ``_HF_TO_OURS_MODULES``.
* native: ``encoder.yaml`` (the recipe's ``encoder:`` section) + ``model.safetensors``; the whole
  spec is read by :func:`protjepa.recipe.read_encoder_spec` (the recipe layer owns it), here only an
  ESM-2's sizes.

Nothing is downloaded. Files are written under a temporary name and renamed, so a
checkpoint on disk is never half-written.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save, save_file
from torch import Tensor

from protjepa.checkpoint_file import load_weights_only
from protjepa.encoders.base import Encoder
from protjepa.encoders.esm2 import ESM2, LAYER_NORM_EPS, ROTARY_BASE, ESM2Config
from protjepa.errors import UserError
from protjepa.files import check_regular
from protjepa.parts import PartsError, in_parts, read_parts, write_parts
from protjepa.yamlio import YamlLines, located_first_error, read_json, read_yaml

NATIVE_SPEC = "encoder.yaml"
WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"


class WeightsError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit the encoder; one line naming the file."""


# --------------------------------------------------------------------------- public API


def esm2_from_checkpoint(path: str | os.PathLike) -> ESM2:
    """An ESM-2 built to the sizes of a Hugging Face ESM directory or a fair-esm .pt, and loaded from it."""
    sizes, state, source = _read(locate(path))
    encoder = ESM2(sizes["num_layers"], sizes["embed_dim"], sizes["attention_heads"],
                   token_dropout=sizes["token_dropout"])
    _load_state(encoder, state, source)
    return encoder


def load_weights(encoder: Encoder, path: str | os.PathLike) -> Encoder:
    """Load a checkpoint's weights into ``encoder`` (the recipe's ``encoder.checkpoint``)."""
    sizes, state, source = _read(locate(path))
    check_state(encoder, state, source)
    if isinstance(encoder, ESM2) and sizes is not None and sizes["attention_heads"] != encoder.attention_heads:
        # Every shape fits, yet the heads split the width differently.
        raise WeightsError(
            f"{source}: the checkpoint has {sizes['attention_heads']} attention heads, "
            f"the encoder {encoder.attention_heads}"
        )
    encoder.load_state_dict(state, strict=False)
    return encoder


def export_hf(encoder: ESM2, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that ``transformers.EsmForMaskedLM`` loads."""
    if not isinstance(encoder, ESM2):
        raise WeightsError(
            f"{directory}: only ESM-2 encoders export to Hugging Face ESM, not {type(encoder).__name__}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        _hf_name(name): t for name, t in encoder.state_dict().items() if name not in tied_aliases(encoder)
    }
    write_safetensors(directory / WEIGHTS, tensors)
    write_text(directory / HF_CONFIG, json.dumps(_hf_config(encoder), indent=2))
    for name, text in _hf_tokenizer_files(encoder).items():
        write_text(directory / name, text)
    return directory


def _hf_tokenizer_files(encoder: ESM2) -> dict[str, str]:
    """``EsmTokenizer``'s files: AutoTokenizer.from_pretrained(folder) then gives our token ids."""
    alphabet = encoder.alphabet
    special = {"cls_token": "<cls>", "pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>",
               "mask_token": "<mask>"}
    config = {"tokenizer_class": "EsmTokenizer", "model_max_length": 1024 + 2, "do_lower_case": False, **special}
    return {
        "vocab.txt": "".join(f"{token}\n" for token in alphabet.tokens),
        "special_tokens_map.json": json.dumps(special, indent=2),
        "tokenizer_config.json": json.dumps(config, indent=2),
    }


# --------------------------------------------------------------------------- reading


# fair-esm's model names (esm2_t6_8M_UR50D, esm1b_t33_650M_UR50S): the files it downloads.
FAIR_ESM_NAME = re.compile(r"esm[\w]*_t\d+_\d+[MB]_\w+")


def locate(path: str | os.PathLike) -> Path:
    """``path``, or for a fair-esm model name the ``.pt`` that fair-esm downloaded into the torch hub
    cache (``$TORCH_HOME/hub/checkpoints``). Nothing is downloaded."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        check_regular(path, WeightsError, "checkpoint")  # a named pipe would block torch.load, a device never end
        return path
    if FAIR_ESM_NAME.fullmatch(str(path)):
        cached = Path(torch.hub.get_dir()) / "checkpoints" / f"{path}.pt"
        if cached.is_file():
            return cached
        raise WeightsError(f"{path}: no such file here, nor in fair-esm's download cache ({cached}); "
                           "protjepa downloads nothing: fetch it with fair-esm, or give the .pt's path")
    raise WeightsError(f"{path}: no such checkpoint file or directory")


def is_native(path: Path) -> bool:
    return path.is_dir() and (path / NATIVE_SPEC).is_file()


def _read(path: Path) -> tuple[dict[str, Any] | None, dict[str, Tensor], str]:
    """(ESM-2 sizes or None, state dict in our names, the file to name in errors)."""
    if is_native(path):
        return _native_esm2_sizes(path / NATIVE_SPEC), _read_safetensors(path / WEIGHTS), str(path / WEIGHTS)
    if path.is_dir():
        if not (path / HF_CONFIG).is_file():
            raise WeightsError(
                f"{path}: not a checkpoint directory "
                f"(expected {NATIVE_SPEC} + {WEIGHTS}, or a Hugging Face {HF_CONFIG})"
            )
        return _read_hf(path)
    return _read_fair_esm(path)


def _read_safetensors(file: Path) -> dict[str, Tensor]:
    """The tensors of ``file``, or of its parts joined (:mod:`protjepa.parts`: every digest checked)."""
    if not file.is_file() and in_parts(file):
        try:
            return load(read_parts(file))
        except PartsError as exc:
            raise WeightsError(str(exc)) from None
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{file} (joined from its parts): cannot read safetensors: {_first_line(exc)}") \
                from None
    if not file.is_file():
        raise WeightsError(f"{file}: no such weights file")
    try:
        return load_file(file)
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{file}: cannot read safetensors: {_first_line(exc)}") from None


_FAIR_ESM_PREFIX = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
_FAIR_ESM_IGNORED = re.compile(r"(^contact_head\.|rot_emb\.inv_freq$)")  # contact regression; rotary buffers


def _read_fair_esm(file: Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    # fair-esm keeps its model config as an argparse.Namespace: allow exactly that.
    data = load_weights_only(file, "plain fair-esm checkpoint", WeightsError, [argparse.Namespace],
                             map_location="cpu")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise WeightsError(f"{file}: not a fair-esm checkpoint (expected a dict with a 'model' state dict)")
    cfg = data.get("cfg")
    model_cfg, where = (cfg.get("model"), "cfg.model") if isinstance(cfg, dict) else (data.get("args"), "args")

    def field(name: str, default: Any = None) -> Any:
        value = model_cfg.get(name) if isinstance(model_cfg, dict) else getattr(model_cfg, name, None)
        if value is None and default is None:
            raise WeightsError(f"{file}: {where} has no {name}: not a fair-esm ESM-2 checkpoint")
        return default if value is None else value

    sizes = dict(
        num_layers=int(field("encoder_layers")),
        embed_dim=int(field("encoder_embed_dim")),
        attention_heads=int(field("encoder_attention_heads")),
        token_dropout=bool(field("token_dropout", True)),
    )
    state = {_FAIR_ESM_PREFIX.sub("", name): t for name, t in data["model"].items()}
    return sizes, {name: t for name, t in state.items() if not _FAIR_ESM_IGNORED.search(name)}, str(file)


# Hugging Face ESM module -> ours; "#" stands for the layer index. Parameter names
# (weight, bias) are the same on both sides, except the tied decoder below.
_HF_TO_OURS_MODULES = {
    "embeddings.word_embeddings": "embed_tokens",
    "encoder.layer.#.attention.self.query": "layers.#.self_attn.q_proj",
    "encoder.layer.#.attention.self.key": "layers.#.self_attn.k_proj",
    "encoder.layer.#.attention.self.value": "layers.#.self_attn.v_proj",
    "encoder.layer.#.attention.output.dense": "layers.#.self_attn.out_proj",
    "encoder.layer.#.attention.LayerNorm": "layers.#.self_attn_layer_norm",
    "encoder.layer.#.intermediate.dense": "layers.#.fc1",
    "encoder.layer.#.output.dense": "layers.#.fc2",
    "encoder.layer.#.LayerNorm": "layers.#.final_layer_norm",
    "encoder.emb_layer_norm_after": "emb_layer_norm_after",
    "lm_head.dense": "lm_head.dense",
    "lm_head.layer_norm": "lm_head.layer_norm",
    "lm_head.decoder": "lm_head",  # lm_head.decoder.weight: the tied embeddings, our lm_head.weight
    "lm_head": "lm_head",  # lm_head.bias
}
_OURS_TO_HF_MODULES = {ours: hf for hf, ours in _HF_TO_OURS_MODULES.items()}  # "lm_head" -> "lm_head" (last wins)
# transformers 5 writes (and reads) LayerNorm parameters under their TF names.
_HF_LEGACY_LAYER_NORM = re.compile(r"(?<=LayerNorm\.)(gamma|beta)$")
_HF_LEGACY_PARAMS = {"gamma": "weight", "beta": "bias"}
_HF_IGNORED = re.compile(r"(^contact_head\.|^pooler\.|rotary_embeddings\.inv_freq$|^embeddings\.position_ids$)")


def _rename(name: str, table: dict[str, str]) -> str | None:
    """``encoder.layer.3.output.dense.bias`` -> ``layers.3.fc2.bias`` (or back); None if unknown."""
    module, _, param = name.rpartition(".")
    index = re.search(r"(?<=\.)\d+(?=\.)", module)
    pattern = module if index is None else module[: index.start()] + "#" + module[index.end():]
    target = table.get(pattern)
    if target is None:
        return None
    return f"{target if index is None else target.replace('#', index.group())}.{param}"


def _hf_name(name: str) -> str:
    hf = _rename(name, _OURS_TO_HF_MODULES)
    if hf is None:
        raise WeightsError(f"{name}: no Hugging Face ESM name for this parameter")
    return hf if hf.startswith("lm_head") else f"esm.{hf}"


# What an ESM-2 config.json must say for our architecture to reproduce it exactly.
_HF_REQUIRED = {
    "position_embedding_type": "rotary",
    "vocab_size": 33,
    "pad_token_id": 1,
    "mask_token_id": 32,
    "layer_norm_eps": LAYER_NORM_EPS,
    "rope_theta": ROTARY_BASE,
    "emb_layer_norm_before": False,
}
_HF_DEFAULTS = {"rope_theta": ROTARY_BASE, "emb_layer_norm_before": False}  # absent or null in older files


def _read_hf(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    config_file = directory / HF_CONFIG
    config = read_json(config_file, WeightsError, "Hugging Face config")
    if not isinstance(config, dict):
        raise WeightsError(f"{config_file}: not a Hugging Face config (expected a JSON object)")
    for key, expected in _HF_REQUIRED.items():
        value = config.get(key)
        value = _HF_DEFAULTS.get(key) if value is None else value
        if value != expected:
            raise WeightsError(f"{config_file}: {key} is {value!r}; ESM-2 needs {expected!r}")
    try:
        sizes = dict(
            num_layers=int(config["num_hidden_layers"]),
            embed_dim=int(config["hidden_size"]),
            attention_heads=int(config["num_attention_heads"]),
            token_dropout=bool(config.get("token_dropout", False)),
        )
    except KeyError as exc:
        raise WeightsError(f"{config_file}: missing {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{config_file}: the sizes are not whole numbers ({exc})") from None
    if config.get("intermediate_size") != 4 * sizes["embed_dim"]:
        raise WeightsError(
            f"{config_file}: intermediate_size is {config.get('intermediate_size')!r}; ESM-2 needs 4 x hidden_size"
        )
    weights_file, raw = _read_hf_weights(directory)
    state = {}
    for hf_name, t in raw.items():
        name = _HF_LEGACY_LAYER_NORM.sub(lambda m: _HF_LEGACY_PARAMS[m.group(1)], hf_name.removeprefix("esm."))
        if not _HF_IGNORED.search(name):
            state[_rename(name, _HF_TO_OURS_MODULES) or hf_name] = t  # unknown names stay, to be reported
    return sizes, state, str(weights_file)


def _read_hf_weights(directory: Path) -> tuple[Path, dict[str, Tensor]]:
    single = directory / WEIGHTS
    if single.is_file():
        return single, _read_safetensors(single)
    index = directory / f"{WEIGHTS}.index.json"
    if index.is_file():  # sharded: the index maps every tensor to its shard
        weight_map = read_json(index, WeightsError, "safetensors index")
        if not isinstance(weight_map, dict) or not isinstance(weight_map.get("weight_map"), dict):
            raise WeightsError(f"{index}: not a safetensors index (expected a JSON object with a weight_map)")
        shards = sorted(set(map(str, weight_map["weight_map"].values())))
        return index, {k: v for shard in shards for k, v in _read_safetensors(directory / shard).items()}
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        state = load_weights_only(legacy, "Hugging Face weights file", WeightsError, map_location="cpu")
        if not isinstance(state, dict):
            raise WeightsError(f"{legacy}: not a Hugging Face weights file (expected a state dict)")
        return legacy, state
    raise WeightsError(f"{directory}: no {WEIGHTS} or pytorch_model.bin beside {HF_CONFIG}")


def _hf_config(encoder: ESM2) -> dict[str, Any]:
    return {
        "architectures": ["EsmForMaskedLM"],
        "model_type": "esm",
        "vocab_size": len(encoder.alphabet),
        "hidden_size": encoder.embed_dim,
        "num_hidden_layers": encoder.num_layers,
        "num_attention_heads": encoder.attention_heads,
        "intermediate_size": 4 * encoder.embed_dim,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": 1026,
        "initializer_range": 0.02,
        "layer_norm_eps": LAYER_NORM_EPS,
        "position_embedding_type": "rotary",
        "rope_theta": ROTARY_BASE,
        "emb_layer_norm_before": False,
        "token_dropout": encoder.token_dropout,
        "pad_token_id": encoder.alphabet.pad_idx,
        "mask_token_id": encoder.alphabet.mask_idx,
        "eos_token_id": encoder.alphabet.eos_idx,
        "tie_word_embeddings": True,
        "is_folding_model": False,
    }


# --------------------------------------------------------------------------- loading


def tied_aliases(module: torch.nn.Module) -> set[str]:
    """State-dict names that repeat a tensor already named (the LM head's tied embeddings)."""
    unique = {name for name, _ in module.named_parameters()} | {name for name, _ in module.named_buffers()}
    return set(module.state_dict()) - unique


def _load_state(encoder: Encoder, state: dict[str, Tensor], source: str) -> None:
    check_state(encoder, state, source)
    encoder.load_state_dict(state, strict=False)  # strict but for the tied aliases


def check_state(encoder: Encoder, state: dict[str, Tensor], source: str) -> None:
    """A one-line error at the first missing, misshapen or unexpected key."""
    expected = encoder.state_dict()
    optional = tied_aliases(encoder)
    for name, ref in expected.items():
        if name not in state:
            if name in optional:
                continue
            raise WeightsError(f"{source}: missing {name} (shape {tuple(ref.shape)}) for {type(encoder).__name__}")
        if state[name].shape != ref.shape:
            raise WeightsError(
                f"{source}: {name} has shape {tuple(state[name].shape)} in the checkpoint "
                f"but {tuple(ref.shape)} in the encoder"
            )
    for name in state:
        if name not in expected:
            raise WeightsError(f"{source}: unexpected key {name}: {type(encoder).__name__} has no such parameter")


def _native_esm2_sizes(spec_file: Path) -> dict[str, Any] | None:
    """The sizes an export's ``encoder.yaml`` gives an ESM-2 (its attention heads are in no weight's
    shape), or None for another encoder."""
    raw, text = read_yaml(spec_file, WeightsError, "encoder spec")
    if not isinstance(raw, dict) or raw.get("name") != "esm2":
        return None
    options = {k: v for k, v in raw.items() if k not in ("name", "checkpoint")}
    try:
        return ESM2Config.model_validate(options).model_dump()
    except ValidationError as exc:
        raise WeightsError(located_first_error(exc, str(spec_file), YamlLines(text))) from None


# --------------------------------------------------------------------------- writing


def _write_atomic(file: Path, write: Callable[[str], None]) -> None:
    """``write(temporary path)`` beside ``file``, then rename it over ``file``; a write that fails (a full
    disk) is a one-line WeightsError naming ``file``, and leaves no temporary file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    except OSError as exc:
        raise WeightsError(f"{file}: cannot write: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, file)
    except (OSError, SafetensorError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WeightsError(f"{file}: cannot write: {getattr(exc, 'strerror', None) or _first_line(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(file: Path, text: str) -> None:
    _write_atomic(file, lambda tmp: Path(tmp).write_text(text))


def write_safetensors(file: Path, tensors: dict[str, Tensor], part_bytes: int | None = None) -> None:
    """``file``; with ``part_bytes``, as parts of at most that many bytes beside their manifest of digests."""
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    if part_bytes is not None:
        write_parts(save(tensors, metadata={"format": "pt"}), file, part_bytes)
        return
    _write_atomic(file, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
