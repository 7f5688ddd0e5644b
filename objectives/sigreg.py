"""SIGReg (LeJEPA, Balestriero & LeCun 2025): push random 1-D projections of the rows
towards N(0, 1) with the Epps-Pulley statistic.

For each unit direction ``a`` the statistic compares the empirical characteristic
function of ``x @ a`` with the standard normal's, exp(-t^2/2):

    EP = N * integral_{-T}^{T} |mean_n exp(i t x_n a) - exp(-t^2/2)|^2 exp(-t^2/2) dt

As in LeJEPA's reference code, only t in [0, T] is evaluated (the integrand is even) with
trapezoid weights doubled, and the loss is the mean over directions. The directions are new
each training step, a function of the step count alone (``counter_normal``): the same on
every rank and after a resume, and drawn inside a compiled step's graph.

``scale: samples`` (the default) keeps LeJEPA's factor N: the test statistic, about 1 under
the null whatever N is, so at equilibrium it sits on an MLM loss's scale. Near a collapsed
input the statistic is flat (d cos(tx)/dx ~ t^2 x), and only the factor N makes the push
outwards strong enough to win against the other terms: ``scale: mean`` (the distance
without N) sends each row an N-times weaker gradient and, next to MLM and the latent loss,
left the predictions collapsed (docs/results.md, "Anti-collapse"). ``mean`` is kept to
reproduce runs made with it. The N-scaled statistic is large on collapsed rows (~155 on
~400 masked rows at initialisation); the shipped recipes weight it 0.05, LeJEPA's own
weight, which keeps the weighted term on MLM's scale after the first steps (measured in
docs/results.md, "Anti-collapse").

On several ranks (DDP, FSDP) the characteristic function is that of every rank's rows and N
their number while training (``objectives/ranks.py``): the statistic of the global batch.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from protjepa.batch import row_std
from protjepa.encoders.base import Encoder
from protjepa.flops import linear
from protjepa.objectives.base import ObjectiveOutput, Regularizer, RegularizerConfig
from protjepa.objectives.ranks import batch_sum
from protjepa.registry import register_objective


class SIGRegConfig(RegularizerConfig):
    num_directions: int = Field(256, ge=1)
    knots: int = Field(17, ge=2, description="integration points on [0, t_max]")
    t_max: float = Field(3.0, gt=0)
    scale: Literal["samples", "mean"] = Field(
        "samples", description="samples: LeJEPA's N x statistic; mean: without N (inert near collapse)"
    )


MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2^32 for int64 ``x`` < 2^32, in 16-bit halves of ``c``: no product leaves int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def _hash32(x: Tensor) -> Tensor:
    """C. Wellons' lowbias32 integer hash of the low 32 bits of int64 ``x``."""
    x = x & MASK32
    x = _mul32(x ^ (x >> 16), 0x7FEB352D)
    x = _mul32(x ^ (x >> 15), 0x846CA68B)
    return x ^ (x >> 16)


def counter_normal(step: Tensor, shape: tuple[int, int], device: torch.device) -> Tensor:
    """Standard normal samples of ``shape``, a function of ``step`` (an int64 tensor) and their place
    only: a counter-based generator (a 32-bit hash of each place, keyed by the step's hash, then
    Box-Muller). Every rank draws the same, a resumed run too, and torch.compile traces it into its
    graph (a seeded torch.Generator breaks the graph, and its seed, a host int, recompiles it)."""
    n = shape[0] * shape[1]
    key = _hash32(step.to(device) + 0x9E3779B9)
    bits = _hash32(_hash32(torch.arange(2 * n, device=device)) ^ key)
    u1, u2 = ((bits.double() + 0.5) / 2.0**32).view(2, n)  # uniform on (0, 1)
    return ((-2 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)).float().view(shape)


def characteristic_sums(projections: Tensor, t: Tensor, weight: Tensor | None = None) -> Tensor:
    """``projections`` [N, K] -> [2, K, knots]: the sums over the rows of cos(t x) and sin(t x),
    each row's terms times its ``weight`` [N] when given (0: static shapes' filler)."""
    xt = projections.unsqueeze(-1) * t  # [N, K, knots]
    if weight is None:
        return torch.stack([xt.cos().sum(0), xt.sin().sum(0)])
    weight = weight.view(-1, 1, 1)
    return torch.stack([(xt.cos() * weight).sum(0), (xt.sin() * weight).sum(0)])


def epps_pulley(sums: Tensor, rows: Tensor, phi: Tensor, weights: Tensor, scale_by_samples: bool = True) -> Tensor:
    """The Epps-Pulley statistic of each direction [K] from the :func:`characteristic_sums` of
    ``rows`` rows (without the factor N when ``scale_by_samples`` is false)."""
    cos_mean, sin_mean = sums / rows
    err = (cos_mean - phi).square() + sin_mean.square()
    distance = err @ weights
    return distance * rows if scale_by_samples else distance


@register_objective("sigreg", config=SIGRegConfig)
class SIGReg(Regularizer):
    """Epps-Pulley normality test on random 1-D projections (LeJEPA's SIGReg)."""

    weighs_masked_rows = True

    def __init__(self, config: SIGRegConfig, encoder: Encoder, key: str):
        super().__init__(config, encoder, key)
        t = torch.linspace(0, config.t_max, config.knots, dtype=torch.float64)
        dt = config.t_max / (config.knots - 1)
        weights = torch.full_like(t, 2 * dt)  # trapezoid on [0, T], doubled for [-T, 0]
        weights[[0, -1]] = dt
        phi = (-t.square() / 2).exp()
        self.register_buffer("t", t.float(), persistent=False)
        self.register_buffer("phi", phi.float(), persistent=False)
        self.register_buffer("weights", (weights * phi).float(), persistent=False)
        # The training step, which the directions are a function of: a buffer, so it is checkpointed
        # and stays on the device (counted there: no host sync, nothing that recompiles a graph).
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def directions(self, dim: int, device: torch.device) -> Tensor:
        """The unit directions [dim, K] of the current step."""
        a = counter_normal(self.step, (dim, self.config.num_directions), device)
        return a / a.norm(dim=0)

    def matmul_flops(self, rows: int, width: int) -> float:
        # The projections onto the directions; then the integral, a [K, knots] x [knots] product.
        directions = self.config.num_directions
        return linear(rows, width, directions) + linear(directions, self.config.knots, 1)

    def regularize(self, x: Tensor, weight: Tensor | None = None) -> ObjectiveOutput:
        projections = x @ self.directions(x.shape[-1], x.device)
        sums = characteristic_sums(projections, self.t, weight)
        rows = x.new_full((1,), x.shape[0]) if weight is None else weight.sum(0, keepdim=True)
        # With the row count, one all-reduce over every rank's rows while training (objectives/ranks.py).
        total = batch_sum(torch.cat([sums.flatten(), rows]), self.training)
        statistic = epps_pulley(total[:-1].view_as(sums), total[-1], self.phi, self.weights,
                                self.config.scale == "samples")
        if self.training:
            self.step.add_(1)
        # std: the spread of this rank's own rows (the log shows its mean over the ranks).
        return ObjectiveOutput(statistic.mean(), {"std": row_std(x.detach(), weight).mean()})
