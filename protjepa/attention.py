"""Attention backends behind one switch: ``auto | xformers | sdpa | sdpa_fp32 | math``.

Every backend computes the same thing: softmax(q k^T) v where a token attends only to
the tokens of its own *block*. A block is one sequence (of a padded row, or of a packed
row), and a row's padding tail is a block of its own, so padding never leaks into real
tokens and padding queries never see an empty row (no NaN).

* ``math``: the readable reference; an explicit softmax with a -inf bias.
* ``sdpa``: ``F.scaled_dot_product_attention`` with an additive mask ([B,1,1,L] key padding
  for padded rows, [B,1,L,L] same-sequence for packed rows), built once per batch. On padded
  rows its padding queries attend to the real keys instead of to the padding: values nobody reads.
* ``sdpa_fp32``: SDPA on q, k, v cast to fp32, whatever the autocast; out in their dtype.
  On a CPU the fp32 flash kernel runs many narrow heads (ESM-2: 16-32 wide) faster than
  its bf16 one (its bf16 backward is ~3x slower), so ``auto`` picks it there under bf16.
* ``xformers``: ``memory_efficient_attention`` over the B*L tokens flattened into one
  row with a block-diagonal mask: no attention is computed across blocks at all.

``q`` comes in already scaled by ``head_dim ** -0.5`` (as in ESM, which scales before
the rotary embedding), so every backend runs with ``scale=1``.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend
from torch.profiler import record_function

from protjepa.batch import Batch
from protjepa.extras import EXTRAS

Backend = Literal["auto", "xformers", "sdpa", "sdpa_fp32", "math"]
BACKENDS: tuple[str, ...] = ("auto", "xformers", "sdpa", "sdpa_fp32", "math")
# The name attention runs under in a torch.profiler trace (``protjepa bench --profile``).
PROFILER_SCOPE = "protjepa::attention"

logger = logging.getLogger("protjepa.attention")


@dataclass
class AttentionLayout:
    """Which tokens may attend to which, for one batch; built once, shared by every layer."""

    padding_mask: Tensor | None  # [B, L] True at padding
    segment_ids: Tensor | None = None  # [B, L] packed rows: 1..k per sequence, 0 at padding
    positions: Tensor | None = None  # [B, L] rotary positions (None: 0..L-1 in every row)
    block_seqlens: tuple[int, ...] | None = None  # host-side block lengths for xformers
    # Static shapes (data.static_shapes): nothing per batch on the host, for graphs replayed whole
    # (CUDA graphs); xformers, whose masks are built from host-side lengths, gives way to SDPA.
    static: bool = False
    cache: dict = field(default_factory=dict, repr=False)  # per-backend masks, built lazily

    @classmethod
    def from_batch(cls, batch: Batch) -> "AttentionLayout":
        return cls(batch.padding_mask, batch.segment_ids, batch.positions, batch.block_seqlens, batch.static_shapes)

    @classmethod
    def padded(cls, tokens: Tensor, padding_mask: Tensor | None, pad_idx: int) -> "AttentionLayout":
        """The layout of a direct encoder call: padded rows, padding from the mask or else the pad token."""
        return cls(tokens.eq(pad_idx) if padding_mask is None else padding_mask)

    @property
    def packed(self) -> bool:
        return self.segment_ids is not None

    def segments(self) -> Tensor | None:
        """[B, L] block ids: equal ids attend to each other, 0 marks padding.
        None when there is neither padding nor packing (every token sees its whole row)."""
        if self.segment_ids is not None:
            return self.segment_ids
        if self.padding_mask is not None:
            return (~self.padding_mask).long()
        return None

    def host_block_seqlens(self, rows: int, length: int) -> tuple[int, ...]:
        """The block lengths over the flattened rows*length tokens, in row-major order.

        The collator supplies them; when it did not (a direct encoder call), they are
        derived here at the cost of one host sync, once per layout.
        """
        lengths = self.block_seqlens or self.cache.get("block_seqlens")
        if lengths is None:
            segments = self.segments()
            if segments is None:
                lengths = (length,) * rows
            else:
                row_offset = torch.arange(rows, device=segments.device)[:, None] * (length + 1)
                _, counts = torch.unique_consecutive((segments + row_offset).flatten(), return_counts=True)
                lengths = tuple(counts.tolist())
            self.cache["block_seqlens"] = lengths
        if sum(lengths) != rows * length:
            raise ValueError(f"block_seqlens cover {sum(lengths)} tokens, the batch has {rows} x {length}")
        return tuple(lengths)


# --------------------------------------------------------------------------- backends


def allowed_pairs(layout: AttentionLayout | None) -> Tensor | None:
    """[B, 1, L, L] True where query i may attend key j (same block); None: no restriction."""
    segments = None if layout is None else layout.segments()
    if segments is None:
        return None
    return segments[:, None, :, None] == segments[:, None, None, :]


def _cached(layout: AttentionLayout | None, key: str, build):
    if layout is None:
        return build()
    if key not in layout.cache:
        layout.cache[key] = build()
    return layout.cache[key]


def math_attention(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout | None) -> Tensor:
    """The reference: [B, H, L, Dh] in and out; softmax in fp32."""

    def build_bias():
        allowed = allowed_pairs(layout)
        if allowed is None:
            return None
        return torch.zeros(allowed.shape, device=q.device).masked_fill(~allowed, float("-inf"))

    scores = (q @ k.transpose(-1, -2)).float()
    bias = _cached(layout, "math", build_bias)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1).to(v.dtype) @ v


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout | None) -> Tensor:
    """PyTorch SDPA: [B, H, L, Dh] in and out.

    The mask goes in as an additive bias in q's dtype, built once per layout: SDPA would turn a
    boolean mask into one in every layer and keep each copy for the backward (packed rows: an
    [L, L] bias a row a layer); one shared bias is kept once. Same results, a few % faster."""

    def build_bias():
        if layout is None:
            return None
        if layout.packed:
            allowed = allowed_pairs(layout)
        elif layout.padding_mask is not None:
            allowed = (~layout.padding_mask)[:, None, None, :]
        else:
            return None
        return torch.zeros(allowed.shape, device=q.device, dtype=q.dtype).masked_fill(~allowed, float("-inf"))

    bias = _cached(layout, f"sdpa {q.dtype}", build_bias)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)


def query_key_dtype(backend: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype to hand ``backend`` q and k in when they are computed in fp32 (rotary) and the
    layer runs in ``dtype``: fp32 for sdpa_fp32 (no round trip through bf16), else ``dtype``."""
    return torch.float32 if backend == "sdpa_fp32" else dtype


