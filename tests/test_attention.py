"""Attention backends: math is the reference; sdpa and (the layout of) xformers must match it."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from protjepa import attention
from protjepa.attention import (
    AttentionLayout,
    allowed_pairs,
    attend,
    math_attention,
    resolve_backend,
    sdpa_attention,
    sdpa_fp32_attention,
    xformers_attention,
)

REPO = Path(__file__).resolve().parents[1]

HEADS, HEAD_DIM = 2, 8


def padded_layout(lengths: list[int], length: int, supply_blocks: bool = True) -> AttentionLayout:
    padding = torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]
    blocks = tuple(b for n in lengths for b in (n, length - n) if b)
    return AttentionLayout(padding, block_seqlens=blocks if supply_blocks else None)


def packed_layout(rows: list[list[int]], length: int, supply_blocks: bool = True) -> AttentionLayout:
    """Rows of back-to-back sequences (lengths given), each row padded to ``length``."""
    segment_ids = torch.zeros(len(rows), length, dtype=torch.long)
    positions = torch.zeros(len(rows), length, dtype=torch.long)
    blocks = []
    for r, lengths in enumerate(rows):
        start = 0
        for s, n in enumerate(lengths, start=1):
            segment_ids[r, start : start + n] = s
            positions[r, start : start + n] = torch.arange(n)
            start += n
        blocks += lengths + ([length - start] if length > start else [])
    return AttentionLayout(segment_ids.eq(0), segment_ids, positions, tuple(blocks) if supply_blocks else None)


def qkv(rows: int, length: int, dtype=torch.float32):
    q, k, v = torch.randn(3, rows, HEADS, length, HEAD_DIM, dtype=dtype).unbind(0)
    return q * HEAD_DIM**-0.5, k, v


PADDED = dict(lengths=[9, 6, 3], length=9)
PACKED = dict(rows=[[4, 3], [2, 2, 3], [5]], length=9)


def test_math_by_hand():
    # Zero queries give uniform weights: each real token averages the values of its own block.
    layout = padded_layout([2], 3)
    q = torch.zeros(1, 1, 3, 1)
    v = torch.tensor([1.0, 3.0, 100.0]).view(1, 1, 3, 1)
    out = math_attention(q, torch.zeros_like(q), v, layout).flatten()
    assert out.tolist() == [2.0, 2.0, 100.0]  # the padding token sees only itself


def test_sdpa_matches_math_padded():
    layout = padded_layout(**PADDED)
    q, k, v = qkv(3, 9)
    real = ~layout.padding_mask[:, None, :, None]
    ref, out = math_attention(q, k, v, layout), sdpa_attention(q, k, v, layout)
    torch.testing.assert_close(out * real, ref * real, atol=1e-5, rtol=0)
    assert torch.isfinite(out).all()  # padding queries must not produce NaN


def test_sdpa_matches_math_packed():
    layout = packed_layout(**PACKED)
    q, k, v = qkv(3, 9)
    torch.testing.assert_close(sdpa_attention(q, k, v, layout), math_attention(q, k, v, layout), atol=1e-5, rtol=0)


def outputs_and_gradients(backend, q, k, v, layout, real, autocast: bool):
    """Attention's output and the gradients of q, k, v (of a fixed random weighting of the real rows)."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = attend(*leaves, layout, backend)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weights * real).sum().backward()
    return [out.float() * real] + [x.grad for x in leaves]


@pytest.mark.parametrize("make, spec", [(padded_layout, PADDED), (packed_layout, PACKED)], ids=["padded", "packed"])
def test_sdpa_fp32_matches_math(make, spec):
    """sdpa_fp32 equals the fp32 reference: in fp32 to fp32 rounding; under bf16 autocast (bf16 inputs,
    as a bf16 layer produces them) within bf16 rounding of the reference on those same inputs."""
    layout = make(**spec)
    real = ~layout.padding_mask[:, None, :, None]
    q, k, v = qkv(3, spec["length"])
    reference = outputs_and_gradients("math", q, k, v, layout, real, autocast=False)
    for got, want in zip(outputs_and_gradients("sdpa_fp32", q, k, v, layout, real, autocast=False), reference):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    low = [x.bfloat16() for x in (q, k, v)]
    reference = outputs_and_gradients("math", *[x.float() for x in low], layout, real, autocast=False)
    got = outputs_and_gradients("sdpa_fp32", *low, layout, real, autocast=True)
    for got_tensor, want in zip(got, reference):
        torch.testing.assert_close(got_tensor.float(), want, atol=2e-2, rtol=1e-2)  # bf16 output and gradients


def test_sdpa_fp32_keeps_the_input_dtype_under_autocast():
    q, k, v = qkv(2, 5, torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        out = sdpa_fp32_attention(q, k, v, None)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), math_attention(q.float(), k.float(), v.float(), None), atol=1e-2, rtol=0)


