"""A recipe -> a Composer ``Trainer``; and a whole run: train, checkpoint, export, report.

The run directory holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl``,
``curves.png``, ``checkpoints/ckpt-<fraction>.pt`` and ``export/`` (the trained encoder:
Hugging Face ESM format for ESM-2, the native format for other encoders).
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from composer import Trainer
from composer.algorithms import GradientClipping
from composer.core import Algorithm, Callback, DataSpec, Event, State
from composer.loggers import Logger
from composer.utils import dist, reproducibility
from torch.utils.data import DataLoader

from protjepa.batch import Batch
from protjepa.build import build_model
from protjepa.data.corpus import fixed_batch, make_corpus
from protjepa.encoders.checkpoints import export_hf, save_encoder
from protjepa.errors import UserError
from protjepa.model import ProtJEPA
from protjepa.precision import choose_bf16
from protjepa.recipe import OptimConfig, Recipe, TrainConfig, dump_recipe
from protjepa.training.budget import Budget, BudgetTracker, TrainingClock
from protjepa.training.checkpoints import BudgetCheckpointer, check_compatible
from protjepa.training.composer_model import ComposerProtJEPA
from protjepa.training.ema import EMATeacherUpdate
from protjepa.training.monitors import CollapseMonitor
from protjepa.training.report import format_summary, plot_curves, read_records, summarize
from protjepa.training.runlog import Console, MetricsLog, RunLog
from protjepa.training.schedule import LRSchedule, ScheduledLR

OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|not enough memory", re.IGNORECASE)


class TrainingError(UserError, RuntimeError):
    """A run that cannot start or go on: bad settings for this machine, out of memory."""


def resolve_device(train: TrainConfig) -> str:
    """Composer's device name: ``gpu`` or ``cpu``."""
    if train.device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if train.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device: cuda, but torch sees no CUDA device (use auto or cpu)")
    return "gpu" if train.device == "cuda" else "cpu"


@dataclass(frozen=True)
class Precision:
    composer: str  # Composer's precision: amp_bf16 autocasts on a GPU only
    cpu_bf16: bool  # our Composer model autocasts the forward to bf16 on the CPU itself
    note: str  # what the run summary says about it


def resolve_precision(train: TrainConfig, device: str) -> Precision:
    """bf16 autocast on a GPU (Composer's ``amp_bf16``) and on a CPU with native bf16 (ours);
    ``auto`` picks fp32 on other CPUs. Losses, optimizer state and the EMA teacher stay fp32."""
    bf16, why = choose_bf16(train.precision, "cuda" if device == "gpu" else "cpu", "train.precision")
    on_gpu = bf16 and device == "gpu"
    return Precision("amp_bf16" if on_gpu else "fp32", bf16 and not on_gpu, f"precision: {why}")


def build_optimizer(model: ProtJEPA, optim: OptimConfig, device: str) -> torch.optim.AdamW:
    """AdamW on the trainable parameters; biases and norm weights (1-D) get no weight decay."""
    trainable = [p for p in model.parameters() if p.requires_grad]  # the EMA teacher has none
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": optim.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=device == "gpu")