def sdpa_fp32_attention(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout | None) -> Tensor:
    """SDPA in fp32 (autocast off inside): [B, H, L, Dh] in and out, out in q's dtype."""
    with torch.autocast(q.device.type, enabled=False):
        return sdpa_attention(q.float(), k.float(), v.float(), layout).to(q.dtype)


def xformers_attention(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout | None) -> Tensor:
    """xformers' memory-efficient kernel over the flattened tokens: [B, H, L, Dh] in and out (SDPA's
    for a static layout: see ``AttentionLayout.static``)."""
    if layout is not None and layout.static:
        return sdpa_attention(q, k, v, layout)
    from xformers.ops import memory_efficient_attention
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    rows, heads, length, head_dim = q.shape
    layout = layout if layout is not None else AttentionLayout(None)

    def build_mask():
        return BlockDiagonalMask.from_seqlens(list(layout.host_block_seqlens(rows, length)), device=q.device)

    bias = _cached(layout, "xformers", build_mask)

    def flat(x: Tensor) -> Tensor:  # [B, H, L, Dh] -> [1, B*L, H, Dh]: free when x came from a [B, L, H, Dh] view
        return x.transpose(1, 2).reshape(1, rows * length, heads, head_dim)

    out = memory_efficient_attention(flat(q), flat(k), flat(v), attn_bias=bias, scale=1.0)
    return out.view(rows, length, heads, head_dim).transpose(1, 2)


_BACKEND_FUNCTIONS = {"math": math_attention, "sdpa": sdpa_attention, "sdpa_fp32": sdpa_fp32_attention,
                      "xformers": xformers_attention}


def attend(
    q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout | None = None, backend: Backend = "auto"
) -> Tensor:
    """Attention within blocks. q, k, v: [B, H, L, Dh], q already scaled; returns [B, H, L, Dh].

    ``backend``: a resolved one (math, sdpa, sdpa_fp32, xformers), as :func:`resolve_backend`
    returns it; encoders resolve once, not per layer. ``auto`` is resolved here.
    """
    if backend == "auto":
        backend = backend_for(backend, q, q.shape[-1])
    if torch.compiler.is_compiling():  # a compiled graph has no profiler scopes (dynamo would warn of each)
        return _BACKEND_FUNCTIONS[backend](q, k, v, layout)
    with record_function(PROFILER_SCOPE):  # one scope per layer: the profile's attention share
        return _BACKEND_FUNCTIONS[backend](q, k, v, layout)


# --------------------------------------------------------------------------- choosing one


# An xformers wheel's compiled library loads only beside the torch and CUDA it was built for, which its
# cpp_lib.json names. The install that matches the newest wheel: requirements/torch-xformers.txt.
XFORMERS_PROFILE = "install torch 2.10.0 + CUDA 12.8 beside xformers 0.0.35 (in a checkout: make env PROFILE=xformers)"