@pytest.mark.parametrize("backend", ["math", "sdpa", "sdpa_fp32"])
def test_packed_row_equals_each_sequence_alone(backend):
    layout = packed_layout(**PACKED)
    q, k, v = qkv(3, 9)
    out = attend(q, k, v, layout, backend)
    for r, lengths in enumerate(PACKED["rows"]):
        start = 0
        for n in lengths:
            part = slice(start, start + n)
            alone = attend(q[r : r + 1, :, part], k[r : r + 1, :, part], v[r : r + 1, :, part], None, backend)
            torch.testing.assert_close(out[r : r + 1, :, part], alone, atol=1e-5, rtol=0)
            start += n


def block_diagonal_of_rows(allowed: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] per-row allowed pairs -> [B*L, B*L] over the flattened tokens."""
    return torch.block_diag(*allowed[:, 0])


@pytest.mark.parametrize("supply_blocks", [True, False])
@pytest.mark.parametrize("make", [lambda s: padded_layout(**PADDED, supply_blocks=s),
                                  lambda s: packed_layout(**PACKED, supply_blocks=s)], ids=["padded", "packed"])
def test_xformers_mask_equals_allowed_pairs(make, supply_blocks):
    pytest.importorskip("xformers.ops")
    q, k, v = qkv(3, 9)
    layout = make(supply_blocks)
    calls = {}

    def record_bias(query, key, value, attn_bias=None, p=0.0, scale=None):
        calls["bias"] = attn_bias
        return query

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("xformers.ops.memory_efficient_attention", record_bias)
        xformers_attention(q, k, v, layout)
    materialized = calls["bias"].materialize((27, 27))
    assert torch.equal(materialized == 0, block_diagonal_of_rows(allowed_pairs(layout)))
    assert layout.cache["xformers"] is calls["bias"]  # built once per layout, reused by every layer


def reference_memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None):
    """xformers' contract ([1, M, H, Dh] in and out) computed densely from the materialized bias."""
    bias = attn_bias.materialize((query.shape[1], key.shape[1]), dtype=query.dtype)
    scores = torch.einsum("bmhd,bnhd->bhmn", query, key) * scale + bias
    return torch.einsum("bhmn,bnhd->bmhd", scores.softmax(-1), value)


@pytest.mark.parametrize("make", [lambda: padded_layout(**PADDED), lambda: packed_layout(**PACKED)],
                         ids=["padded", "packed"])
def test_xformers_path_matches_math(make, monkeypatch):
    pytest.importorskip("xformers.ops")
    monkeypatch.setattr("xformers.ops.memory_efficient_attention", reference_memory_efficient_attention)
    layout = make()
    q, k, v = qkv(3, 9)
    # q, k, v as the encoder hands them over: [B, H, L, Dh] views of [B, L, H, Dh] storage.
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    torch.testing.assert_close(xformers_attention(q, k, v, layout), math_attention(q, k, v, layout),
                               atol=1e-5, rtol=0)


def test_masks_are_built_once_per_layout():
    layout = packed_layout(**PACKED)
    q, k, v = qkv(3, 9)
    sdpa_attention(q, k, v, layout)
    math_attention(q, k, v, layout)
    first = dict(layout.cache)
    sdpa_attention(q, k, v, layout)
    math_attention(q, k, v, layout)
    assert first.keys() == {"sdpa torch.float32", "math"}
    assert all(layout.cache[key] is first[key] for key in first)


def test_block_seqlens_derived_and_checked():
    assert packed_layout(**PACKED, supply_blocks=False).host_block_seqlens(3, 9) == (4, 3, 2, 2, 2, 3, 2, 5, 4)
    assert padded_layout(**PADDED, supply_blocks=False).host_block_seqlens(3, 9) == (9, 6, 3, 3, 6)
    assert AttentionLayout(None).host_block_seqlens(2, 5) == (5, 5)
    with pytest.raises(ValueError, match="cover 8 tokens"):
        AttentionLayout(None, block_seqlens=(4, 4)).host_block_seqlens(2, 5)


@pytest.fixture
def fresh_resolver():
    attention.RESOLVED.clear()
    attention._warned.clear()
    yield
    attention.RESOLVED.clear()
    attention._warned.clear()


def test_resolve_on_cpu(fresh_resolver, caplog):
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="protjepa.attention"):
        assert resolve_backend("auto", cpu, torch.float32) == "sdpa"
        assert resolve_backend("math", cpu, torch.float32) == "math"
        for _ in range(3):
            assert resolve_backend("xformers", cpu, torch.float32) == "sdpa"
        assert resolve_backend("xformers", cpu, torch.bfloat16) == "sdpa_fp32"  # what auto runs without it
        assert resolve_backend("auto", cpu, torch.bfloat16) == "sdpa_fp32"  # the CPU's fp32 backward is faster
        assert resolve_backend("auto", cpu, torch.bfloat16, grad=False) == "sdpa"  # its bf16 forward is
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no cpu kernels" in warnings[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 6  # one per (requested, device, dtype), however often it is asked
    with pytest.raises(ValueError, match="expected auto\\|xformers\\|sdpa\\|sdpa_fp32\\|math"):
        resolve_backend("flash", cpu, torch.float32)


