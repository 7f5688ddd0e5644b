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

A *latent* objective predicts hidden states (the JEPA term, a data2vec-style plugin). It declares
``latent_score``, a :class:`LatentScore`: the metric it logs that says whether its predictions beat
the best constant, and that constant's value. It gives readout its rows (``latent_rows``: the
student state, predictions and targets at the positions it predicts) and computes its scores from
predictions and targets (``latent_metrics``). Run summaries, ``protjepa readout`` and the experiment
report read a latent term only through these; :meth:`Objective.latent_problem` and
:func:`latent_step_problem` check them before the first step (docs/extending.md).
"""
from __future__ import annotations

from typing import Annotated, Literal, NamedTuple, Union

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator
from torch import Tensor, nn

from protjepa.batch import Batch, gather_positions, mean_pool, row_mean
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
    """A no-grad target pass an objective reads: ``ctx.target(source, depth)`` is its hidden states [B, L, D]."""

    source: TargetSource
    depth: int  # resolved layer depth


class LatentScore(NamedTuple):
    """Which logged metric says that a latent term learns, and what the best constant prediction scores
    on it: the term learns when the metric ends above ``constant``. ``LatentScore("lift")`` and
    ``LatentScore("r2")`` (constant 0: :func:`latent_scores`), or an objective's own metric."""

    metric: str  # a key of the objective's metrics (ObjectiveOutput.metrics, and latent_metrics)
    constant: float = 0.0


class LatentRows(NamedTuple):
    """What readout reads of a latent objective on one batch, after the objective's forward on it."""

    index: Tensor  # [N] flat indices (into B*L) of the positions it predicts
    student: Tensor  # [N, Ds] the student state its predictions are made from
    predictions: Tensor  # [N, D] as its loss compares them (normalised as the loss normalises them)
    targets: Tensor  # [N, D] likewise


# What latent_scores computes; an objective whose latent score is another metric computes that in latent_metrics.
LATENT_SCORES = ("cosine", "cosine_of_mean", "lift", "r2")


def latent_scores(pred: Tensor, target: Tensor, weight: Tensor | None = None, *, r2: bool = True) -> dict[str, Tensor]:
    """How well ``pred`` [N, D] predicts ``target`` [N, D], beside the best constant prediction
    (over the rows of weight 1 when a ``weight`` [N] marks filler rows with 0).

    LayerNorm'd targets share a large common direction, so a cosine alone says little:
    ``cosine_of_mean`` is the mean cos(mean(t), t) over the rows (the constant prediction
    mean(t)'s score) and ``lift`` = cosine - cosine_of_mean (0 for the mean itself). With ``r2``
    also ``r2`` = 1 - sum |t - p|^2 / sum |t - mean(t)|^2 (0 for the mean, 1 for the target itself,
    below 0 for worse than the mean); leave it out where a loss leaves the predictions' scale free.
    """
    mean = row_mean(target, weight).unsqueeze(0)
    cosine = row_mean(F.cosine_similarity(pred, target, dim=-1), weight)
    cosine_of_mean = row_mean(F.cosine_similarity(target, mean, dim=-1), weight)
    scores = {"cosine": cosine, "cosine_of_mean": cosine_of_mean, "lift": cosine - cosine_of_mean}
    if r2:  # a ratio of sums over the rows, as one of means
        spread = row_mean((target - mean).square().sum(-1), weight).clamp_min(torch.finfo(target.dtype).tiny)
        scores["r2"] = 1 - row_mean((target - pred).square().sum(-1), weight) / spread
    return scores


def latent_text(score: LatentScore, values: dict[str, float | None], digits: int = 3) -> str:
    """``lift +0.061 (cosine 0.612, the mean target's 0.551)``: a latent term's score, with the scores of
    :func:`latent_scores` that ``values`` holds beside it; ``r2 not logged`` where it has no score."""
    value = values.get(score.metric)
    text = f"{score.metric} {'not logged' if value is None else format(value, f'+.{digits}f')}"
    beside = [f"cosine {values['cosine']:.{digits}f}"] if "cosine" in values and score.metric != "cosine" else []
    beside += [f"the mean target's {values['cosine_of_mean']:.{digits}f}"] if "cosine_of_mean" in values else []
    beside += [f"{k} {values[k]:+.{digits}f}" for k in ("lift", "r2") if k in values and k != score.metric]
    return text + (f" ({', '.join(beside)})" if beside else "")


