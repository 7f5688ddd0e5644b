"""A modern from-scratch encoder: rotary positions, RMSNorm, SwiGLU, bidirectional attention.

The paper's "modern encoder" baseline (11/4/1 from scratch), built from torchtune's
Llama-style blocks with the causal mask switched off. This is the project's only
importer of torchtune (a frozen upstream); it imports it when an encoder is built,
because importing torchtune pulls in torchao and takes seconds, and ``protjepa list``
or ``validate`` should not pay that.

Attention is bidirectional within a sequence and runs on :mod:`protjepa.attention`'s
backends (``attention: auto|xformers|sdpa|sdpa_fp32|math``, as for ESM-2): torchtune's attention
module hands its q, k, v to :func:`protjepa.attention.attend`, and the
:class:`~protjepa.attention.AttentionLayout` travels through torchtune's ``mask``
argument. So a padded row's residues attend to its residues only, each packed sequence
only to itself, and rotary positions restart per packed sequence (``layout.positions``,
torchtune's ``input_pos``).
"""
from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from protjepa.alphabet import ESM_ALPHABET, Alphabet
from protjepa.attention import AttentionLayout, Backend, attend
from protjepa.encoders.base import Encoder, EncoderOutput
from protjepa.extras import require
from protjepa.flops import BatchCounts, attention, linear
from protjepa.registry import register_encoder

# Sizes matched to ESM-2's (8M, 35M, 150M): SwiGLU at 8/3 x width has the parameters of a 4 x GELU MLP.
PRESETS = {
    "modern_8m": dict(num_layers=6, embed_dim=320, attention_heads=20),
    "modern_35m": dict(num_layers=12, embed_dim=480, attention_heads=20),
    "modern_150m": dict(num_layers=30, embed_dim=640, attention_heads=20),
}
SIZE_FIELDS = ("num_layers", "embed_dim", "attention_heads")


