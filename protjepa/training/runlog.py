"""What a run reports while it trains: a JSONL metrics log, the console, Composer's loggers.

Per-step metrics stay on the device and are summed there; the host reads them (one
sync) only every ``train.log_every`` steps, when their means over the interval are logged,
together with the first step at which a loss went non-finite (protjepa/training/finite.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from tqdm import tqdm

from protjepa.training.budget import Budget, BudgetTracker
from protjepa.training.finite import FirstNonFinite
from protjepa.training.parallel import over_ranks


def format_value(key: str, value: float) -> str:
    if key == "tokens_per_s":
        return f"{value / 1000:.1f}k tok/s" if value >= 1000 else f"{value:.0f} tok/s"
    return f"{key} {value:.4g}"


def format_values(record: dict, losses_only: bool = False) -> str:
    """``loss 2.31 | mlm/loss 2.1 | mlm/accuracy 0.3 ... | 5.1k tok/s`` (the metrics of a record)."""
    named = [k for k in record if "/" in k and (k.endswith("/loss") or not losses_only)]
    keys = [k for k in ("loss",) if k in record] + named + [k for k in ("tokens_per_s",) if k in record]
    return " | ".join(format_value(k, record[k]) for k in keys)


def format_record(record: dict) -> str:
    """``step 120 | 45.0% | 81.2s | `` and the record's metrics."""
    return f"step {record['step']} | {100 * record['fraction']:.1f}% | {record['seconds']:.1f}s | " + format_values(record)


class Console:
    """A progress bar over the budget on a terminal; otherwise one line per record."""

    def __init__(self, budget: Budget, stream: IO = sys.stderr):
        self.budget = budget
        self.stream = stream
        self.bar = None
        if stream.isatty():
            unit = {"wall_clock": "s", "tokens": "tok", "steps": "step", "flops": "FLOP"}[budget.unit]
            self.bar = tqdm(total=budget.amount, unit=unit, file=stream, dynamic_ncols=True, unit_scale=True)

    def show(self, record: dict) -> None:
        if self.bar is None:
            print(format_record(record), file=self.stream, flush=True)
            return
        self.bar.n = min(record["fraction"], 1.0) * self.budget.amount
        if record["kind"] == "train":
            self.bar.set_postfix_str(format_values(record, losses_only=True), refresh=False)
        else:
            self.bar.write(format_record(record))
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunLog:
    """Writes records to ``metrics.jsonl`` and the console (global rank 0 only), and to
    Composer's loggers (every rank: Composer's own loggers write on rank 0)."""

    def __init__(self, path: Path, console: Console | None):
        self.path = path
        self.console = console
        self._file = None

    def open(self, resumed_at: int | None) -> None:
        """Start the file afresh, or (a resumed run) keep the records up to the resumed step:
        those after it came from steps the resumed run does again."""
        if dist.get_global_rank() != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resumed_at is not None and self.path.exists():
            with self.path.open() as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resumed_at]
        self._file = self.path.open("w")
        self._file.writelines(kept)

    def write(self, kind: str, state: State, tracker: BudgetTracker, values: dict, logger: Logger) -> None:
        record = {
            "kind": kind,
            "step": int(state.timestamp.batch),
            "tokens": int(state.timestamp.token),
            "seconds": round(tracker.clock.elapsed, 3),
            "flops": tracker.flops,  # model FLOPs so far; None when the model cannot count them
            "fraction": round(tracker.fraction(state), 6),
            **values,
        }
        logger.log_metrics({f"{kind}/{k}" if "/" not in k else k: v for k, v in values.items()})
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            if self.console is not None:
                self.console.show(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.console is not None:
            self.console.close()


class MetricsLog(Callback):
    """Sums each step's losses and metrics on the device; logs their means every ``every`` steps (on
    several ranks, the means over the ranks: under DDP or FSDP the losses a step averages the gradients of)
    with the learning rate, non-padding tokens per training-clock second and padding waste."""

    def __init__(self, every: int, tracker: BudgetTracker, log: RunLog):
        self.every = every
        self.tracker = tracker
        self.log = log
        self._keys: list[str] | None = None
        self.non_finite = FirstNonFinite()
        self._reset(0, 0.0)

    def _reset(self, tokens: int, seconds: float) -> None:
        self._sum: torch.Tensor | None = None
        self._steps = 0
        self._padding = 0
        self._slots = 0
        self._tokens0, self._seconds0 = tokens, seconds

    def fit_start(self, state: State, logger: Logger) -> None:
        self._reset(int(state.timestamp.token), self.tracker.clock.elapsed)  # a resumed run starts mid-budget

    def batch_end(self, state: State, logger: Logger) -> None:
        metrics = state.outputs.metrics
        if self._keys is None:
            self._keys = list(metrics)
        step_values = torch.stack([metrics[k].detach().float() for k in self._keys])
        self._sum = step_values if self._sum is None else self._sum + step_values
        self._steps += 1
        self.non_finite.update(self._keys, step_values, int(state.timestamp.batch))
        rows, length = state.batch.shape
        self._padding += state.batch.num_padding
        self._slots += rows * length
        if int(state.timestamp.batch) % self.every == 0:
            self._flush(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._steps:
            self._flush(state, logger)

    def _flush(self, state: State, logger: Logger) -> None:
        assert self._sum is not None and self._keys is not None
        assert self.non_finite.first is not None
        # On several ranks, each of which ran its own batches: the mean over the ranks of their means,
        # the padding of all, and the first non-finite step any rank saw (so that they stop together).
        local = (self._sum / self._steps).double()
        summed = over_ranks(torch.cat([local, local.new_tensor([self._padding, self._slots])]), "SUM")
        read = torch.cat([summed, over_ranks(self.non_finite.first.clone(), "MIN")]).tolist()  # the one host sync
        keys = len(self._keys)
        means = [total / dist.get_world_size() for total in read[:keys]]
        (padding, slots), first = read[keys:keys + 2], read[keys + 2:]
        tokens, seconds = int(state.timestamp.token), self.tracker.clock.elapsed
        values = {
            "lr": state.optimizers[0].param_groups[0]["lr"],
            "tokens_per_s": (tokens - self._tokens0) / max(seconds - self._seconds0, 1e-9),
            "padding_fraction": padding / max(slots, 1),
            **dict(zip(self._keys, means)),
        }
        self.log.write("train", state, self.tracker, values, logger)
        self._reset(tokens, seconds)
        self.non_finite.raise_if_seen(first)  # after the record: metrics.jsonl shows the non-finite means
