"""bf16 where it is native, and the autocast that uses it.

Composer's ``amp_bf16`` autocasts on CUDA and XLA only: on a CPU it silently runs fp32. So
on a CPU we autocast ourselves, and only where bf16 matrix products are native (AVX512-BF16
or AMX-BF16); elsewhere oneDNN emulates them.
"""
from __future__ import annotations

import torch

from protjepa.errors import UserError


class PrecisionError(UserError, ValueError):
    """bf16 asked for on a CPU without it."""


def cpu_bf16_missing() -> str | None:
    """None when this CPU multiplies bf16 natively, else why not (one line)."""
    capabilities = torch.cpu.get_capabilities()
    if capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"):
        return None
    return "this CPU has neither AVX512-BF16 nor AMX-BF16 (bf16 matrix products would be emulated)"


def choose_bf16(requested: str, device_type: str, setting: str) -> tuple[bool, str]:
    """Whether ``requested`` (auto | fp32 | bf16, the value of ``setting``) autocasts to bf16 on
    ``device_type`` (cuda or cpu), and a line saying what runs and why. ``auto`` is bf16 on a GPU
    and on a CPU with native bf16, fp32 on other CPUs; ``bf16`` on those is an error."""
    if requested == "fp32":
        return False, f"fp32 ({setting} fp32)"
    if device_type == "cuda":
        return True, f"bf16 autocast on the GPU ({setting} {requested})"
    missing = cpu_bf16_missing()
    if missing is None:
        return True, f"bf16 autocast on the CPU ({setting} {requested}: native bf16 here)"
    if requested == "bf16":
        raise PrecisionError(f"{setting} bf16: {missing}")
    return False, f"fp32 on the CPU ({setting} auto: {missing})"


def bf16_autocast(device: torch.device | str, enabled: bool = True) -> torch.autocast:
    """bf16 autocast on ``device``'s type (cpu or cuda); a no-op when not ``enabled``."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)
