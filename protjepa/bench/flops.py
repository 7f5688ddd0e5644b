"""Model FLOPs of the rows, and the GPUs' bf16 peaks they are set against (MFU)."""
from __future__ import annotations

import torch

# Dense bf16 peak of the GPUs we know, for model FLOPs utilisation (name substring -> FLOP/s).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
}


def encoder_flops(embed_dim: int, depth: int, tokens: int, attention_pairs: int) -> float:
    """Forward FLOPs of ``depth`` ESM-2 blocks: 24 d^2 per token (q, k, v, out, 4x MLP)
    plus 4 d per attending pair (q k^T and attention x v); norms and activations left out."""
    return depth * (24.0 * embed_dim**2 * tokens + 4.0 * embed_dim * attention_pairs)


def lm_head_flops(embed_dim: int, vocab: int, positions: int) -> float:
    return 2.0 * positions * (embed_dim**2 + embed_dim * vocab)


def peak_flops(requested: float | None, device: torch.device, dtype: str) -> float | None:
    """``requested``, else the bf16 peak of this GPU when it is one we know."""
    if requested is not None:
        return requested
    if device.type != "cuda" or dtype != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)
