"""Several processes: Composer's DDP or FSDP (``train.parallelism``), and what the ranks do together.

Composer's launcher (``composer -n N -m protjepa train RECIPE``) starts one process per rank;
each reads its own shard of the corpus, ``data.batch_tokens`` of it a step. ``ddp``: every rank
holds the whole model and Composer's DDP averages the gradients. ``fsdp``: Composer's FSDP2
(torch's ``fully_shard``) on the ProtJEPA module, the one child of Composer's model, so one
unit: at rest each rank holds 1/N of the weights, the EMA teacher and the AdamW state, and a
step gathers the whole model, in fp32 as under DDP (bf16 only where autocast puts it), so the
strategy does not change a run's numbers. Checkpoints are full state dicts either way: one
file, written by rank 0. On one process both are plain training.

Everything here is called by every rank at the same place: reductions over the ranks, the
whole weights of a sharded model outside the training step, telling a lost rank from other
failures.
"""
from __future__ import annotations

import re
import signal
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator, Literal

import torch
from composer.utils import dist
from composer.utils.parallelism import FSDP2Config
from torch import Tensor, nn
from torch.distributed import ProcessGroup
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from protjepa.recipe import TrainConfig

# What gloo (the other rank's socket closed) and NCCL (its watchdog, or an aborted communicator)
# raise on the ranks that are left when one process of the run dies.
LOST_PEER = re.compile(r"connection closed by peer|connection reset by peer|broken pipe|nccl communicator was aborted"
                       r"|watchdog caught collective operation timeout", re.IGNORECASE)


def composer_parallelism(train: TrainConfig) -> dict | None:
    """Composer's ``parallelism_config`` for ``train.parallelism``: None for DDP (Composer wraps the
    model in DDP by itself on several ranks) and on one process, Composer's FSDP2 for ``fsdp``."""
    if train.parallelism != "fsdp" or dist.get_world_size() == 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "FSDP2 Config/APIs are experimental", at every run
        return {"fsdp": FSDP2Config(
            state_dict_type="full",  # one checkpoint file, renamed whole (training/checkpoints.py)
            mixed_precision="FULL",  # fp32 weights gathered: bf16 only under autocast, as with DDP
            reshard_after_forward=False,  # one unit: freeing it after the forward would only gather it twice
        )}


_host_group: ProcessGroup | None = None  # gloo beside NCCL; None: the default group (gloo on CPUs)


def start_process_group(device: str) -> None:
    """Composer's process group, before the Trainer would make it: the ranks agree on settings first.
    On GPUs also a gloo group for the numbers the host keeps (:func:`host_total`)."""
    global _host_group
    if dist.get_world_size() > 1:
        dist.initialize_dist(device)
        if device == "gpu" and _host_group is None:
            _host_group = torch.distributed.new_group(backend="gloo")


def end_process_group() -> None:
    """The ranks' process groups torn down once a run has ended well, before the interpreter exits:
    gloo's threads left running then abort the process ("terminate called without an active exception")."""
    global _host_group
    if dist.get_world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        _host_group = None


def host_total(value: float, operation: str) -> float:
    """A number the host keeps (training-clock seconds, a batch's FLOPs) reduced over the ranks (``SUM``,
    ``MAX``) through gloo: over NCCL its read would wait for the step's kernels, a device sync every step."""
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total, reduce_operation=operation, group=_host_group)
    return total.item()


def over_ranks(values: Tensor, operation: Literal["SUM", "MIN"]) -> Tensor:
    """``values`` summed, or their smallest, over the ranks, in place; as they are on one process."""
    dist.all_reduce(values, reduce_operation=operation)
    return values


def every_rank(flag: Tensor) -> bool:
    """Whether the boolean ``flag`` (one element, on this rank's device) holds on every rank: one MIN
    all-reduce and one read; ``flag`` itself on one process."""
    return bool(over_ranks(flag.reshape(1).to(torch.int32), "MIN").item())


def local_shard(tensor: Tensor) -> Tensor:
    """This rank's part of a tensor FSDP shards (a DTensor); any other tensor, whole."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


@contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """The whole weights in ``model``'s modules for a pass outside the training step (the collapse
    monitor calls the encoder directly); a no-op unless FSDP shards it. Every rank must enter."""
    if not is_sharded(model):
        yield
        return
    # What the root's first forward does (idempotent): unshard() needs it, and the first collapse
    # monitor runs before the first training step.
    model._get_fsdp_state()._lazy_init()
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s state dict with whole tensors on the CPU, gathered from the shards of every rank
    onto global rank 0 (the others get an empty dict). Every rank must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def lost_peer(exc: BaseException) -> str | None:
    """What a collective said on this rank when another process of the run died (``exc`` raised
    by it), or None when ``exc`` is something else."""
    found = LOST_PEER.search(str(exc)) if dist.get_world_size() > 1 else None
    return found.group(0) if found else None


def ignore_launcher_sigterm() -> None:
    """Composer's launcher sends SIGTERM to every rank left once it sees one die: this rank already
    knows and is ending with the reason, which that signal must not replace (signal handlers live in
    the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
