"""bf16 where it is native, and the autocast that uses it.

Composer's ``amp_bf16`` autocasts on CUDA and XLA only: on a CPU it silently runs fp32. So
on a CPU we autocast ourselves, where bf16 matrix products are native (AVX512-BF16 or
AMX-BF16; elsewhere oneDNN emulates them). The flags alone do not say that bf16 is faster:
a 2048 x 320 x 1280 product ran 3.4x faster in bf16 than in fp32 on an AMD EPYC with
AVX512-BF16, and 0.83-0.94x as fast on an Intel Xeon VM with AVX512-BF16 but no AMX. So ``auto``
also times one such product in both (once a process, about 0.2 s) and takes bf16 only where
it wins by BF16_MIN_SPEEDUP.
"""
from __future__ import annotations

import functools
import time

import torch

from protjepa.errors import UserError

BF16_MIN_SPEEDUP = 1.2


class PrecisionError(UserError, ValueError):
    """bf16 asked for on a CPU without it."""


def native_bf16_flags() -> dict[str, bool]:
    """This CPU's AVX512-BF16 and AMX-BF16 flags: torch's capability table, or on a torch without one
    (2.10, the xformers install) its older probes (AMX tiles stand for AMX-BF16 there)."""
    table = getattr(torch.cpu, "get_capabilities", None)
    if table is not None:
        capabilities = table()
        return {flag: bool(capabilities.get(flag)) for flag in ("avx512_bf16", "amx_bf16")}
    probes = torch._C._cpu
    return {"avx512_bf16": probes._is_avx512_bf16_supported(), "amx_bf16": probes._is_amx_tile_supported()}


def cpu_bf16_missing() -> str | None:
    """None when this CPU multiplies bf16 natively, else why not (one line)."""
    if any(native_bf16_flags().values()):
        return None
    return "this CPU has neither AVX512-BF16 nor AMX-BF16 (bf16 matrix products would be emulated)"


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of an ESM-2-8M-sized matrix product (2048 x 320 x 1280) on this
    CPU, at the current thread count: the best of 6 runs each, interleaved."""
    a, b = torch.randn(2048, 320), torch.randn(320, 1280)
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    operands = {dtype: (a.to(dtype), b.to(dtype)) for dtype in best}
    for _ in range(6):
        for dtype, (x, y) in operands.items():
            start = time.perf_counter()
            x @ y
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def choose_bf16(requested: str, device_type: str, setting: str) -> tuple[bool, str]:
    """Whether ``requested`` (auto | fp32 | bf16, the value of ``setting``) autocasts to bf16 on
    ``device_type`` (cuda or cpu), and a line saying what runs and why. ``auto`` is bf16 on a GPU
    and on a CPU where native bf16 beats fp32 (timed once), else fp32; ``bf16`` on a CPU without
    native bf16 is an error."""
    if requested == "fp32":
        return False, f"fp32 ({setting} fp32)"
    if device_type == "cuda":
        return True, f"bf16 autocast on the GPU ({setting} {requested})"
    missing = cpu_bf16_missing()
    if missing is not None:
        if requested == "bf16":
            raise PrecisionError(f"{setting} bf16: {missing}")
        return False, f"fp32 on the CPU ({setting} auto: {missing})"
    if requested == "bf16":
        return True, f"bf16 autocast on the CPU ({setting} bf16: native bf16 here)"
    speedup = cpu_bf16_speedup()
    if speedup < BF16_MIN_SPEEDUP:
        return False, (f"fp32 on the CPU ({setting} auto: native bf16 here, but its matrix products ran at "
                       f"{speedup:.2f}x fp32's, under the {BF16_MIN_SPEEDUP}x it takes)")
    return True, f"bf16 autocast on the CPU ({setting} auto: its matrix products ran {speedup:.2f}x faster here)"


def bf16_autocast(device: torch.device | str, enabled: bool = True) -> torch.autocast:
    """bf16 autocast on ``device``'s type (cpu or cuda); a no-op when not ``enabled``."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)
