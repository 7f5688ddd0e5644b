"""The encoder plus the weighted sum of objectives: what one training step computes."""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor, nn

from protjepa.attention import AttentionLayout
from protjepa.batch import Batch
from protjepa.encoders.base import Encoder
from protjepa.flops import FORWARD_BACKWARD, BatchCounts
from protjepa.objectives.base import LatentScore, Objective, ObjectiveError, StepContext, latent_step_problem


def contract_error(id: str, objective: Objective, problem: str) -> str:
    return f"objectives: {id} ({type(objective).__name__}): {problem} (docs/extending.md, 'A latent objective')"


class StepOutput(NamedTuple):
    loss: Tensor
    metrics: dict[str, Tensor]


class ProtJEPA(nn.Module):
    """``loss = sum_i weight_i * objective_i(ctx)`` over one shared :class:`StepContext`.

    Holds the EMA teacher when an objective asks for one; ``ema_update`` moves it
    towards the student by ``1 - momentum`` with fused foreach ops.
    """

    def __init__(
        self,
        encoder: Encoder,
        objectives: list[tuple[str, float, Objective]],
        ema_momentum: tuple[float, float] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.ids = [id for id, _, _ in objectives]
        self.weights = [float(w) for _, w, _ in objectives]
        self.objectives = nn.ModuleList([obj for _, _, obj in objectives])
        for id, objective in zip(self.ids, self.objectives):
            problem = objective.latent_problem()
            if problem:
                raise ObjectiveError(contract_error(id, objective, problem))
        self.ema_momentum = ema_momentum
        self.teacher: Encoder | None = None
        if ema_momentum is not None:
            self.teacher = copy.deepcopy(encoder).requires_grad_(False).eval()
        student_layers: set[int] = set()
        target_depths: dict[str, set[int]] = {}
        for obj in self.objectives:
            student_layers |= obj.student_layers()
            for req in obj.target_requests():
                target_depths.setdefault(req.source, set()).add(req.depth)
        self.student_layers = student_layers
        self.target_depths = target_depths

    def context(self, batch: Batch) -> StepContext:
        return StepContext(
            batch,
            self.encoder,
            self.teacher,
            self.student_layers,
            self.target_depths,
            layout=AttentionLayout.from_batch(batch),
        )

    def forward(self, batch: Batch) -> StepOutput:
        return self.losses(self.context(batch))

    def losses(self, ctx: StepContext) -> StepOutput:
        """The weighted sum of the objectives on ``ctx``; afterwards ``ctx.shared`` holds what they published."""
        total = None
        metrics: dict[str, Tensor] = {}
        for id, weight, objective in zip(self.ids, self.weights, self.objectives):
            out = objective(ctx)
            # Not "* 1.0": inductor (torch 2.14) drops that product, and an output aliasing the loss
            # beside its detached copy (the logged metric) came back without a grad_fn.
            term = out.loss if weight == 1.0 else out.loss * weight
            total = term if total is None else total + term
            metrics[f"{id}/loss"] = out.loss.detach()
            for key, value in out.metrics.items():
                metrics[f"{id}/{key}"] = value
        metrics["loss"] = total.detach()
        return StepOutput(total, metrics)

    def latent_scores(self) -> dict[str, LatentScore]:
        """Latent objective id -> its score: the metric saying whether it beats the best constant, and that constant."""
        return {id: obj.latent_score for id, obj in zip(self.ids, self.objectives) if obj.latent_score is not None}

    def check_latent_contract(self, ctx: StepContext, metrics: dict[str, Tensor]) -> None:
        """One line naming the first latent objective that did not give, on the step it ran on ``ctx`` with
        these ``metrics``, what summaries and readout read of it (:func:`latent_step_problem`)."""
        for id, objective in zip(self.ids, self.objectives):
            problem = latent_step_problem(objective, ctx, metrics)
            if problem:
                raise ObjectiveError(contract_error(id, objective, problem))

    def flop_parts(self, counts: BatchCounts) -> dict[str, float | None]:
        """Matmul FLOPs of one training step on a batch of ``counts``, by part: the student
        encoder (forward and backward), each no-grad target pass (forward only, to the deepest
        layer asked of it), each objective's own work. None where a part cannot count its own."""
        student = self.encoder.forward_flops(counts, self.encoder.num_layers)
        parts = {f"encoder {type(self.encoder).__name__}": None if student is None else FORWARD_BACKWARD * student}
        for source, depths in self.target_depths.items():
            net = self.encoder if source == "student" else self.teacher
            parts[f"target pass ({source})"] = net.forward_flops(counts, max(depths))
        rows = StepContext.feature_rows(counts)
        for id, objective in zip(self.ids, self.objectives):
            parts[f"objective {id}"] = objective.flops(counts, rows, self.encoder)
            rows.update(objective.published_rows(counts))
        return parts

    def uncounted_parts(self) -> list[str]:
        """The parts of :meth:`flop_parts` that cannot count their FLOPs (any sizes tell which)."""
        return [part for part, flops in self.flop_parts(BatchCounts(0, 0, 0, 0, 0)).items() if flops is None]

    def count_encoder_flops(self) -> str | None:
        """Where the encoder declares no FLOP count (a ``_component_`` module, a plugin), count it with torch's
        FlopCounterMode (:meth:`Encoder.count_flops`, for the depths the step runs it to; the teacher shares the
        count), and say so in one line; None when it declares its counts. A module the counter cannot run stays
        uncounted, and the line says why (a FLOP budget is then refused)."""
        zero = BatchCounts(0, 0, 0, 0, 0)
        depths = {self.encoder.num_layers} | {max(d) for d in self.target_depths.values()}
        lm_head = self.encoder.has_lm_head
        if all(self.encoder.forward_flops(zero, d) is not None for d in depths) and \
                (not lm_head or self.encoder.lm_head_flops(0) is not None):
            return None
        name = type(self.encoder).__name__
        try:
            counted = self.encoder.count_flops(depths)
        except Exception as exc:  # noqa: BLE001 - any module's failure: the run goes on, uncounted
            return f"model FLOPs of {name}: not counted (it declares no count, and FlopCounterMode raised " \
                   f"{type(exc).__name__}: {exc})"
        for net in (self.encoder, self.teacher):
            if net is not None:
                net.counted = counted
        full = counted.forward[self.encoder.num_layers]
        return (f"model FLOPs of {name}: it declares no count; counted by torch's FlopCounterMode on sample sequences "
                f"in {counted.seconds:.2f} s: a forward {full.per_token:.3g} a token + {full.per_pair:.3g} an attending "
                f"pair" + (f" + {full.per_sequence:.3g} a sequence" if full.per_sequence else "")
                + (f", the LM head {counted.lm_head:.3g} a position" if counted.lm_head is not None else ""))

    def step_flops(self, counts: BatchCounts) -> float | None:
        """The sum of :meth:`flop_parts`; None when a part cannot count its FLOPs."""
        parts = list(self.flop_parts(counts).values())
        return None if None in parts else sum(parts)

    def momentum_at(self, progress: float) -> float:
        """EMA momentum after ``progress`` (fraction of the budget, 0..1): linear start -> end."""
        start, end = self.ema_momentum  # type: ignore[misc]
        return start + (end - start) * min(max(progress, 0.0), 1.0)

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, one fused op per dtype group."""
        if self.teacher is None:
            return
        teacher = [p for p in self.teacher.parameters()]
        student = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)
        for tb, sb in zip(self.teacher.buffers(), self.encoder.buffers()):
            tb.copy_(sb)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher is never trained directly
        return self