def test_auto_probes_xformers_once_per_device_and_dtype(fresh_resolver, monkeypatch):
    probes = []
    monkeypatch.setattr(attention, "_xformers_problem", lambda *args: probes.append(args))
    cuda = torch.device("cuda", 0)
    for _ in range(3):
        assert resolve_backend("auto", cuda, torch.bfloat16, 32) == "xformers"
    assert resolve_backend("auto", cuda, torch.float32, 32) == "sdpa"  # fp32 never picks xformers on auto
    assert len(probes) == 1


def test_failed_probe_falls_back(fresh_resolver, monkeypatch, caplog):
    monkeypatch.setattr(attention, "_xformers_problem", lambda *args: "a probe call failed (RuntimeError: no)")
    cuda = torch.device("cuda", 0)
    with caplog.at_level(logging.WARNING, logger="protjepa.attention"):
        assert resolve_backend("auto", cuda, torch.bfloat16) == "sdpa"
        assert resolve_backend("xformers", cuda, torch.bfloat16) == "sdpa"
    assert len(caplog.records) == 1  # auto falls back silently; the explicit request warns


def test_xformers_build_match_names_the_profile_that_loads_its_kernels():
    """xformers' compiled library loads only beside the torch and CUDA it was built for; the
    requirements/torch-xformers.txt profile pins that pair for the installed xformers."""
    pins = dict(line.split("==") for line in (REPO / "requirements" / "torch-xformers.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    build = {"torch": "2.10.0+cu128", "cuda": 1208, "python": "3.10.19"}
    assert attention.xformers_build_problem(build, "2.10.0+cu128", "12.8") is None
    assert attention.xformers_build_problem(build, "2.10.0", "12.8.1") is None
    problem = attention.xformers_build_problem(build, "2.14.1+cu130", "13.0")
    assert problem == ("its library is built for torch 2.10.0 + CUDA 12.8, this is torch 2.14.1+cu130 + CUDA 13.0: "
                       f"{attention.XFORMERS_PROFILE}")
    assert "without CUDA" in attention.xformers_build_problem(build, "2.10.0+cpu", None)
    installed = attention.xformers_build()
    if installed is None:
        pytest.skip("xformers is not installed")
    from importlib.metadata import version
    assert pins["xformers"] == version("xformers")  # the profile pins the xformers this record is of
    assert attention.xformers_build_problem(installed, pins["torch"], "12.8") is None
    assert (attention.xformers_build_problem(installed, torch.__version__, torch.version.cuda) is None) == (
        torch.__version__.split("+")[0] == pins["torch"] and torch.version.cuda == "12.8")


def test_the_kernel_each_backend_runs_is_named(fresh_resolver, monkeypatch):
    cpu = torch.device("cpu")
    assert attention.sdpa_kernel(cpu, torch.float32, 16, packed=False, grad=True) == "flash_attention"
    assert attention.describe_kernel("math", cpu, torch.float32, 16, True, True) == (
        "math (explicit softmax, fp32 scores)")
    assert attention.describe_kernel("sdpa_fp32", cpu, torch.bfloat16, 16, True, True) == (
        "sdpa_fp32 (SDPA's flash_attention, fp32)")
    line = attention.attention_line("auto", cpu, torch.bfloat16, 16, packed=False)
    assert line == ("attention: sdpa_fp32 (SDPA's flash_attention, fp32) in training steps, sdpa (SDPA's "
                    "flash_attention, bf16) in forward-only passes (requested auto; padded rows)")
    assert attention.attention_line("auto", cpu, torch.float32, 16, packed=True) == (
        "attention: sdpa (SDPA's flash_attention, fp32) (requested auto; packed rows)")
    assert attention.attention_line("xformers", cpu, torch.float32, 16, packed=True).endswith(
        "(requested xformers; packed rows; not xformers: xformers has no cpu kernels)")
    # On a GPU, xformers' line names the operator its dispatcher picked in the probe; "-pt" ones are torch's.
    monkeypatch.setitem(attention.XFORMERS_KERNELS, ("cuda", torch.bfloat16, 32), "fa2F@2.5.7-pt")
    assert attention.describe_kernel("xformers", torch.device("cuda", 0), torch.bfloat16, 32, True, True) == (
        "xformers (fa2F@2.5.7-pt: torch kernel)")
