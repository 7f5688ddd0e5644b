"""ESM-2, exactly: the architecture of fair-esm's ``esm.model.esm2.ESM2``.

Pre-LayerNorm transformer blocks (LayerNorm eps 1e-5), rotary position embeddings of
the rotate-half kind on q and k, an erf GELU feed-forward of 4x width, a final
LayerNorm, and an LM head tied to the token embeddings. Module names are fair-esm's,
so its state dicts load by name (see :mod:`protjepa.encoders.weights`).

Two additions for training: packed rows (rotary positions restart at every packed
sequence, attention stays inside it, token dropout counts masks per sequence) and a
choice of attention backend (:mod:`protjepa.attention`).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from protjepa.alphabet import ESM_ALPHABET, Alphabet
from protjepa.attention import AttentionLayout, Backend, attend, backend_for, query_key_dtype
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.flops import BatchCounts, attention, linear
from protjepa.registry import register_encoder

LAYER_NORM_EPS = 1e-5
ROTARY_BASE = 10000.0
# Token dropout rescales embeddings as if this fraction had been zeroed: ESM-2 was trained
# with 15% of tokens selected and 80% of those set to <mask>.
MASK_RATIO_TRAIN = 0.15 * 0.8

PRESETS: dict[str, dict[str, int]] = {
    "esm2_8m": dict(num_layers=6, embed_dim=320, attention_heads=20),
    "esm2_35m": dict(num_layers=12, embed_dim=480, attention_heads=20),
    "esm2_150m": dict(num_layers=30, embed_dim=640, attention_heads=20),
    "esm2_650m": dict(num_layers=33, embed_dim=1280, attention_heads=20),
}


class ESM2Config(BaseModel):
    """``encoder: {name: esm2, preset: esm2_35m}``; explicit sizes override the preset's, and then the
    resolved config (a run's ``recipe.yaml``, its model card) names no preset."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["esm2_8m", "esm2_35m", "esm2_150m", "esm2_650m"] | None = None
    num_layers: int | None = Field(None, ge=1)
    embed_dim: int | None = Field(None, ge=2)
    attention_heads: int | None = Field(None, ge=1)
    token_dropout: bool = True
    attention: Backend = "auto"

    @model_validator(mode="after")
    def _sizes(self):
        preset = PRESETS.get(self.preset or "", {})
        for name in ("num_layers", "embed_dim", "attention_heads"):
            if getattr(self, name) is None:
                if name not in preset:
                    raise ValueError(f"give a preset ({'|'.join(PRESETS)}) or {name}")
                setattr(self, name, preset[name])
        if any(getattr(self, name) != value for name, value in preset.items()):
            self.preset = None  # sizes that override it make another model: the resolved recipe does not name it
        if self.embed_dim % self.attention_heads or (self.embed_dim // self.attention_heads) % 2:
            raise ValueError(
                f"embed_dim {self.embed_dim} must split into {self.attention_heads} heads of even size (rotary)"
            )
        return self


# --------------------------------------------------------------------------- rotary


# Rotary as one complex product: fair-esm rotates the dimension pair (i, i + Dh/2) of each head
# ("rotate half"). The q and k projections' output rows are permuted within each head so that
# those pairs sit side by side, (x_i, x_{i+Dh/2}) = one complex number, and the rotation is a
# multiplication by e^(i angle): one vectorised op forward and one backward, instead of a
# split, a concatenation and four products over 16-wide pieces. q . k is unchanged by a
# permutation applied to both; v and the weights as stored (fair-esm's) are untouched.


def pair_halves(embed_dim: int, heads: int) -> Tensor:
    """The row order that puts each head's dimension i next to i + Dh/2: [0, h, 1, h + 1, ...] per head."""
    head_dim, half = embed_dim // heads, embed_dim // heads // 2
    within = torch.arange(head_dim).view(2, half).t().flatten()  # 0, h, 1, h + 1, ...
    return (torch.arange(heads)[:, None] * head_dim + within).flatten()


def rotary_tables(positions: Tensor, heads: int, head_dim: int, query_scale: float = 1.0) -> Tensor:
    """(cos, sin) of the angles for positions [B|1, L], fp32 [B|1, L, 2, H, Dh/2, 2]: a complex
    e^(i angle) stored as its real and imaginary parts (inductor compiles no complex tensors).
    Index 0 of dim 2 rotates queries (times ``query_scale``: ESM scales q before the rotation,
    which is linear), 1 keys; spelled out over the heads so the product runs over long rows."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / ROTARY_BASE**exponents
    angles = positions.float()[:, :, None, None, None] * inv_freq  # [B|1, L, 1, 1, Dh/2]
    scale = torch.tensor([query_scale, 1.0], device=positions.device)[:, None, None, None]  # [2, 1, 1, 1]
    table = torch.stack((angles.cos(), angles.sin()), dim=-1) * scale  # [B|1, L, 2, 1, Dh/2, 2]
    return table.expand(-1, -1, -1, heads, -1, -1).contiguous()


def apply_rotary(x: Tensor, table: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Rotary embedding of x [..., Dh] whose dimension pairs sit side by side (:func:`pair_halves`),
    computed in fp32, returned in ``dtype`` (default: x's)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():  # inductor has no complex kernels: the same product in reals, fused
        (a, b), (cos, sin) = pairs.unbind(-1), table.unbind(-1)
        rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    else:  # one complex product: a single vectorised op, forward and backward
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(table))
    return rotated.flatten(-2).to(dtype or x.dtype)


# --------------------------------------------------------------------------- modules


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = embed_dim // heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.register_buffer("paired_rows", pair_halves(embed_dim, heads), persistent=False)

    def forward(self, x: Tensor, rope: Tensor, layout: AttentionLayout, backend: Backend) -> Tensor:
        rows, length, _ = x.shape
        # q, k and v as one product (fair-esm's three weights concatenated, q's and k's rows paired
        # for the rotation): under autocast x is cast once, not three times, and one wider matrix
        # product runs faster than three.
        pairs = self.paired_rows
        weight = torch.cat((self.q_proj.weight[pairs], self.k_proj.weight[pairs], self.v_proj.weight))
        bias = torch.cat((self.q_proj.bias[pairs], self.k_proj.bias[pairs], self.v_proj.bias))
        qkv = F.linear(x, weight, bias).view(rows, length, 3, self.heads, self.head_dim)
        qk, v = qkv.split((2, 1), dim=2)  # (not slices: their backward fills zeros first)
        # q and k rotated together; rope carries q's scaling (ESM scales before the rotation).
        q, k = apply_rotary(qk, rope, query_key_dtype(backend, qk.dtype)).unbind(2)  # [B, L, H, Dh] views
        v = v.squeeze(2)
        # Attention sees [B, H, L, Dh] views of them, transposed without a copy.
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layout, backend)
        return self.out_proj(out.transpose(1, 2).reshape(rows, length, -1))


class TransformerLayer(nn.Module):
    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(embed_dim, 4 * embed_dim)
        self.fc2 = nn.Linear(4 * embed_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor, rope: Tensor, layout: AttentionLayout, backend: Backend) -> Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), rope, layout, backend)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class LMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> projection onto the (tied) token embeddings, plus a bias."""

    def __init__(self, embed_dim: int, weight: nn.Parameter):
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(weight.shape[0]))

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(hidden))), self.weight) + self.bias