def train_data(recipe: Recipe, data_root: str | None) -> DataSpec:
    """The streaming corpus as Composer data: one ready ``Batch`` per step, counted in sequences
    (samples) and non-padding residues (Composer's ``tok`` unit, which token budgets use)."""
    corpus = make_corpus(recipe.data, recipe.masking, "train", seed=recipe.seed, root=data_root)
    workers = recipe.data.num_workers
    loader = DataLoader(corpus, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    return DataSpec(
        loader,
        # Batches are sized by tokens in the corpus; they are never split into microbatches.
        split_batch=lambda batch, microbatch_size: [batch],
        get_num_samples_in_batch=len,
        get_num_tokens_in_batch=lambda batch: batch.num_residues,
    )


def monitor_batch(recipe: Recipe, data_root: str | None) -> tuple[Batch, str]:
    """The fixed held-out batch the collapse monitors read, and where it came from."""
    data = recipe.data
    source = make_corpus(data, recipe.masking, "valid", seed=recipe.seed, root=data_root)
    if source is None:  # no held-out split in this recipe: the first training records
        source = make_corpus(data, recipe.masking, "train", seed=recipe.seed, root=data_root)
        where = f"the first {recipe.train.monitor_sequences} records of {data.train} (no held-out split)"
    else:
        where = f"{recipe.train.monitor_sequences} held-out records"
    batch = fixed_batch(source.path, recipe.train.monitor_sequences, crop=data.crop, masking=recipe.masking,
                        seed=recipe.seed, split=source.split, holdout_fraction=data.holdout_fraction,
                        unknown_letters=data.unknown_letters)
    return batch, where


class AllowUnusedParameters(Algorithm):
    """Tells Composer's DDP wrapper that some parameters may get no gradient (the LM head
    of a JEPA-only recipe), which DDP otherwise reports as an error on the second step."""

    @property
    def find_unused_parameters(self) -> bool:
        return True

    def match(self, event: Event, state: State) -> bool:
        return False

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        pass


@dataclass
class Run:
    """A built, not yet fitted, run."""

    recipe: Recipe
    run_dir: Path
    trainer: Trainer
    model: ProtJEPA
    tracker: BudgetTracker
    checkpointer: BudgetCheckpointer
    log: RunLog
    notes: list[str]  # what the summary should say about how the run was set up
    finished: bool  # resumed from a checkpoint at the end of the budget


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    checkpoints: list[Path]
    export_dir: Path | None
    text: str  # the printed summary


def build_run(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    data_root: str | None = None,
    resume: str | Path | None = None,
    callbacks: tuple[Callback, ...] = (),
    clock: TrainingClock | None = None,
    console: bool = True,
) -> Run:
    """Everything :func:`train` fits. ``resume`` is a checkpoint of this recipe's run to continue."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    if resume is None and any(checkpoints.glob("ckpt-*.pt")):
        raise TrainingError(f"{run_dir}: already holds checkpoints; pass --resume to continue it, or another --run-dir")
    if recipe.train.fsdp and recipe.train.fsdp.get("state_dict_type", "full") != "full":
        raise TrainingError("train.fsdp.state_dict_type: only full checkpoints are written (one file, renamed whole)")
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    device = resolve_device(recipe.train)
    precision = resolve_precision(recipe.train, device)

    reproducibility.seed_all(recipe.seed)  # the same initial weights on every rank
    model = build_model(recipe)
    composer_model = ComposerProtJEPA(model, cpu_bf16=precision.cpu_bf16)
    if resume is not None:
        check_compatible(Path(resume), composer_model)
    data = train_data(recipe, data_root)
    held_out, monitor_source = monitor_batch(recipe, data_root)

    budget = Budget.from_config(recipe.budget)
    tracker = BudgetTracker(budget, clock)
    log = RunLog(run_dir / "metrics.jsonl", Console(budget) if console else None)
    checkpointer = BudgetCheckpointer(checkpoints, recipe.train.checkpoint_at, tracker)
    algorithms: list[Algorithm] = []
    if recipe.optim.grad_clip is not None:
        algorithms.append(GradientClipping(clipping_type="norm", clipping_threshold=recipe.optim.grad_clip))
    if model.teacher is not None:
        algorithms.append(EMATeacherUpdate(tracker))
    if dist.get_world_size() > 1:
        algorithms.append(AllowUnusedParameters())

    trainer = Trainer(
        model=composer_model,
        train_dataloader=data,
        max_duration=budget.max_duration,
        optimizers=build_optimizer(model, recipe.optim, device),
        algorithms=algorithms,
        # The tracker comes first: its BATCH_END stops the training clock before the
        # logging, monitors and checkpoints that follow it run.
        callbacks=[
            tracker,
            ScheduledLR(LRSchedule.from_config(recipe.optim), tracker),
            MetricsLog(recipe.train.log_every, tracker, log),
            CollapseMonitor(held_out, recipe.train.monitor_every, tracker, log),
            checkpointer,
            *callbacks,
        ],
        loggers=[],
        progress_bar=False,
        log_to_console=False,
        device=device,
        precision=precision.composer,
        device_train_microbatch_size=1,  # unused: batches are never split (see train_data)
        seed=recipe.seed,
        load_path=str(resume) if resume is not None else None,
        parallelism_config={"fsdp": recipe.train.fsdp} if recipe.train.fsdp else None,
        compile_config={} if recipe.train.compile else None,
        run_name=recipe.name,
    )
    notes = [precision.note, f"collapse monitors on {monitor_source}"]
    finished = resume is not None and tracker.fraction(trainer.state) >= 1
    if resume is not None:
        notes.append(f"resumed from {resume} at step {int(trainer.state.timestamp.batch)}"
                     + (": its budget was already spent, nothing left to train" if finished else ""))
    log.open(resumed_at=None if resume is None else int(trainer.state.timestamp.batch))
    return Run(recipe, run_dir, trainer, model, tracker, checkpointer, log, notes, finished)


def export_encoder(run: Run) -> Path:
    """The trained encoder beside the checkpoints, written to a temporary folder then renamed."""
    final = run.run_dir / "export"
    tmp = run.run_dir / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder = run.model.encoder
    if run.recipe.encoder.name == "esm2":
        export_hf(encoder, tmp)
    else:
        save_encoder(encoder, tmp, run.recipe.encoder.model_dump(by_alias=True, exclude_none=True))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def fit(run: Run) -> None:
    """``trainer.fit()`` with out-of-memory turned into a one-line error."""
    try:
        run.trainer.fit()
    except RuntimeError as exc:  # torch.OutOfMemoryError is one; CPU allocators raise a plain one
        if not (isinstance(exc, torch.OutOfMemoryError) or OUT_OF_MEMORY.search(str(exc))):
            raise
        step = int(run.trainer.state.timestamp.batch)
        tokens = run.recipe.data.batch_tokens
        raise TrainingError(
            f"out of memory in training step {step + 1} with data.batch_tokens={tokens}: "
            f"try a smaller batch, e.g. --set data.batch_tokens={tokens // 2}"
        ) from None


def train(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    data_root: str | None = None,
    resume: str | Path | None = None,
    callbacks: tuple[Callback, ...] = (),
    clock: TrainingClock | None = None,
    console: bool = True,
    notes: tuple[str, ...] = (),
) -> RunResult:
    """Train ``recipe`` under its budget; on global rank 0, write the run directory and print a summary."""
    run = build_run(recipe, run_dir, data_root=data_root, resume=resume, callbacks=callbacks, clock=clock,
                    console=console)
    main_rank = dist.get_global_rank() == 0
    if main_rank:
        (run.run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
        for line in notes:
            print(line, flush=True)
    try:
        if not run.finished:  # a finished run resumed (e.g. after a crash in the export) only reports
            fit(run)
    finally:
        run.log.close()
        run.trainer.close()
    if not main_rank:
        return RunResult(run.run_dir, {}, run.checkpointer.saved, None, "")
    export_dir = export_encoder(run)
    records = read_records(run.log.path)
    plot_curves(records, run.run_dir / "curves.png", title=f"{recipe.name}: {run.tracker.budget}")
    summary = summarize(records)
    lines = list(notes) + run.notes + [f"checkpoints: {', '.join(p.name for p in run.checkpointer.saved) or 'none'}",
                                       f"encoder export: {export_dir}"]
    text = format_summary(summary, run.run_dir, lines)
    print(text, flush=True)
    return RunResult(run.run_dir, summary, run.checkpointer.saved, export_dir, text)
