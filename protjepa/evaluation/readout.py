"""What a run's latent term learned, read out on held-out masked positions of one checkpoint.

``jepa/cosine`` alone cannot say whether a latent term learns: LayerNorm'd targets share a
large common direction, so one constant vector already scores a high cosine. This loads a
run's training checkpoint (encoder, predictors, EMA teacher) and scores it on ``sequences``
held-out records, cropped and masked with a fixed seed (the same rows for every run on the
same data). For each latent objective (one that declares a ``latent_score``: the JEPA term, or a
plugin's, read through the objective interface, ``Objective.latent_rows`` and ``latent_metrics``):

- its scores over all rows (``latent_metrics``: for JEPA cosine, the mean target's cosine, lift, and
  r2 for the value losses, as :func:`protjepa.objectives.base.latent_scores` defines them), and its
  declared score beside the constant it is compared to;
- three ridge readouts of the target (as the loss compares it), fit on the rows of the first
  half of the sequences and scored (R², 0 for the scored rows' own mean) on the second half:
  ``student``, from the student state the predictions are made from (what the student carries);
  ``predictions``, from the predictions (what the predictor passes on); ``residue``,
  each amino acid's mean target (how much of the target is only "which residue is here").

Each MLM objective gets its held-out loss beside the unigram entropy of the same residues
(a constant prediction's loss).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from protjepa.batch import gather_positions
from protjepa.build import build_model, encoder_from_spec
from protjepa.checkpoint_file import (CheckpointError, digest_path, file_digest, latest_checkpoint, model_state,
                                      read_checkpoint)
from protjepa.data.corpus import held_out_batches
from protjepa.export import RUN_RECIPE, checkpoint_recipe
from protjepa.evaluation.probes import ridge_predict
from protjepa.model import ProtJEPA
from protjepa.objectives.base import LatentScore, Objective, latent_scores, latent_text
from protjepa.objectives.mlm import MLM, unigram_entropy
from protjepa.recipe import Recipe, Trust

READOUT = "readout.json"
SEQUENCES = 256
CHUNK = 32  # sequences per forward pass
SEED = 0  # crops and masks: the same rows for every run on the same data


@dataclass
class _Rows:
    """One latent objective's rows, a list of tensors per sequence chunk."""

    student: list[Tensor] = field(default_factory=list)
    predictions: list[Tensor] = field(default_factory=list)
    target: list[Tensor] = field(default_factory=list)
    residue: list[Tensor] = field(default_factory=list)


def check_run_folder(run_dir: Path) -> None:
    """``run_dir`` is a run folder of ``protjepa train``, or a one-line error."""
    if not (run_dir / RUN_RECIPE).is_file():
        raise CheckpointError(f"{run_dir}: not a run folder of protjepa train (no {RUN_RECIPE})")


def run_checkpoint(run_dir: Path, checkpoint: Path | None) -> Path:
    """``checkpoint``, which must be one of the run's own (its scores are written under the run), or the
    run's newest."""
    if checkpoint is None:
        newest = latest_checkpoint(run_dir / "checkpoints")
        if newest is None:
            raise CheckpointError(f"{run_dir / 'checkpoints'}: no training checkpoint to read out")
        return newest
    if checkpoint.resolve().parent != (run_dir / "checkpoints").resolve():
        raise CheckpointError(f"{checkpoint}: not a checkpoint of {run_dir} (it is not in {run_dir / 'checkpoints'}): "
                              "the readout is written under the run it reads; read out the run it belongs to")
    return checkpoint


def load_run_model(run_dir: Path, checkpoint: Path | None = None,
                   trust_code: Trust = False) -> tuple[ProtJEPA, Recipe, Path, list[str]]:
    """The whole model of a run (encoder, objectives' modules, EMA teacher) from its newest training
    checkpoint, or ``checkpoint`` (one of the run's), in eval mode; the recipe it was trained with (the
    checkpoint's own, :func:`~protjepa.export.checkpoint_recipe`), the checkpoint, and notes to show.
    Code the recipe names is imported only as ``trust_code`` allows."""
    check_run_folder(run_dir)
    path = run_checkpoint(run_dir, checkpoint)
    data = read_checkpoint(path, mmap=True)
    recipe, notes = checkpoint_recipe(path, data, run_dir, trust_code)
    # Untrained: the checkpoint holds every weight (a continued run's base weights are not needed).
    model = build_model(recipe, encoder_from_spec(recipe.encoder, recipe.encoder_config))
    model.load_state_dict(model_state(path, model, prefix="model.", data=data))
    return model.eval(), recipe, path, notes


def ridge_r2(x_fit: Tensor, y_fit: Tensor, x_score: Tensor, y_score: Tensor) -> float:
    """Held-out R² of a ridge map (standardised inputs, alpha 1, as the probes fit) from x to y."""
    predicted = ridge_predict(x_fit.double().numpy(), y_fit.double().numpy(), x_score.double().numpy())
    return float(latent_scores(torch.from_numpy(predicted), y_score.double())["r2"])


def residue_r2(residue_fit: Tensor, y_fit: Tensor, residue_score: Tensor, y_score: Tensor, vocabulary: int) -> float:
    """Held-out R² of each amino acid's mean target (from the fit rows; the overall mean for one unseen there)."""
    sums = y_fit.new_zeros(vocabulary, y_fit.shape[1]).index_add_(0, residue_fit, y_fit)
    counts = y_fit.new_zeros(vocabulary).index_add_(0, residue_fit, torch.ones_like(residue_fit, dtype=y_fit.dtype))
    means = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], y_fit.mean(0))
    return float(latent_scores(means[residue_score].double(), y_score.double())["r2"])