class ESM2(Encoder):
    """fair-esm's ESM2: token embeddings, ``num_layers`` pre-LN blocks, a final LayerNorm, a tied LM head."""

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        attention_heads: int,
        *,
        token_dropout: bool = True,
        attention: Backend = "auto",
        alphabet: Alphabet = ESM_ALPHABET,
    ):
        super().__init__()
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.attention_heads = attention_heads
        self.token_dropout = token_dropout
        self.attention = attention
        self.alphabet = alphabet
        self.embed_tokens = nn.Embedding(len(alphabet), embed_dim, padding_idx=alphabet.pad_idx)
        self.layers = nn.ModuleList([TransformerLayer(embed_dim, attention_heads) for _ in range(num_layers)])
        self.emb_layer_norm_after = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.lm_head = LMHead(embed_dim, self.embed_tokens.weight)
        self.apply(_init_weights)

    @property
    def lm_head(self) -> LMHead:
        # A property because Encoder.lm_head is a method; the module keeps fair-esm's name.
        return self._modules["lm_head"]

    def forward(
        self,
        tokens: Tensor,
        padding_mask: Tensor | None = None,
        *,
        layout: AttentionLayout | None = None,
        layers: Sequence[int] = (),
        stop_at: int | None = None,
    ) -> EncoderOutput:
        depth, wanted = self.plan_depths(layers, stop_at)
        if layout is None:
            layout = AttentionLayout.padded(tokens, padding_mask, self.alphabet.pad_idx)

        x = self.embed_tokens(tokens)
        if self.token_dropout:
            x = self._token_dropout(x, tokens, layout)
        if layout.padding_mask is not None:
            x = x.masked_fill(layout.padding_mask[..., None], 0.0)

        positions = layout.positions
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
        head_dim = self.embed_dim // self.attention_heads
        rope = rotary_tables(positions, self.attention_heads, head_dim, query_scale=head_dim**-0.5)

        backend = self.attention_backend(x)
        hidden = {0: x} if 0 in wanted else {}
        for i in range(depth):
            x = self.layers[i](x, rope, layout, backend)
            if i + 1 in wanted:
                hidden[i + 1] = x
        if depth == self.num_layers:
            x = self.emb_layer_norm_after(x)
            if depth in wanted:
                hidden[depth] = x  # the deepest layer is the normalised output (fair-esm's convention)
        return EncoderOutput(x, hidden)

    def forward_flops(self, counts: BatchCounts, depth: int) -> float:
        """Per block: q, k, v and out projections, the 4x MLP, attention over the pairs."""
        d, t = self.embed_dim, counts.tokens
        block = 4 * linear(t, d, d) + linear(t, d, 4 * d) + linear(t, 4 * d, d) + attention(counts.attention_pairs, d)
        return depth * block

    def lm_head_flops(self, positions: int) -> float:
        return linear(positions, self.embed_dim, self.embed_dim) + linear(positions, self.embed_dim, len(self.alphabet))

    def attention_request(self) -> tuple[str, int]:
        return self.attention, self.embed_dim // self.attention_heads

    def attention_backend(self, x: Tensor) -> str:
        """The backend that runs for x's device, compute dtype (autocast's, when on) and direction
        (a backward to follow or not); resolved once per combination, and read from a compiled
        forward without a graph break once resolved (``backend_for``)."""
        return backend_for(self.attention, x, self.embed_dim // self.attention_heads)

    def _token_dropout(self, x: Tensor, tokens: Tensor, layout: AttentionLayout) -> Tensor:
        """Zero the <mask> embeddings; rescale by (1 - 0.12) / (1 - each sequence's mask ratio)."""
        is_mask = tokens.eq(self.alphabet.mask_idx)
        x = x.masked_fill(is_mask[..., None], 0.0)
        segments = layout.segments()
        if segments is None:
            ratio = is_mask.float().mean(dim=-1, keepdim=True)
        else:
            # Per-sequence counts without a host sync: scatter into one slot per possible id, gather back.
            slots = tokens.new_zeros(tokens.shape[0], tokens.shape[1] + 1, dtype=torch.float32)
            masks = slots.scatter_add(1, segments, is_mask.float()).gather(1, segments)
            sizes = slots.scatter_add(1, segments, torch.ones_like(slots[:, 1:])).gather(1, segments)
            ratio = masks / sizes
        scale = (1 - MASK_RATIO_TRAIN) / (1 - ratio)
        return x * scale[..., None].to(x.dtype)


def _init_weights(module: nn.Module) -> None:
    """From-scratch initialisation: normal(0, 0.02) weights, zero biases, zero padding embedding."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


@register_encoder("esm2", config=ESM2Config)
def build_esm2(config: ESM2Config) -> ESM2:
    """ESM-2 (fair-esm / Hugging Face compatible): presets esm2_8m..esm2_650m or custom sizes."""
    return ESM2(
        config.num_layers,
        config.embed_dim,
        config.attention_heads,
        token_dropout=config.token_dropout,
        attention=config.attention,
    )
