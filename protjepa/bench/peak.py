"""The peaks that the rows' model FLOPs (protjepa.flops) are set against, MFU: the bf16 peaks of the
GPUs we know, and on a CPU its own matrix-multiply rate per precision, measured on the step's shapes."""
from __future__ import annotations

import time

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


def measured_matmul_peak(device: torch.device, bf16: bool, tokens: int, width: int, seconds: float = 0.5) -> float:
    """FLOP/s of the step's largest matrix product, ``[tokens, width] @ [width, 4 width]`` (the MLP's
    up projection), in bf16 or fp32, timed here for about ``seconds`` after a warm-up."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(tokens, width, device=device, dtype=dtype)
    b = torch.randn(width, 4 * width, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    products, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or products == 0:
        a @ b
        products += 1
    return products * 2 * tokens * width * 4 * width / elapsed


def row_peaks(requested: float | None, device: torch.device, dtype: str, tokens: int, width: int
              ) -> dict[str, float | None]:
    """The peak each precision's rows are set against ("fp32", "bf16"): ``requested`` for both; on a
    GPU the known bf16 peak for every row (GPU rows run in the suite's dtype); on a CPU its
    matrix-multiply rate measured on the step's shapes in both precisions (bf16's also where no row
    runs in it: its ratio to fp32's says whether the bf16 targets apply)."""
    if requested is not None or device.type != "cpu":
        peak = peak_flops(requested, device, dtype)
        return {"fp32": peak, "bf16": peak}
    return {"fp32": measured_matmul_peak(device, False, tokens, width),
            "bf16": measured_matmul_peak(device, True, tokens, width)}
