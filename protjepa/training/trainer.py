"""A recipe -> a Composer ``Trainer``; and a whole run: train, checkpoint, export, report.

The run directory holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl``,
``curves.png``, ``checkpoints/ckpt-<fraction>.pt`` and ``export/`` (the trained encoder:
Hugging Face ESM format for ESM-2, the native format for other encoders).
"""
from __future__ import annotations

import re
import shutil
import signal
import threading
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml
from composer import Trainer
from composer.algorithms import GradientClipping
from composer.core import Algorithm, Callback, DataSpec, Event, State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist, reproducibility
from torch.utils.data import DataLoader

from protjepa.attention import attention_line
from protjepa.batch import Batch
from protjepa.build import build_model, encoder_from_spec
from protjepa.card import write_card
from protjepa.data.corpus import data_files, held_out_batches, make_corpus
from protjepa.data.fasta import check_gzip_complete
from protjepa.encoders.base import Encoder
from protjepa.encoders.weights import WeightsError, export_hf
from protjepa.flops import BatchCounts
from protjepa.export import RUN_RECIPE, save_encoder
from protjepa.errors import UserError
from protjepa.model import ProtJEPA
from protjepa.precision import choose_bf16
from protjepa.files import same_file
from protjepa.provenance import FILE as PROVENANCE
from protjepa.provenance import write_provenance
from protjepa.recipe import (ComponentSpec, DataConfig, OptimConfig, Recipe, TrainConfig, dump_recipe, machine_problem,
                             recipe_difference)
from protjepa.registry import import_component
from protjepa.yamlio import format_loc, read_text
from protjepa.training.budget import Budget, BudgetTracker, FlopCountError, TrainingClock
from protjepa.checkpoint_file import (CheckpointError, latest_checkpoint, model_state, read_checkpoint, recorded_recipe,
                                      written_world_size)
from protjepa.training.checkpoints import BudgetCheckpointer, RecipeRecord, clean_partials
from protjepa.training.finite import NonFiniteError
from protjepa.training.composer_model import ComposerProtJEPA
from protjepa.training.ema import EMATeacherUpdate
from protjepa.training.monitors import CollapseMonitor
from protjepa.training.parallel import (composer_parallelism, every_rank, full_state_dict, host_total,
                                       ignore_launcher_sigterm, is_sharded, lost_peer, start_process_group)
from protjepa.training.retention import CheckpointRetention
from protjepa.training.summary import format_summary, plot_curves, read_records, summarize_run
from protjepa.training.runlock import locked_run_dir
from protjepa.training.runlog import Console, MetricsLog, RunLog
from protjepa.training.schedule import LRSchedule, ScheduledLR
from protjepa.training.sizing import tokens_that_fill

METRICS = "metrics.jsonl"
EXPORT_TMP = ".export.tmp"
LATEST = "latest"  # resume=: the run in the run folder, from its newest checkpoint
OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|not enough memory", re.IGNORECASE)


class TrainingError(UserError, RuntimeError):
    """A run that cannot start or go on: bad settings for this machine, out of memory."""


class ResumableError(TrainingError):
    """A run stopped by a failure its checkpoints survive; ``newest``: the checkpoint to resume from
    (the command adds how)."""

    def __init__(self, message: str, newest: Path | None):
        super().__init__(message)
        self.newest = newest


class RankLost(ResumableError):
    """Another process of a multi-process run died, so this one stopped too."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: where it stopped and the newest checkpoint (the command adds how to resume)."""

    def __init__(self, step: int, newest: Path | None):
        super().__init__(f"stopped after step {step}; newest checkpoint: {newest or 'none'}")
        self.step = step
        self.newest = newest


def composer_device(train: TrainConfig) -> str:
    """Composer's device name: ``gpu`` or ``cpu`` (what this machine cannot run is refused before:
    :func:`~protjepa.recipe.machine_problem`)."""
    if train.device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if train.device == "cuda" else "cpu"


@dataclass(frozen=True)
class Precision:
    composer: str  # Composer's precision: amp_bf16 autocasts on a GPU only
    cpu_bf16: bool  # our Composer model autocasts the forward to bf16 on the CPU itself
    note: str  # what the run summary says about it


