"""``protjepa.model.ProtJEPA`` as a Composer model."""
from __future__ import annotations

import torch
from composer.models import ComposerModel

from protjepa.batch import Batch
from protjepa.model import ProtJEPA, StepOutput
from protjepa.precision import bf16_autocast


class ComposerProtJEPA(ComposerModel):
    """``forward`` runs the encoder and every objective once; ``loss`` is their weighted total.

    The per-objective losses and metrics stay on the device in ``StepOutput.metrics``;
    :class:`protjepa.training.runlog.MetricsLog` averages them between log intervals.
    """

    def __init__(self, model: ProtJEPA, cpu_bf16: bool = False):
        super().__init__()
        self.model = model
        # Composer's amp_bf16 does not autocast on a CPU: where bf16 is wanted there, we do.
        # Only the forward: the objectives compute their losses in fp32, and the backward,
        # the optimizer step and the EMA update run outside the autocast on fp32 weights.
        self.cpu_bf16 = cpu_bf16

    def forward(self, batch: Batch) -> StepOutput:
        # The batch is already on the model's device (the training DataSpec moves it): moving it
        # here would put its host-side ints under torch.compile's guards, a recompilation per batch.
        with bf16_autocast("cpu", enabled=self.cpu_bf16):
            return self.model(batch)

    def loss(self, outputs: StepOutput, batch: Batch) -> torch.Tensor:
        # A copy: Composer rescales the loss in place, which would also rescale the logged
        # ``metrics["loss"]`` (a detached view of the same storage).
        return outputs.loss.clone()


def unwrap(model: torch.nn.Module) -> ProtJEPA:
    """The ``ProtJEPA`` inside Composer's model, through a DDP wrapper when there is one."""
    module = getattr(model, "module", model)
    return module.model