def xformers_build() -> dict | None:
    """The installed xformers' build record (cpp_lib.json's ``version``: torch, cuda, python), read
    without importing xformers; None when xformers is not installed or has no record."""
    spec = importlib.util.find_spec("xformers")
    if spec is None or spec.origin is None:
        return None
    record = Path(spec.origin).with_name("cpp_lib.json")
    try:
        return json.loads(record.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def xformers_build_problem(build: dict, torch_version: str, cuda_version: str | None) -> str | None:
    """Why the compiled library of an xformers built as ``build`` does not load beside this torch (it
    needs the build's torch release and CUDA), or None when they match. ``build["cuda"]``: 1208 for
    CUDA 12.8. (In 0.0.35 that library holds no attention kernel: DEVELOPERS.md.)"""
    built_torch = str(build.get("torch", "")).split("+")[0]
    built_cuda = f"{build['cuda'] // 100}.{build['cuda'] % 100}" if build.get("cuda") else None
    have_cuda = ".".join(cuda_version.split(".")[:2]) if cuda_version else None
    if torch_version.split("+")[0] == built_torch and have_cuda == built_cuda:
        return None
    return (f"its library is built for torch {built_torch} + CUDA {built_cuda}, this is torch {torch_version}"
            f"{f' + CUDA {have_cuda}' if have_cuda else ' without CUDA'}: {XFORMERS_PROFILE}")


# (device, dtype, head_dim) -> the xformers operator its dispatcher picked for the probe (bench, run header)
XFORMERS_KERNELS: dict[tuple, str] = {}


def _xformers_problem(device: torch.device, dtype: torch.dtype, head_dim: int) -> str | None:
    """Why xformers cannot run here, or None when a tiny forward and backward call works."""
    if device.type != "cuda":
        return f"xformers has no {device.type} kernels"
    build = xformers_build()
    mismatch = None if build is None else xformers_build_problem(build, torch.__version__, torch.version.cuda)
    try:
        from xformers.ops import memory_efficient_attention
        from xformers.ops.fmha import Inputs
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask
        from xformers.ops.fmha.dispatch import _dispatch_fw
    except Exception as exc:  # a broken install must not stop training: fall back
        return f"cannot import xformers ({exc}; {EXTRAS['xformers'][1]})"
    try:
        with torch.inference_mode(False), torch.enable_grad():
            q = torch.randn(1, 4, 1, head_dim, device=device, dtype=dtype, requires_grad=True)
            mask = BlockDiagonalMask.from_seqlens([2, 2], device=device)
            memory_efficient_attention(q, q, q, attn_bias=mask, scale=1.0).sum().backward()
            XFORMERS_KERNELS[device.type, dtype, head_dim] = _dispatch_fw(Inputs(q, q, q, mask, scale=1.0), True).NAME
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        because = f"; {mismatch}" if mismatch else ""
        return f"a probe call failed ({type(exc).__name__}: {first_line}{because})"
    return None


_warned: set[str] = set()
HALF = (torch.float16, torch.bfloat16)


def _without_xformers(device: torch.device, half: bool, grad: bool) -> str:
    return "sdpa_fp32" if half and grad and device.type == "cpu" else "sdpa"


# Every decision of resolve_backend, by its arguments: a plain dict, so that a compiled forward reads
# a decision made before it (the run's attention line makes the training run's) without a graph break.
RESOLVED: dict[tuple, str] = {}


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int = 64,
                    grad: bool = True) -> str:
    """The backend that runs for this device, dtype and direction (``grad``: a backward will follow);
    decided (and logged) once per combination (:data:`RESOLVED`).

    ``auto``: xformers on CUDA in fp16/bf16 when it imports and a probe call works, else sdpa.
    On a CPU in fp16/bf16, sdpa_fp32 where a backward follows (the bf16 flash backward is ~3x
    slower than fp32's for narrow heads) and sdpa for a forward alone (the bf16 flash forward is
    1.4-1.9x faster than fp32's); ``protjepa bench`` checks both picks on each machine. An explicit
    ``xformers`` that cannot run falls back to what ``auto`` runs without it, with one warning.
    """
    key = (requested, device, dtype, head_dim, grad)
    if key not in RESOLVED:
        RESOLVED[key] = _decide(*key)
    return RESOLVED[key]


# A decision (an xformers probe call among it) made once, in Python: never traced. torch's own lazy form of
# torch.compiler.disable: it imports dynamo (2.3 s) when first called, not when this module is imported by
# every command that reads a recipe (validate, experiment --dry-run: docs/benchmarks.md).
@torch._disable_dynamo
def _resolve_outside_graphs(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int,
                            grad: bool) -> str:
    return resolve_backend(requested, device, dtype, head_dim, grad)


