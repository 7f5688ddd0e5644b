"""What an objective is: a config, a module, and the step context it reads from.

An objective never runs the encoder itself. It declares which hidden states it needs
(student layers, target layers from the stop-gradient copy or the EMA teacher), and the
:class:`StepContext` computes each pass once per step, however many objectives read it.
Objectives may also publish tensors (e.g. the JEPA predictions) for later objectives
(the anti-collapse regularisers) under a name, on ``ctx.shared``.

Under static shapes (``data.static_shapes``) ``masked_index`` ends in filler entries, and
every row gathered at the masked positions carries a weight (``ctx.row_weight``: 1 real,
0 filler) that an objective's means and sums must apply; only objectives that say they
do (``weighs_masked_rows``) train on such batches.
"""
from __future__ import annotations

from typing import Annotated, Literal, NamedTuple, Union

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator
from torch import Tensor, nn

from protjepa.batch import Batch, gather_positions, mean_pool
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.errors import UserError
from protjepa.flops import FORWARD_BACKWARD, BatchCounts


def _layer_spec(value):
    # One message for the union (pydantic would report each member separately).
    if value in ("last", "half") or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"expected last|half|<int>, got {value!r}")


_Layer = Union[Literal["last", "half"], int]
LayerSpec = Annotated[_Layer, PlainValidator(_layer_spec, json_schema_input_type=_Layer)]
TargetSource = Literal["student", "ema"]


class ObjectiveError(UserError, ValueError):
    """An objective that cannot be built on this encoder (e.g. a layer it does not have)."""


class ObjectiveConfig(BaseModel):
    """Base of every objective's config. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ObjectiveOutput(NamedTuple):
    loss: Tensor  # scalar, unweighted
    metrics: dict[str, Tensor]  # scalars, detached; logged as "<id>/<key>"


class TargetRequest(NamedTuple):
    source: TargetSource
    depth: int  # resolved layer depth


class Objective(nn.Module):
    """Subclass, implement ``forward(ctx) -> ObjectiveOutput``, and register the class with
    its config (``@register_objective(name, config=...)``).

    What the model asks of an objective, besides ``forward``: the depths it reads
    (``student_layers``, ``target_requests``), the shared names it publishes and reads,
    ``ema_momentum`` and ``latent_score``.
    """

    # The (start, end) momentum schedule of the EMA teacher it reads; None: it reads none.
    # The model keeps one teacher, so every objective that sets this must agree.
    ema_momentum: tuple[float, float] | None = None
    # The metric it logs that says whether its latent prediction beats a constant (``lift``, ``r2``);
    # None: it predicts no latent target. Run summaries and experiment reports read it.
    latent_score: str | None = None
    # Whether its means and sums over masked-position rows apply their weights (``ctx.row_weight``):
    # a recipe with static shapes refuses an objective that does not.
    weighs_masked_rows: bool = False

    def __init__(self, config: ObjectiveConfig, encoder: Encoder, id: str):
        super().__init__()
        self.config = config
        self.id = id  # the recipe entry's id (default: its name); prefixes its metrics and what it publishes

    def resolve_layer(self, encoder: Encoder, layer: int | str, field: str) -> int:
        """``encoder.resolve_layer`` with an error that names this objective's config field."""
        try:
            return encoder.resolve_layer(layer)
        except ValueError as exc:
            raise ObjectiveError(f"objectives: {self.id}.{field}: {exc}") from None

    def student_layers(self) -> set[int]:
        """Depths of the student forward this objective reads (besides the final output)."""
        return set()

    def target_requests(self) -> set[TargetRequest]:
        """Target passes (on the unmasked sequence, no gradient) this objective reads."""
        return set()

    @classmethod
    def publishes(cls, config: ObjectiveConfig, id: str) -> set[str]:
        """Names this objective puts on ``ctx.shared`` (e.g. ``jepa.pred``), known from its config."""
        return set()

    @classmethod
    def reads(cls, config: ObjectiveConfig) -> dict[str, str]:
        """Config field -> shared name it reads; ``student.*`` names are always available."""
        return {}

    @classmethod
    def static_shapes_problem(cls, config: ObjectiveConfig) -> str | None:
        """Why it cannot train on batches of static shapes (``data.static_shapes``); None: it can."""
        if not cls.weighs_masked_rows:
            return f"{cls.__name__} does not weigh the filler rows of masked positions (weighs_masked_rows)"
        return None

    def flops(self, counts: BatchCounts, rows: dict[str, int], encoder: Encoder) -> float | None:
        """Matmul FLOPs of this objective's own work in one training step, forward and backward
        (the encoder passes it reads are counted by the model). ``rows`` holds the row count of
        every feature it may read (``student.*`` and what earlier objectives publish). None: it
        cannot count them, and a FLOP budget refuses the recipe."""
        return None

    def published_rows(self, counts: BatchCounts) -> dict[str, int]:
        """Row counts of the tensors it publishes (for the FLOPs of the objectives that read them)."""
        return {}

    def forward(self, ctx: "StepContext") -> ObjectiveOutput:  # pragma: no cover - interface
        raise NotImplementedError


