"""``protjepa.model.ProtJEPA`` as a Composer model."""
from __future__ import annotations

import torch
from composer.models import ComposerModel

from protjepa.batch import Batch
from protjepa.model import ProtJEPA, StepOutput


class ComposerProtJEPA(ComposerModel):
    """``forward`` runs the encoder and every objective once; ``loss`` is their weighted total.

    The per-objective losses and metrics stay on the device in ``StepOutput.metrics``;
    :class:`protjepa.training.runlog.MetricsLog` averages them between log intervals.
    """

    def __init__(self, model: ProtJEPA):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> StepOutput:
        # Composer moves tensors, not dataclasses, to the device: the batch moves itself.
        return self.model(batch.to(self.model.encoder.device))

    def loss(self, outputs: StepOutput, batch: Batch) -> torch.Tensor:
        # A copy: Composer rescales the loss in place, which would also rescale the logged
        # ``metrics["loss"]`` (a detached view of the same storage).
        return outputs.loss.clone()


def unwrap(model: torch.nn.Module) -> ProtJEPA:
    """The ``ProtJEPA`` inside Composer's model, through a DDP wrapper when there is one."""
    module = getattr(model, "module", model)
    return module.model