def resolve_precision(train: TrainConfig, device: str) -> Precision:
    """bf16 autocast on a GPU (Composer's ``amp_bf16``) and on a CPU with native bf16 (ours);
    ``auto`` picks fp32 on other CPUs. Losses, optimizer state and the EMA teacher stay fp32.
    On several CPU ranks, each timed on its own, bf16 runs only where every rank chose it."""
    bf16, why = choose_bf16(train.precision, "cuda" if device == "gpu" else "cpu", "train.precision")
    if device == "cpu" and dist.get_world_size() > 1 and every_rank(torch.tensor(bf16)) != bf16:
        bf16, why = False, "fp32 on the CPU (train.precision auto: not every rank timed bf16 faster)"
    on_gpu = bf16 and device == "gpu"
    return Precision("amp_bf16" if on_gpu else "fp32", bf16 and not on_gpu, f"precision: {why}")


def compile_step(recipe: Recipe, device: str) -> tuple[dict | None, str]:
    """Composer's ``compile_config`` (None: eager) and the line saying what it is. ``auto``: on a GPU
    (an H200 ran the esm2_150m MLM step 1.50x faster compiled) and off on a CPU (within 5% of eager
    there, after 20 s of compiling; docs/benchmarks.md). Compiling is kept off the training clock.
    With ``data.static_shapes`` the graphs are traced for the one shape (``dynamic: false``) and, on a
    GPU, replayed as CUDA graphs (``mode: reduce-overhead``)."""
    train = recipe.train
    if train.compile == "auto":
        on = device == "gpu"
        why = f"train.compile auto: {'on on a GPU' if on else 'off on a CPU'}"
    else:
        on, why = train.compile, f"train.compile {str(train.compile).lower()}"
    if not on:
        return None, f"torch.compile: off ({why})"
    if not recipe.data.static_shapes:
        return {}, f"torch.compile: on ({why})"
    if device == "gpu":
        return {"dynamic": False, "mode": "reduce-overhead"}, \
            f"torch.compile: on, CUDA graphs ({why}; data.static_shapes: mode reduce-overhead)"
    return {"dynamic": False}, \
        f"torch.compile: on, static shapes ({why}; data.static_shapes; CUDA graphs on a GPU only)"


def replays_cuda_graphs(compile_config: dict | None) -> bool:
    """Whether a step compiled with ``compile_config`` (:func:`compile_step`'s) replays CUDA graphs:
    each step must then be marked (:class:`CudaGraphSteps`)."""
    return compile_config is not None and compile_config.get("mode") == "reduce-overhead"


class CudaGraphSteps(Callback):
    """Tells torch a training step begins, so that CUDA graphs' replays (``mode: reduce-overhead``) may
    reuse the memory of the step before's outputs; everything read from them was read by then."""

    def batch_start(self, state: State, logger: Logger) -> None:
        torch.compiler.cudagraph_mark_step_begin()


def attention_note(encoder: Encoder, device: str, bf16: bool, data: DataConfig) -> str:
    """The line naming the attention kernels the run's encoder uses (training steps, forward-only passes)."""
    request = encoder.attention_request()
    if request is None:
        return f"attention: {type(encoder).__name__}'s own (not protjepa's backends)"
    backend, head_dim = request
    where = torch.device("cuda", torch.cuda.current_device()) if device == "gpu" else torch.device("cpu")
    return attention_line(backend, where, torch.bfloat16 if bf16 else torch.float32, head_dim, data.packing,
                          data.static_shapes)