def read_out(run_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None, sequences: int = SEQUENCES,
             data_root: str | None = None, trust_code: Trust = False) -> dict:
    """The readout of a run's checkpoint (see the module docstring), as JSON-ready data; ``sequences`` >= 2
    (they are read in two chunks or more, the first half fitting the readouts, the rest scoring them).
    Read with the recipe the checkpoint was trained with; ``notes`` says when ``recipe.yaml`` differs."""
    run_dir = Path(run_dir)
    model, recipe, path, notes = load_run_model(run_dir, Path(checkpoint) if checkpoint else None, trust_code)
    scores = held_out_scores(model, recipe, sequences, data_root)
    return {"run": str(run_dir), "checkpoint": str(path), "checkpoint_sha256": checkpoint_digest(path), "notes": notes,
            **scores}


@torch.no_grad()
def held_out_scores(model: ProtJEPA, recipe: Recipe, sequences: int = SEQUENCES, data_root: str | None = None) -> dict:
    """``model`` (in eval mode) on ``sequences`` held-out records of ``recipe``'s data, cropped and masked with
    the fixed seed: each MLM objective's loss beside the unigram entropy, each latent objective's readout."""
    batches, where = held_out_batches(recipe.data, recipe.masking, sequences, chunk=min(CHUNK, -(-sequences // 2)), seed=SEED,
                                      root=data_root)
    latent = {id: obj for id, obj in zip(model.ids, model.objectives) if obj.latent_score is not None}
    mlm = [id for id, obj in zip(model.ids, model.objectives) if isinstance(obj, MLM)]
    rows = {id: _Rows() for id in latent}
    mlm_sums, labels = dict.fromkeys(mlm, 0.0), []
    device = model.encoder.device
    for batch in batches:
        batch = batch.to(device)
        ctx = model.context(batch)
        out = model.losses(ctx)
        masked = batch.num_masked
        for id in mlm:
            mlm_sums[id] += float(out.metrics[f"{id}/loss"]) * masked
        labels.append(gather_positions(batch.tokens, batch.masked_index).cpu())
        for id, obj in latent.items():
            found, mine = obj.latent_rows(ctx), rows[id]
            mine.student.append(found.student.float().cpu())
            mine.predictions.append(found.predictions.float().cpu())
            mine.target.append(found.targets.float().cpu())
            mine.residue.append(gather_positions(batch.tokens, found.index).cpu())
    all_labels = torch.cat(labels)
    vocabulary = len(model.encoder.alphabet)
    entropy = float(unigram_entropy(all_labels, vocabulary))
    return {
        "sequences": sequences,
        "rows_from": where,
        "seed": SEED,
        "mlm": {id: {"loss": total / max(all_labels.numel(), 1), "unigram_entropy": entropy}
                for id, total in mlm_sums.items()},
        "latent": {id: _latent_readout(obj, rows[id], vocabulary) for id, obj in latent.items()},
    }


def _latent_readout(objective: Objective, rows: _Rows, vocabulary: int) -> dict:
    half = len(rows.target) // 2  # of two chunks or more, of whole sequences: fit and scored rows share none

    def split(parts: list[Tensor]) -> tuple[Tensor, Tensor]:
        return torch.cat(parts[:half]), torch.cat(parts[half:])

    target_fit, target_score = split(rows.target)
    student_fit, student_score = split(rows.student)
    predictions_fit, predictions_score = split(rows.predictions)
    residue_fit, residue_score = split(rows.residue)
    readout = {"student": ridge_r2(student_fit, target_fit, student_score, target_score),
               "predictions": ridge_r2(predictions_fit, target_fit, predictions_score, target_score),
               "residue": residue_r2(residue_fit, target_fit, residue_score, target_score, vocabulary)}
    scores = {k: float(v) for k, v in objective.latent_metrics(torch.cat(rows.predictions),
                                                               torch.cat(rows.target)).items()}
    score = objective.latent_score
    return {**scores, "metric": score.metric, "constant": score.constant, "score": scores.get(score.metric),
            "rows": int(sum(len(t) for t in rows.target)), "readout_r2": readout}


def checkpoint_digest(path: Path) -> str:
    """The checkpoint's sha256: from the digest written beside it, else computed."""
    sidecar = digest_path(path)
    if sidecar.is_file() and sidecar.read_text().strip():
        return sidecar.read_text().split(maxsplit=1)[0]
    return file_digest(path)


def write_readout(result: dict, run_dir: Path) -> Path:
    """``<run>/readout.json``, written whole (a temporary file renamed); a failed write is one line."""
    path = run_dir / READOUT
    partial = path.with_name(f".{READOUT}.partial")
    try:
        partial.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write the readout: {exc.strerror}") from None
    return path


def format_readout(result: dict) -> str:
    """The readout as a few lines of text."""
    lines = [f"{result['run']}: {Path(result['checkpoint']).name}, {result['sequences']} sequences "
             f"({result['rows_from']}), crops and masks seeded {result['seed']}"]
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    for id, mlm in result["mlm"].items():
        lines.append(f"  {id}: held-out loss {mlm['loss']:.4f} nats; a constant prediction (the unigram entropy) "
                     f"{mlm['unigram_entropy']:.4f}")
    for id, held in result["latent"].items():
        r2 = held["readout_r2"]
        score = LatentScore(held["metric"], held.get("constant", 0.0))  # readouts before the constant was written: 0
        lines.append(f"  {id}: {latent_text(score, held, 4)} ({held['rows']} rows; {score.metric} > {score.constant:g} "
                     "beats the constant)")
        lines.append(f"  {id}: ridge readout R² of the target, held-out half: from the student state "
                     f"{r2['student']:.4f}, from the predictions {r2['predictions']:.4f}, from the residue "
                     f"alone {r2['residue']:.4f}")
    if not result["latent"]:
        lines.append("  no latent objective in this run")
    return "\n".join(lines)