class Objective(nn.Module):
    """Subclass, implement ``forward(ctx) -> ObjectiveOutput``, and register the class with
    its config (``@register_objective(name, config=...)``).

    What the model asks of an objective, besides ``forward``: the depths it reads
    (``student_layers``, ``target_requests``), the shared names it publishes and reads,
    ``ema_momentum``; a latent objective's ``latent_score``, ``latent_rows`` and ``latent_metrics``.
    """

    # The (start, end) momentum schedule of the EMA teacher it reads; None: it reads none.
    # The model keeps one teacher, so every objective that sets this must agree.
    ema_momentum: tuple[float, float] | None = None
    # A latent objective's score: the metric it logs that says whether its predictions beat the best
    # constant, and that constant (LatentScore); None: it predicts no latent target.
    latent_score: LatentScore | None = None
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

    def latent_rows(self, ctx: "StepContext") -> LatentRows:  # pragma: no cover - interface
        """A latent objective's rows on ``ctx``'s batch, after its forward on ``ctx`` (readout scores them)."""
        raise NotImplementedError

    def latent_metrics(self, predictions: Tensor, targets: Tensor, weight: Tensor | None = None) -> dict[str, Tensor]:
        """A latent objective's scores of ``predictions`` against ``targets`` (rows weighted by ``weight``): what it
        logs among its metrics, and readout computes over all its held-out rows. Default: :func:`latent_scores`."""
        return latent_scores(predictions, targets, weight)

    def latent_problem(self) -> str | None:
        """What a latent objective's declaration lacks (None: nothing), checked when the model is built."""
        score = self.latent_score
        if score is None:
            return None
        if not isinstance(score, LatentScore):
            return (f"latent_score is {score!r}, not a LatentScore: declare the metric and the constant it is "
                    "compared to, e.g. LatentScore('lift') or LatentScore('agreement', constant=0.5)")
        if type(self).latent_rows is Objective.latent_rows:
            return (f"declares the latent score {score.metric} but no latent_rows(ctx): the student state, "
                    "predictions and targets readout scores")
        if score.metric not in LATENT_SCORES and type(self).latent_metrics is Objective.latent_metrics:
            return (f"its latent score {score.metric} is none of {', '.join(LATENT_SCORES)} (what the default "
                    "latent_metrics computes): compute it in latent_metrics")
        return None

    def forward(self, ctx: "StepContext") -> ObjectiveOutput:  # pragma: no cover - interface
        raise NotImplementedError


def latent_step_problem(objective: Objective, ctx: "StepContext", metrics: dict[str, Tensor]) -> str | None:
    """What a latent objective failed to give on a step it ran on ``ctx``, whose ``metrics`` (the model's,
    ``<id>/<key>``) it logged: its score among them, ``latent_rows`` of matching shapes, its score from
    ``latent_metrics`` of those rows. None: nothing (or it declares no latent score)."""
    score, id = objective.latent_score, objective.id
    if score is None:
        return None
    logged = sorted(key.removeprefix(f"{id}/") for key in metrics if key.startswith(f"{id}/"))
    if f"{id}/{score.metric}" not in metrics:
        return (f"declares the latent score {score.metric}, but logs no {id}/{score.metric} (it logs "
                f"{', '.join(logged)}): add latent_metrics(predictions, targets) to its metrics")
    rows = objective.latent_rows(ctx)
    if not isinstance(rows, LatentRows):
        return f"latent_rows returned a {type(rows).__name__}, not a LatentRows"
    n = rows.index.shape[0]
    shapes = {name: tuple(getattr(rows, name).shape) for name in ("index", "student", "predictions", "targets")}
    if rows.index.dim() != 1 or any(len(s) != 2 or s[0] != n for k, s in shapes.items() if k != "index") \
            or shapes["predictions"] != shapes["targets"]:
        return ("latent_rows gives rows of shapes " + ", ".join(f"{k} {list(s)}" for k, s in shapes.items())
                + ": expected index [N], student [N, Ds], predictions and targets [N, D]")
    if score.metric not in objective.latent_metrics(rows.predictions.float(), rows.targets.float()):
        return f"latent_metrics of its latent_rows gives no {score.metric}, its latent score"
    return None


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