class ModernConfig(BaseModel):
    """A preset fills the size fields; fields given explicitly override it, and then the resolved config
    (a run's ``recipe.yaml``, its model card) names no preset."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["modern_8m", "modern_35m", "modern_150m"] | None = None
    num_layers: int | None = Field(None, ge=1)
    embed_dim: int | None = Field(None, ge=2)
    attention_heads: int | None = Field(None, ge=1)
    kv_heads: int | None = Field(None, ge=1, description="grouped-query attention; default: attention_heads")
    ffn_mult: float = Field(8 / 3, gt=0, description="SwiGLU hidden width / embed_dim")
    ffn_multiple_of: int = Field(64, ge=1, description="round the SwiGLU hidden width up to a multiple of this")
    norm_eps: float = Field(1e-6, gt=0)
    rope_base: int = Field(10_000, ge=2)
    max_seq_len: int = Field(2048, ge=8, description="longest sequence (<cls>/<eos> included): the rotary table")
    attention: Backend = "auto"

    @model_validator(mode="after")
    def _fill_from_preset(self):
        for key, value in PRESETS.get(self.preset, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if any(getattr(self, key) != value for key, value in PRESETS.get(self.preset, {}).items()):
            self.preset = None  # sizes that override it make another model: the resolved recipe does not name it
        missing = [k for k in SIZE_FIELDS if getattr(self, k) is None]
        if missing:
            raise ValueError(f"give a preset ({'|'.join(PRESETS)}) or {', '.join(missing)}")
        if self.embed_dim % self.attention_heads or (self.embed_dim // self.attention_heads) % 2:
            raise ValueError(
                f"embed_dim {self.embed_dim} must split into {self.attention_heads} heads of even width (rotary)"
            )
        if self.kv_heads is None:
            self.kv_heads = self.attention_heads
        if self.attention_heads % self.kv_heads:
            raise ValueError(f"attention_heads {self.attention_heads} is not a multiple of kv_heads {self.kv_heads}")
        return self

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.attention_heads

    @property
    def ffn_hidden(self) -> int:
        width = int(self.ffn_mult * self.embed_dim)
        return -(-width // self.ffn_multiple_of) * self.ffn_multiple_of


class ModernEncoder(Encoder):
    def __init__(self, config: ModernConfig, alphabet: Alphabet = ESM_ALPHABET):
        super().__init__()
        require("torchtune")
        from torchtune.modules import (
            FeedForward,
            MultiHeadAttention,
            RMSNorm,
            RotaryPositionalEmbeddings,
            TransformerSelfAttentionLayer,
        )

        self.config = config
        self.alphabet = alphabet
        self.num_layers = config.num_layers
        self.embed_dim = dim = config.embed_dim
        heads, kv_heads, head_dim, hidden = config.attention_heads, config.kv_heads, config.head_dim, config.ffn_hidden
        self.max_seq_len = config.max_seq_len

        self.embed_tokens = nn.Embedding(len(alphabet), dim, padding_idx=alphabet.pad_idx)
        rope = RotaryPositionalEmbeddings(head_dim, config.max_seq_len, config.rope_base)  # shared, as in torchtune's Llama

        def block() -> nn.Module:
            attn = MultiHeadAttention(
                embed_dim=dim,
                num_heads=heads,
                num_kv_heads=kv_heads,
                head_dim=head_dim,
                q_proj=nn.Linear(dim, heads * head_dim, bias=False),
                k_proj=nn.Linear(dim, kv_heads * head_dim, bias=False),
                v_proj=nn.Linear(dim, kv_heads * head_dim, bias=False),
                output_proj=nn.Linear(heads * head_dim, dim, bias=False),
                pos_embeddings=rope,
                max_seq_len=config.max_seq_len,
                is_causal=False,
            )
            attn._attention_call = partial(attend_in_blocks, config.attention)
            mlp = FeedForward(
                gate_proj=nn.Linear(dim, hidden, bias=False),
                down_proj=nn.Linear(hidden, dim, bias=False),
                up_proj=nn.Linear(dim, hidden, bias=False),
                activation=nn.SiLU(),
            )
            return TransformerSelfAttentionLayer(
                attn, mlp, sa_norm=RMSNorm(dim, config.norm_eps), mlp_norm=RMSNorm(dim, config.norm_eps)
            )

        self.layers = nn.ModuleList(block() for _ in range(config.num_layers))
        self.norm = RMSNorm(dim, config.norm_eps)
        # LM head as in ESM-2 (dense, GELU, norm, projection onto the tied embeddings, bias), with RMSNorm.
        self.head_dense = nn.Linear(dim, dim)
        self.head_norm = RMSNorm(dim, config.norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(len(alphabet)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.embed_tokens.weight[self.alphabet.pad_idx].zero_()
            self.head_bias.zero_()

    def forward(
        self,
        tokens: Tensor,
        padding_mask: Tensor | None = None,
        *,
        layout: AttentionLayout | None = None,
        layers: Sequence[int] = (),
        stop_at: int | None = None,
    ) -> EncoderOutput:
        end, wanted = self.plan_depths(layers, stop_at)
        if layout is None:
            layout = AttentionLayout.padded(tokens, padding_mask, self.alphabet.pad_idx)
        if layout.positions is None and tokens.shape[1] > self.max_seq_len:  # packed rows: positions restart
            raise ValueError(f"rows of {tokens.shape[1]} tokens exceed max_seq_len {self.max_seq_len}")

        h = self.embed_tokens(tokens)
        out = {0: h} if 0 in wanted else {}
        for depth, layer in enumerate(self.layers[:end], start=1):
            h = layer(h, mask=layout, input_pos=layout.positions)
            if depth in wanted and depth < self.num_layers:
                out[depth] = h
        if end == self.num_layers:
            h = self.norm(h)
            if end in wanted:
                out[end] = h
        return EncoderOutput(h, out)

    def forward_flops(self, counts: BatchCounts, depth: int) -> float:
        """Per block: q and out projections, the k and v projections (grouped-query: kv_heads
        wide), attention over the pairs for every query head, the SwiGLU's three matrices."""
        c, t = self.config, counts.tokens
        width, kv_width = c.attention_heads * c.head_dim, c.kv_heads * c.head_dim
        block = (linear(t, c.embed_dim, width) + 2 * linear(t, c.embed_dim, kv_width) + linear(t, width, c.embed_dim)
                 + attention(counts.attention_pairs, width) + 3 * linear(t, c.embed_dim, c.ffn_hidden))
        return depth * block

    def lm_head_flops(self, positions: int) -> float:
        return linear(positions, self.embed_dim, self.embed_dim) + linear(positions, self.embed_dim, len(self.alphabet))

    def attention_request(self) -> tuple[str, int]:
        return self.config.attention, self.config.head_dim

    def lm_head(self, hidden: Tensor) -> Tensor:
        x = self.head_norm(F.gelu(self.head_dense(hidden)))
        return F.linear(x, self.embed_tokens.weight) + self.head_bias


def attend_in_blocks(backend: Backend, q: Tensor, k: Tensor, v: Tensor, mask: AttentionLayout, **_) -> Tensor:
    """torchtune's attention call (``MultiHeadAttention._attention_call``), routed to our backends.

    q, k, v come as [B, H, L, Dh] with k, v already expanded to every query head; torchtune
    leaves q unscaled (SDPA's default scale), ``attend`` wants it scaled. ``mask`` is the
    layout passed down as each layer's ``mask``; torchtune's dropout and causal flags do
    not apply (no attention dropout, never causal).
    """
    return attend(q * q.shape[-1] ** -0.5, k, v, mask, backend)


@register_encoder("modern", config=ModernConfig)
def build_modern(config: ModernConfig) -> ModernEncoder:
    """Modern from-scratch encoder: RoPE, RMSNorm, SwiGLU, bidirectional attention (torchtune blocks)."""
    return ModernEncoder(config)