class StepContext:
    """One training step's shared work: one student forward, one target forward per source.

    ``student`` runs the encoder on the corrupted inputs with gradients, returning every
    depth any objective asked for. ``target(source)`` runs the unmasked sequence through
    the student's own weights or the EMA teacher under ``no_grad``, stopping at the
    deepest layer asked of that source.
    """

    def __init__(
        self,
        batch: Batch,
        encoder: Encoder,
        teacher: Encoder | None,
        student_layers: set[int],
        target_depths: dict[str, set[int]],
        layout=None,
    ):
        self.batch = batch
        self.encoder = encoder
        self.teacher = teacher
        self.layout = layout
        self._student_layers = sorted(student_layers)
        self._target_depths = {k: sorted(v) for k, v in target_depths.items()}
        self._student: EncoderOutput | None = None
        self._targets: dict[str, EncoderOutput] = {}
        self.shared: dict[str, Tensor] = {}
        self.shared_weight: dict[str, Tensor | None] = {}

    @property
    def student(self) -> EncoderOutput:
        if self._student is None:
            self._student = self.encoder(
                self.batch.inputs, self.batch.padding_mask, layout=self.layout, layers=self._student_layers
            )
        return self._student

    def target(self, source: str, depth: int) -> Tensor:
        out = self._targets.get(source)
        if out is None:
            net = self.encoder if source == "student" else self.teacher
            if net is None:
                raise RuntimeError("an objective asked for the EMA teacher, but the model has none")
            depths = self._target_depths[source]
            with torch.no_grad():
                out = net(
                    self.batch.tokens, self.batch.padding_mask, layout=self.layout, layers=depths, stop_at=max(depths)
                )
            self._targets[source] = out
        return out.layers[depth]

    def student_layer(self, depth: int) -> Tensor:
        return self.student.layers[depth]

    STUDENT_FEATURES = ("student.masked", "student.residues", "student.pooled")

    @staticmethod
    def feature_rows(counts: BatchCounts) -> dict[str, int]:
        """Rows of each student feature (see ``get``) in a batch of ``counts``."""
        return {"student.masked": counts.masked, "student.residues": counts.residues,
                "student.pooled": counts.sequences}

    def get(self, name: str) -> Tensor:
        """A published tensor, or a student feature: final hidden states at the masked
        positions [N, D], at every residue [T, D], or mean-pooled per sequence [S, D]."""
        if name in self.shared:
            return self.shared[name]
        if name == "student.masked":
            return gather_positions(self.student.last, self.batch.masked_index)
        if name == "student.residues":
            return gather_positions(self.student.last, self.batch.residue_index)
        if name == "student.pooled":
            return mean_pool(self.student.last, self.batch)
        raise KeyError(f"{name!r} was not published by an earlier objective")

    def publish(self, name: str, rows: Tensor, weight: Tensor | None = None) -> None:
        """Put ``rows`` on ``shared`` under ``name``, with their weights when they are masked-position rows."""
        self.shared[name] = rows
        self.shared_weight[name] = weight

    def row_weight(self, name: str) -> Tensor | None:
        """The weights of the rows of ``get(name)`` (the batch's ``masked_weight`` at masked positions
        under static shapes); None: every row counts fully."""
        if name in self.shared_weight:
            return self.shared_weight[name]
        return self.batch.masked_weight if name == "student.masked" else None


def _feature_name(name: str) -> str:
    if name.startswith("student.") and name not in StepContext.STUDENT_FEATURES:
        raise ValueError(f"expected {'|'.join(StepContext.STUDENT_FEATURES)} or a published name like jepa.pred")
    return name


FeatureName = Annotated[str, AfterValidator(_feature_name)]


class RegularizerConfig(ObjectiveConfig):
    input: FeatureName = Field("jepa.pred", description="a published tensor (<id>.pred) or a student.* feature")


class Regularizer(Objective):
    """An anti-collapse term on the rows [N, D] of the tensor named by ``config.input``.

    Subclasses implement ``regularize(x)``; it runs in float32 with autocast off, since
    variances, covariances and characteristic functions lose too much in bf16.
    """

    @classmethod
    def reads(cls, config: RegularizerConfig) -> dict[str, str]:
        return {"input": config.input}

    def flops(self, counts: BatchCounts, rows: dict[str, int], encoder: Encoder) -> float | None:
        forward = self.matmul_flops(rows[self.config.input], encoder.embed_dim)
        return None if forward is None else FORWARD_BACKWARD * forward

    def matmul_flops(self, rows: int, width: int) -> float | None:
        """Forward matmul FLOPs of ``regularize`` on [rows, width]; None: not counted."""
        return None

    @classmethod
    def static_shapes_problem(cls, config: RegularizerConfig) -> str | None:
        if config.input in ("student.residues", "student.pooled"):
            return f"input {config.input} has a row count that changes per batch"
        return super().static_shapes_problem(config)

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        x = ctx.get(self.config.input)  # outside the fp32 region: this may run the student forward
        weight = ctx.row_weight(self.config.input)
        with torch.autocast(x.device.type, enabled=False):
            # The weights go only to regularisers that weigh masked rows (the only ones static shapes allow).
            return self.regularize(x.float()) if weight is None else self.regularize(x.float(), weight)

    def regularize(self, x: Tensor, weight: Tensor | None = None) -> ObjectiveOutput:  # pragma: no cover
        """The term on rows ``x`` [N, D] (float32); ``weight`` [N] (1 real row, 0 filler) under static shapes."""
        raise NotImplementedError