def build_optimizer(model: ProtJEPA, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW on the trainable parameters; biases and norm weights (1-D) get no weight decay.
    torch's fused kernel on every device (CPU and CUDA): one pass over each parameter instead of a
    dozen foreach ops (measured: the CPU optimizer step 46 -> 17 ms, esm2_8m fp32), same update."""
    trainable = [p for p in model.parameters() if p.requires_grad]  # the EMA teacher has none
    # initial_lr (the schedule's base, training/schedule.py) from the start: a sharded resume loads
    # the checkpoint's optimizer state by the keys the fresh optimizer already has.
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": optim.weight_decay, "initial_lr": optim.lr},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0, "initial_lr": optim.lr},
    ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=True)


def check_corpus_in_background(recipe: Recipe, data_root: str | None) -> Future:
    """Read each corpus file to its end in a thread (a gzip file cut short is found at start-up,
    not hours in); ``.result()`` raises its one-line error. A missing file is reported at once.
    A daemon thread: one stuck in a read (a hung network file system) never keeps a stopped run alive."""
    paths = sorted({str(path) for path in data_files(recipe.data, data_root).values()})
    future: Future = Future()

    def check() -> None:
        try:
            for path in paths:
                check_gzip_complete(path)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the result
            future.set_exception(exc)
        else:
            future.set_result(None)

    threading.Thread(target=check, name="corpus-check", daemon=True).start()  # goes on while the model is built
    return future


def fill_gpu_memory(recipe: Recipe, model: ProtJEPA, bf16: bool) -> tuple[Recipe, str]:
    """``recipe`` with ``data.batch_tokens: fill`` replaced by the tokens whose step fills the GPU's free
    memory (:func:`~protjepa.training.sizing.tokens_that_fill`; the fewest over the ranks), and the line
    that says so. On a GPU only (a CPU run with fill is refused before: :func:`~protjepa.recipe.machine_problem`)."""
    where = torch.device("cuda", torch.cuda.current_device())
    free, _ = torch.cuda.mem_get_info(where)
    ddp = dist.get_world_size() > 1 and recipe.train.parallelism == "ddp"
    tokens, line = tokens_that_fill(recipe, model, where, free, bf16, ddp)
    if dist.get_world_size() > 1:
        tokens = int(host_total(tokens, "MIN"))
        line += f"; {tokens} on every rank (the fewest any rank fits)"
    if tokens == 0:  # whole rows or none
        raise TrainingError(f"data.batch_tokens: fill: not one row of data.crop {recipe.data.crop} residues fits "
                            f"this GPU ({line}): a smaller data.crop or encoder")
    return recipe.model_copy(update={"data": recipe.data.model_copy(update={"batch_tokens": tokens})}), line


def train_data(recipe: Recipe, data_root: str | None, model: ProtJEPA) -> DataSpec:
    """The streaming corpus as Composer data: one ready ``Batch`` per step, counted in sequences
    (samples) and non-padding residues (Composer's ``tok`` unit, which token budgets use), moved
    to ``model``'s device before the step (outside a compiled graph: CUDA graphs take device inputs)."""
    corpus = make_corpus(recipe.data, recipe.masking, "train", seed=recipe.seed, root=data_root)
    workers = recipe.data.num_workers
    loader = DataLoader(corpus, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    return DataSpec(
        loader,
        # Composer moves tensors, not dataclasses: the batch moves itself, to where Composer put the model.
        microbatch_transforms=lambda batch: batch.to(model.encoder.device),
        # Batches are sized by tokens in the corpus; they are never split into microbatches.
        split_batch=lambda batch, microbatch_size: [batch],
        get_num_samples_in_batch=len,
        get_num_tokens_in_batch=lambda batch: batch.num_residues,
    )


def monitor_batch(recipe: Recipe, data_root: str | None) -> tuple[Batch, str]:
    """The fixed held-out batch the collapse monitors read, and where it came from."""
    batches, where = held_out_batches(recipe.data, recipe.masking, recipe.train.monitor_sequences, seed=recipe.seed,
                                      root=data_root)
    return batches[0], where


def flop_counter(model: ProtJEPA, budget: Budget) -> Callable[[Batch], float] | None:
    """A batch -> its training step's model FLOPs, counted from host-side sizes; None when a
    part of the model cannot count its FLOPs (then a FLOP budget is refused, in one line)."""
    uncounted = model.uncounted_parts()
    if not uncounted:
        return lambda batch: model.step_flops(BatchCounts.of(batch))
    if budget.unit == "flops":
        raise FlopCountError(f"budget.flops: cannot count the FLOPs of {', '.join(uncounted)} (no count declared, "
                             "see docs/extending.md); give budget.wall_clock, tokens or steps")
    return None


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


# What a run writes before its first checkpoint: a run stopped with only these starts again under --resume.
STARTED_RECORDS = (RUN_RECIPE, PROVENANCE, METRICS, "checkpoints")


def run_records(run_dir: Path) -> list[str]:
    """The names of what ``run_dir`` holds of a run: every entry but hidden ones (the lock, partial files)
    and folders holding nothing else."""
    if not run_dir.is_dir():
        return []
    return sorted(entry.name for entry in run_dir.iterdir() if not entry.name.startswith(".") and (
        not entry.is_dir() or any(not p.name.startswith(".") for p in entry.rglob("*"))))


def check_new_run_folder(run_dir: Path) -> None:
    """A new run goes into a folder without another run's records (it would replace some and leave others
    describing a run it was not); ``--resume`` goes on with the run there."""
    held = run_records(run_dir)
    if not held:
        return
    if latest_checkpoint(run_dir / "checkpoints") is not None:
        raise TrainingError(f"{run_dir}: already holds checkpoints; pass --resume to continue it, or another --run-dir")
    raise TrainingError(f"{run_dir}: already holds a run's records ({', '.join(held)}); pass --resume to go on with "
                        "that run, or another --run-dir")


def resume_point(run_dir: Path) -> Path | None:
    """What ``--resume`` continues in ``run_dir``: its newest checkpoint; None when the run there stopped
    before its first one (it starts again from step 0). A folder with nothing to resume is an error."""
    newest = latest_checkpoint(run_dir / "checkpoints")
    if newest is not None:
        return newest
    held = run_records(run_dir)
    if not held:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no checkpoint to resume from")
    further = [name for name in held if name not in STARTED_RECORDS]
    if further:
        raise TrainingError(f"{run_dir / 'checkpoints'}: no checkpoint to resume from, and {run_dir} holds what a run "
                            f"writes later ({', '.join(further)}): give another --run-dir")
    return None


def check_resumed(recipe: Recipe, run_dir: Path, resume: Path | None, saved: dict | None) -> None:
    """A resumed run goes on as it started: with as many processes (each reads its own shard, so the global
    batch would change) and the recipe it was trained with (its record, in the checkpoint or else the run's
    ``recipe.yaml``), but for how and where it runs (:data:`~protjepa.recipe.RUN_SETTINGS`)."""
    written = written_world_size(saved) if saved is not None else None
    if written is not None and written != dist.get_world_size():
        raise TrainingError(f"{resume}: written by a run of {written} process(es), resumed on {dist.get_world_size()}: "
                            "each reads its own shard of the corpus, so every step's batch would change; resume with "
                            f"{written} (composer -n {written} -m protjepa train ...)")
    recorded, source = (recorded_recipe(saved), resume) if saved is not None else (None, None)
    if recorded is None and (run_dir / RUN_RECIPE).is_file():
        recorded, source = read_text(run_dir / RUN_RECIPE, TrainingError, "run recipe"), run_dir / RUN_RECIPE
    if recorded is None:
        return
    try:
        old = yaml.safe_load(recorded)
    except yaml.YAMLError:
        raise TrainingError(f"{source}: its recipe record is not YAML: resume from another checkpoint") from None
    difference = recipe_difference(old, yaml.safe_load(dump_recipe(recipe)))
    if difference:
        key, then, now = difference
        raise TrainingError(f"{source}: the run was trained with {key}: {then}, and resumed with {key}: {now}: a "
                            "resumed run goes on with the recipe it started with, so that its records describe it; "
                            "train the changed recipe in another --run-dir")


def held_out_on_training_records(recipe: Recipe, data_root: str | None) -> list[str]:
    """A warning when ``data.valid`` is ``data.train`` (the same file, or a copy): every held-out number
    would be on training records."""
    files = data_files(recipe.data, data_root)
    if "valid" in files and same_file(files["train"], files["valid"]):
        return [f"warning: data.valid ({files['valid']}) holds the same records as data.train: every held-out "
                "number (val/..., the collapse monitors, the readout) is on training records"]
    return []


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
    notes: list[str]  # how the run was set up: printed before it trains
    finished: bool  # resumed from a checkpoint at the end of the budget
    retention: CheckpointRetention
    recipe_text: str  # the recipe as it runs (data.batch_tokens: fill as the number it came to): recipe.yaml
    bf16: bool  # its steps autocast to bf16 (Composer's amp_bf16 on a GPU, ours on a CPU)


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    checkpoints: list[Path]
    export_dir: Path | None
    text: str  # the set-up lines (printed as the run started) and the summary (printed as it ended)


def build_run(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    data_root: str | None = None,
    resume: str | Path | None = None,
    callbacks: tuple[Callback, ...] = (),
    loggers: tuple[LoggerDestination, ...] = (),
    clock: TrainingClock | None = None,
    console: bool = True,
    restart: bool = False,
) -> Run:
    """Everything :func:`train` fits. ``resume`` is a checkpoint of this recipe's run to continue; ``restart``:
    the run in ``run_dir`` stopped before its first checkpoint and starts again (:func:`resume_point`)."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    if resume is None and not restart:
        check_new_run_folder(run_dir)
    problem = machine_problem(recipe)
    if problem is not None:
        raise TrainingError(f"{format_loc(problem[0])}: {problem[1]}")
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    device = composer_device(recipe.train)
    parallelism = composer_parallelism(recipe.train)
    if parallelism is not None and device == "cpu" and torch.cuda.is_available():
        # Composer's FSDP2 set-up puts its tensors on the GPU of a machine that has one, whatever train.device says.
        raise TrainingError("train.parallelism: fsdp on the CPUs of a machine with a GPU: set train.device: cuda "
                            "(or auto), or train.parallelism: ddp")
    start_process_group(device)
    precision = resolve_precision(recipe.train, device)
    corpus_check = check_corpus_in_background(recipe, data_root)

    reproducibility.seed_all(recipe.seed)  # the same initial weights on every rank
    model = build_model(recipe)
    flop_line = model.count_encoder_flops()  # before Composer moves the model: sample sequences, on the CPU
    composer_model = ComposerProtJEPA(model, cpu_bf16=precision.cpu_bf16)
    saved = read_checkpoint(resume, mmap=True) if resume is not None else None
    if resume is not None:
        model_state(Path(resume), composer_model, data=saved)  # refuses another architecture's checkpoint in one line
    bf16 = precision.cpu_bf16 or precision.composer == "amp_bf16"
    fill_line = None
    if recipe.data.batch_tokens == "fill":
        recipe, fill_line = fill_gpu_memory(recipe, model, bf16)
    if resume is not None or restart:
        check_resumed(recipe, run_dir, Path(resume) if resume is not None else None, saved)
    recipe_text = dump_recipe(recipe)
    data = train_data(recipe, data_root, model)
    held_out, monitor_source = monitor_batch(recipe, data_root)

    budget = Budget.from_config(recipe.budget)
    tracker = BudgetTracker(budget, clock, flop_counter(model, budget))
    log = RunLog(run_dir / METRICS, Console(budget) if console else None)
    metrics_log = MetricsLog(recipe.train.log_every, tracker, log)
    checkpointer = BudgetCheckpointer(checkpoints, recipe.train.checkpoint_at, tracker, metrics_log.non_finite)
    retention = CheckpointRetention(checkpoints, recipe.train.keep_checkpoints)
    algorithms: list[Algorithm] = []
    if recipe.optim.grad_clip is not None:
        algorithms.append(GradientClipping(clipping_type="norm", clipping_threshold=recipe.optim.grad_clip))
    if model.teacher is not None:
        algorithms.append(EMATeacherUpdate(tracker))
    if dist.get_world_size() > 1 and recipe.train.parallelism == "ddp":
        algorithms.append(AllowUnusedParameters())

    corpus_check.result()  # a damaged corpus stops the run here, before Composer is set up
    compile_config, compile_line = compile_step(recipe, device)
    trainer = Trainer(
        model=composer_model,
        train_dataloader=data,
        max_duration=budget.max_duration,
        optimizers=build_optimizer(model, recipe.optim),
        algorithms=algorithms,
        # The tracker comes first: its BATCH_END stops the training clock before the
        # logging, monitors and checkpoints that follow it run.
        callbacks=[
            tracker,
            ScheduledLR(LRSchedule.from_config(recipe.optim), tracker),
            metrics_log,
            CollapseMonitor(held_out, recipe.train.monitor_every, tracker, log, metrics_log.non_finite),
            checkpointer,
            retention,
            RecipeRecord(recipe_text),
            *([CudaGraphSteps()] if replays_cuda_graphs(compile_config) else []),
            *components(recipe.train.callbacks),
            *callbacks,
        ],
        loggers=[*components(recipe.train.loggers), *loggers],
        progress_bar=False,
        log_to_console=False,
        device=device,
        precision=precision.composer,
        device_train_microbatch_size=1,  # unused: batches are never split (see train_data)
        seed=recipe.seed,
        load_path=str(resume) if resume is not None else None,
        parallelism_config=parallelism,
        compile_config=compile_config,
        run_name=recipe.name,
    )
    notes = [precision.note, attention_note(model.encoder, device, bf16, recipe.data), compile_line,
             *([fill_line] if fill_line else []), *([flop_line] if flop_line else []),
             f"collapse monitors on {monitor_source}", *held_out_on_training_records(recipe, data_root)]
    if (ranks := dist.get_world_size()) > 1:
        notes.append(f"{ranks} processes, train.parallelism {recipe.train.parallelism}: each step reads "
                     f"{ranks} x data.batch_tokens = {ranks * recipe.data.batch_tokens} tokens")
    finished = resume is not None and tracker.fraction(trainer.state) >= 1
    if resume is not None:
        notes.append(f"resumed from {resume} at step {int(trainer.state.timestamp.batch)}"
                     + (": its budget was already spent, nothing left to train" if finished else ""))
    if restart:
        notes.append(f"{run_dir}: the run had stopped before its first checkpoint: started again from step 0")
    log.open(resumed_at=None if resume is None else int(trainer.state.timestamp.batch))
    return Run(recipe, run_dir, trainer, model, tracker, checkpointer, log, notes, finished, retention, recipe_text,
               bf16)


def gpu_memory_note(device: torch.device) -> list[str]:
    """On a GPU, the most memory the run's tensors held at once (how full ``data.batch_tokens`` made it)."""
    if device.type != "cuda":
        return []
    peak, total = torch.cuda.max_memory_allocated(device), torch.cuda.get_device_properties(device).total_memory
    return [f"GPU memory: at most {peak / 2 ** 30:.1f} GiB allocated ({peak / total:.0%} of {total / 2 ** 30:.1f} GiB)"]


def components(specs: list[ComponentSpec]) -> list:
    """The recipe's ``_component_`` entries (``train.loggers``, ``train.callbacks``), built."""
    return [import_component(spec.component)(**spec.options) for spec in specs]


def whole_encoder(run: Run) -> Encoder | None:
    """The trained encoder, whole: under FSDP a copy on global rank 0 of the weights gathered from
    every rank's shards (every rank must call it; the others get None)."""
    if not is_sharded(run.model):
        return run.model.encoder
    state = full_state_dict(run.model)
    if dist.get_global_rank() != 0:
        return None
    encoder = encoder_from_spec(run.recipe.encoder, run.recipe.encoder_config)
    encoder.load_state_dict({name.removeprefix("encoder."): weights for name, weights in state.items()
                             if name.startswith("encoder.")})
    return encoder


def export_encoder(run: Run, encoder: Encoder) -> Path:
    """The trained encoder beside the checkpoints, written to a temporary folder then renamed."""
    final = run.run_dir / "export"
    tmp = run.run_dir / EXPORT_TMP
    shutil.rmtree(tmp, ignore_errors=True)
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
    loggers: tuple[LoggerDestination, ...] = (),
    clock: TrainingClock | None = None,
    console: bool = True,
    notes: tuple[str, ...] = (),
) -> RunResult:
    """Train ``recipe`` under its budget; on global rank 0, lock and write the run directory and print a summary.
    ``callbacks`` and ``loggers`` are added to those the recipe names. ``resume``: a checkpoint to continue
    from, or ``"latest"``: the run in ``run_dir`` from its newest checkpoint (:func:`resume_point`); without it,
    ``run_dir`` must not hold another run's records."""
    main_rank = dist.get_global_rank() == 0
    with locked_run_dir(Path(run_dir)) if main_rank else nullcontext(), interrupts_raise():
        return _train_locked(recipe, Path(run_dir), main_rank, data_root=data_root, resume=resume,
                             callbacks=callbacks, loggers=loggers, clock=clock, console=console,
                             notes=notes)


@contextmanager
def interrupts_raise():
    """Ctrl-C raises KeyboardInterrupt again: importing Composer installs a SIGINT handler that
    exits 130 at once, silently, from wherever the run was (a checkpoint write included)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _train_locked(recipe: Recipe, run_dir: Path, main_rank: bool, *, data_root, resume, callbacks, loggers, clock,
                  console, notes) -> RunResult:
    if main_rank and clean_partials(run_dir / "checkpoints"):
        notes = (*notes, "removed the partial checkpoint files a killed run left")
    restart = False
    if isinstance(resume, str) and resume == LATEST:
        resume = resume_point(run_dir)
        restart = resume is None
    run = build_run(recipe, run_dir, data_root=data_root, resume=resume, callbacks=callbacks, loggers=loggers,
                    clock=clock, console=console, restart=restart)
    if main_rank:
        try:  # the run's recipe as it runs (data.batch_tokens: fill as the number it came to)
            (run.run_dir / RUN_RECIPE).write_text(run.recipe_text)
            write_provenance(run.run_dir, run.recipe, data_root)
        except OSError as exc:
            raise TrainingError(f"{exc.filename or run.run_dir}: cannot write the run's record: {exc.strerror}") \
                from None
        for line in (*notes, *run.notes):  # the run's set-up first: what runs, where, in which precision
            print(line, flush=True)
    ended = False
    try:
        if not run.finished:  # a finished run resumed (e.g. after a crash in the export) only reports
            fit(run)
        ended = True
    except KeyboardInterrupt:
        raise RunInterrupted(int(run.trainer.state.timestamp.batch), latest_checkpoint(run_dir / "checkpoints")) \
            from None
    except NonFiniteError as exc:
        newest = latest_checkpoint(run_dir / "checkpoints")
        raise TrainingError(f"{exc}; training stopped, no checkpoint written after it (newest: {newest or 'none'}); "
                            "try a lower optim.lr or a smaller optim.grad_clip") from None
    except RuntimeError as exc:
        lost = lost_peer(exc)
        if lost is None:
            raise
        ignore_launcher_sigterm()
        newest = latest_checkpoint(run_dir / "checkpoints")
        raise RankLost(f"rank {dist.get_global_rank()} of {dist.get_world_size()}: another process of the run is "
                       f"gone ({lost}, in step {int(run.trainer.state.timestamp.batch) + 1}); training stopped; "
                       f"newest checkpoint: {newest or 'none'}", newest) from None
    finally:
        run.log.close()
        if ended:
            run.trainer.close()
        else:  # Trainer.close() ends in a barrier: a failed run must not wait there for ranks that may be gone
            run.trainer.engine.close()
    encoder = whole_encoder(run)
    if not main_rank:
        return RunResult(run.run_dir, {}, run.checkpointer.saved, None, "")
    records = read_records(run.log.path)
    latent = run.model.latent_scores()
    try:
        export_dir = export_encoder(run, encoder)
        write_card(run.run_dir, export_dir)
        plot_curves(records, run.run_dir / "curves.png", title=f"{recipe.name}: {run.tracker.budget}", latent=latent,
                    x_unit=run.tracker.budget.unit)
    except (OSError, WeightsError) as exc:
        shutil.rmtree(run.run_dir / EXPORT_TMP, ignore_errors=True)
        newest = latest_checkpoint(run_dir / "checkpoints")
        why = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else str(exc)
        raise ResumableError(f"the run trained to its end, but its export could not be written ({why}); its "
                             f"checkpoints are intact (newest: {newest})", newest) from None
    summary = summarize_run(records, latent, {spec.id: spec.name for spec in recipe.objectives},
                            "bf16" if run.bf16 else "fp32")
    compiled = run.tracker.clock.compiled
    compile_note = [f"torch.compile: {compiled:.1f} s of compiling, kept off the training clock"] if compiled else []
    # The set-up lines (notes, run.notes) were printed as the run started: the summary does not repeat them.
    lines = compile_note + gpu_memory_note(run.model.encoder.device) + [run.retention.describe(),
                                                                        f"encoder export: {export_dir}"]
    text = format_summary(summary, run.run_dir, lines)
    print(text, flush=True)
    return RunResult(run.run_dir, summary, run.checkpointer.saved, export_dir, "\n".join([*notes, *run.notes, text]))
