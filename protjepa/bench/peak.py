"""The GPUs' bf16 peaks that the rows' model FLOPs (protjepa.flops) are set against: MFU."""
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


def peak_flops(requested: float | None, device: torch.device, dtype: str) -> float | None:
    """``requested``, else the bf16 peak of this GPU when it is one we know."""
    if requested is not None:
        return requested
    if device.type != "cuda" or dtype != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)