def backend_for(requested: str, x: Tensor, head_dim: int) -> str:
    """``resolve_backend`` for attention on ``x``'s device and dtype (autocast's, when on) in the current
    grad mode, from inside a forward that may be compiled: a decision already made is a dict lookup
    torch.compile traces; a new one is made outside the graph (one graph break, the first time)."""
    device = x.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else x.dtype
    key = (requested, device, dtype, head_dim, torch.is_grad_enabled())
    backend = RESOLVED.get(key)
    return backend if backend is not None else _resolve_outside_graphs(*key)


def _decide(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int, grad: bool) -> str:
    if requested not in BACKENDS:
        raise ValueError(f"attention backend {requested!r}: expected {'|'.join(BACKENDS)}")
    half = dtype in HALF
    if requested == "xformers" or (requested == "auto" and half and device.type == "cuda"):
        problem = _xformers_problem(device, dtype, head_dim)
        chosen = "xformers" if problem is None else None
        if problem is not None and requested == "xformers" and problem not in _warned:
            _warned.add(problem)
            logger.warning("attention: xformers requested but %s; using %s", problem, _without_xformers(
                device, half, grad))
    else:
        chosen = None if requested == "auto" else requested
    chosen = chosen or _without_xformers(device, half, grad)
    logger.info("attention backend: %s (requested %s; %s, %s, %s)", chosen, requested, device, dtype,
                "training" if grad else "forward only")
    return chosen


# --------------------------------------------------------------------------- naming the kernel

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def sdpa_kernel(device: torch.device, dtype: torch.dtype, head_dim: int, packed: bool, grad: bool) -> str:
    """The kernel SDPA's dispatcher picks for our masks ([B,1,1,L] key padding, or [B,1,L,L] for packed
    rows, additive in q's dtype) at this device, dtype and head width: flash_attention,
    efficient_attention, cudnn_attention or math. It depends on shapes, dtypes and the mask's
    presence, not on values."""
    length = 8
    q = torch.zeros(1, 1, length, head_dim, device=device, dtype=dtype, requires_grad=grad)
    mask = torch.zeros((1, 1, length, length) if packed else (1, 1, 1, length), device=device, dtype=dtype)
    return SDPBackend(torch._fused_sdp_choice(q, q, q, mask, 0.0, False, scale=1.0)).name.lower()


def describe_kernel(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int, packed: bool,
                    grad: bool) -> str:
    """``backend`` (a resolved one) and the kernel it runs, e.g. ``sdpa_fp32 (SDPA's flash_attention, fp32)``."""
    if backend == "math":
        return "math (explicit softmax, fp32 scores)"
    if backend == "xformers":
        name = XFORMERS_KERNELS.get((device.type, dtype, head_dim), "its dispatcher's pick")
        # "-pt" operators are torch's own kernels, called through xformers (its own did not load)
        return f"xformers ({name}{': torch kernel' if name.endswith('-pt') else ''})"
    compute = torch.float32 if backend == "sdpa_fp32" else dtype
    kernel = sdpa_kernel(device, compute, head_dim, packed, grad)
    return f"{backend} (SDPA's {kernel}, {DTYPE_NAMES.get(compute, compute)})"


def attention_line(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int, packed: bool,
                   static: bool = False) -> str:
    """One line naming the kernels a run's attention uses: in training steps (a backward follows) and in
    forward-only passes (EMA targets, monitors), where they differ. ``static``: training steps have
    static shapes (``AttentionLayout.static``: SDPA where xformers was picked)."""
    def kernel(grad: bool) -> str:
        backend = resolve_backend(requested, device, dtype, head_dim, grad)
        if static and grad and backend == "xformers":
            return describe_kernel("sdpa", device, dtype, head_dim, packed, grad)
        return describe_kernel(backend, device, dtype, head_dim, packed, grad)

    kernels = {grad: kernel(grad) for grad in (True, False)}
    where = kernels[True] if kernels[True] == kernels[False] else \
        f"{kernels[True]} in training steps, {kernels[False]} in forward-only passes"
    wanted_xformers = requested == "xformers" or (requested == "auto" and device.type == "cuda" and dtype in HALF)
    why_not = ""
    if wanted_xformers and not kernels[True].startswith("xformers"):
        problem = _xformers_problem(device, dtype, head_dim)
        why_not = f"; not xformers: {problem or 'static shapes (its masks need host-side lengths)'}"
    return f"attention: {where} (requested {requested}; {'packed' if packed else 'padded'} rows{why_not})"
