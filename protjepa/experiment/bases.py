"""A pretrained base for continued pretraining: a finished MLM-only run's encoder, written as a folder
that travels (through a channel that takes files of at most a size: a device machine returns at most
8 files of 16 MiB) and that others continue from; and that folder's record, read back.

``make_base(run_dir, folder)`` writes, into a temporary folder renamed at the end:

* ``encoder.yaml`` + ``model.safetensors.parts.json`` + ``model.safetensors.part-K-of-N``: the encoder
  with its LM head in protjepa's native format, its floating-point weights in bf16 (half the bytes;
  loading casts them back to the encoder's fp32), in parts of at most ``part_bytes`` beside a manifest of
  their sizes and SHA-256 digests (:mod:`protjepa.parts`). ``protjepa.load_encoder(folder)``, a recipe's
  ``encoder.checkpoint`` and an experiment's ``base: {checkpoint: ...}`` read it, every part checked,
  nothing in it run;
* ``recipe.yaml``, ``metrics.jsonl``: the run's resolved recipe and its metrics, copied;
* ``base.json``: the held-out MLM loss of the weights as written (bf16), beside the unigram entropy of the
  same residues; the training (steps, tokens, FLOPs, seconds, budget); the machine (its GPU); the run's
  provenance (packages, git commit, the corpus files with their digests); the weights' parameter count,
  dtype and digest.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from protjepa.build import build_model
from protjepa.checkpoint_file import file_digest
from protjepa.encoders.base import Encoder
from protjepa.encoders.weights import WEIGHTS, WeightsError, write_text
from protjepa.errors import UserError
from protjepa.evaluation.readout import held_out_scores
from protjepa.export import RUN_RECIPE, load_encoder, save_encoder
from protjepa.experiment.spec import encoder_section
from protjepa.parts import MiB, read_manifest
from protjepa.provenance import FILE as PROVENANCE
from protjepa.recipe import Recipe, Trust, load_recipe
from protjepa.training.summary import read_records, summarize_run
from protjepa.yamlio import read_json

RECORD = "base.json"
METRICS = "metrics.jsonl"
PART_BYTES = 15 * MiB  # under the device machine's 16 MiB a file returned
HELD_OUT_SEQUENCES = 2048  # about 130,000 masked residues of the validation file
FORMAT = 1


class BaseError(UserError, ValueError):
    """A run that cannot be made a base, or a base folder that cannot be read; the message names the file."""


def make_base(run_dir: str | os.PathLike, folder: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16,
              part_bytes: int = PART_BYTES, sequences: int = HELD_OUT_SEQUENCES, data_root: str | None = None,
              trust_code: Trust = False) -> dict:
    """Write ``folder`` from the finished MLM-only run ``run_dir`` (see the module docstring); returns
    the record written to ``base.json``. ``sequences``: held-out records the MLM loss is measured on. The
    run folder is data: code its recipe names is imported only as ``trust_code`` allows."""
    run_dir, folder = Path(run_dir), Path(folder)
    recipe_file = run_dir / RUN_RECIPE
    if not recipe_file.is_file() or not (run_dir / METRICS).is_file():
        raise BaseError(f"{run_dir}: not a run folder of protjepa train (no {RUN_RECIPE} and {METRICS})")
    if folder.exists():
        raise BaseError(f"{folder}: already exists; give a new folder (a base is written whole, never over another)")
    if not (run_dir / "export").is_dir():
        raise BaseError(f"{run_dir}: the run has not finished (no export/): train it to the end of its budget first")
    recipe = load_recipe(recipe_file, trust_code=trust_code)
    others = [o.name for o in recipe.objectives if o.name != "mlm"]
    if others:
        raise BaseError(f"{recipe_file}: a base is MLM-only pretraining; this run also trains {', '.join(others)}")
    encoder = load_encoder(run_dir, trust_code)  # the run's final export
    records = read_records(run_dir / METRICS)
    if not records:
        raise BaseError(f"{run_dir / METRICS}: empty: the run has not logged a step")

    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        save_encoder(encoder, partial, encoder_section(recipe), dtype=dtype, part_bytes=part_bytes)
        shutil.copyfile(recipe_file, partial / RUN_RECIPE)
        shutil.copyfile(run_dir / METRICS, partial / METRICS)
        record = _record(run_dir, partial, recipe, records, encoder, dtype, sequences, data_root)
        write_text(partial / RECORD, json.dumps(record, indent=2) + "\n")
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return record


def _record(run_dir: Path, written: Path, recipe: Recipe, records: list[dict], encoder: Encoder, dtype: torch.dtype,
            sequences: int, data_root: str | None) -> dict:
    # The weights as written, read back through the loader the experiments use: the loss is theirs.
    reloaded = recipe.model_copy(update={"encoder": recipe.encoder.model_copy(update={"checkpoint": str(written)})})
    model = build_model(reloaded).eval()
    if torch.cuda.is_available():
        model = model.cuda()
    scores = held_out_scores(model, recipe, sequences, data_root)
    mlm = next(iter(scores["mlm"].values()))
    summary = summarize_run(records)
    run_provenance = read_json(run_dir / PROVENANCE, BaseError, "run provenance") \
        if (run_dir / PROVENANCE).is_file() else {}
    manifest = read_manifest(written / WEIGHTS)
    return {
        "format": FORMAT,
        "held_out": {"mlm_loss": mlm["loss"], "unigram_entropy": mlm["unigram_entropy"],
                     "under_unigram": mlm["unigram_entropy"] - mlm["loss"], "sequences": scores["sequences"],
                     "rows_from": scores["rows_from"], "seed": scores["seed"],
                     "weights": f"as written ({str(dtype).removeprefix('torch.')}), loaded back from the parts"},
        "training": {"budget": str(recipe.budget), **{k: summary.get(k) for k in
                                                       ("steps", "tokens", "flops", "train_seconds", "tokens_per_s")}},
        "machine": run_provenance.get("machine", {}),
        "weights": {"parameters": sum(t.numel() for t in encoder.parameters()),
                    "dtype": str(dtype).removeprefix("torch."), "bytes": manifest["bytes"],
                    "sha256": manifest["sha256"], "parts": len(manifest["parts"])},
        "run": {"folder": str(run_dir.resolve()), "provenance": run_provenance},
    }


def read_base(folder: str | os.PathLike) -> dict | None:
    """A base folder's record (``base.json``), or None for a checkpoint that has none (another format)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    record = read_json(path, BaseError, "base record")
    held = record.get("held_out") if isinstance(record, dict) else None
    if not isinstance(held, dict) or not all(isinstance(held.get(k), (int, float))
                                              for k in ("mlm_loss", "unigram_entropy", "under_unigram")):
        raise BaseError(f"{path}: not a base record (expected a JSON object whose held_out gives mlm_loss, "
                        "unigram_entropy and under_unigram)")
    return record


def base_digest(checkpoint: Path) -> str:
    """What identifies a pretrained base's bytes: the sha256 of the file, or of a folder's files and their names."""
    if not checkpoint.exists():
        raise WeightsError(f"{checkpoint}: no such checkpoint file or directory")
    files = [checkpoint] if checkpoint.is_file() else sorted(p for p in checkpoint.rglob("*") if p.is_file())
    listing = "".join(f"{p.relative_to(checkpoint)} {file_digest(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()
