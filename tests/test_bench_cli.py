"""``protjepa bench``: the quick run writes every row and ratio; the timing protocol and the
ratios it reports are the ones documented (interleaved ABBA, medians of paired ratios)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from protjepa import precision
from protjepa.bench.batches import Prepared
from protjepa.bench.config import BenchConfig
from protjepa.bench.ratios import cost_over_floor, paired
from protjepa.bench.rows import Row, with_static_rows
from protjepa.bench.timing import measure
from protjepa.cli import main

STEP_ROWS = ["mlm", "mlm_jepa_masked", "mlm_jepa_ema_half", "mlm_jepa_all", "jepa_only", "mlm_packed",
             "peer_hf_mlm@128", "mlm_padded@128", "mlm_packed@128", "target_forward_last", "target_forward_half",
             "peer_hf_mlm", "latent_metrics"]
ENCODER_ROWS = ["encoder_fwd[math]", "encoder_fwd_bwd[math]", "encoder_fwd[sdpa]", "encoder_fwd_bwd[sdpa]"]
RATIOS = ["mlm / peer", "mlm packed / peer", "mlm / peer (crop 128)", "mlm packed / peer (crop 128)",
          "mlm_jepa_masked / floor", "mlm_jepa_ema_half / floor", "latent metrics / mlm_jepa_masked",
          "mlm_jepa_masked / mlm", "mlm_jepa_ema_half / mlm", "mlm_jepa_all / mlm", "jepa_only / mlm",
          "target_forward_last / mlm", "packed / padded (crop 128)", "packed / padded (step batches)",
          "math / sdpa fwd", "math / sdpa fwd_bwd"]
# Utilisation targets: MFU against the measured peaks (bf16's printed, judged only where bf16 is fast) and
# attention's share of the profiled MLM step.
TARGETS = ["mlm MFU", "mlm+bf16 MFU", "attention share mlm"]
EMBED_ROWS = ["embed", "embed_peer"]
EMBED_RATIOS = ["embed / peer (fp32)"]
# Beside the fp32 rows on a CPU that multiplies bf16 natively (BenchConfig.bf16_rows).
BF16_ROWS = ["mlm+bf16", "peer_hf_mlm+bf16", "mlm_jepa_masked+bf16", "embed+bf16", "embed_peer+bf16"]
BF16_RATIOS = ["mlm bf16 / fp32", "mlm_jepa_masked bf16 / fp32", "mlm bf16 / peer bf16", "peer bf16 / fp32",
               "embed / peer (bf16)", "embed bf16 / peer fp32", "attention share mlm+bf16"]
BF16_ENCODER_ROWS = [f"encoder_{kind}[{backend}]+bf16" for backend in ("math", "sdpa", "sdpa_fp32")
                     for kind in ("fwd", "fwd_bwd")]
NATIVE_BF16 = precision.cpu_bf16_missing() is None


def test_quick_run_writes_every_row(data_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--size", "tiny", "--threads", "1", "--data-root", str(data_root),
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["machine"]["torch"] == torch.__version__
    (run,) = result["runs"]
    rows = {r["name"]: r for r in run["rows"]}
    bf16_rows, bf16_ratios = (BF16_ROWS + BF16_ENCODER_ROWS, BF16_RATIOS) if NATIVE_BF16 else ([], [])
    # no xformers rows: it has no CPU kernels
    assert sorted(rows) == sorted(STEP_ROWS + ENCODER_ROWS + EMBED_ROWS + bf16_rows)
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["tokens_per_step"] > 0
    # The same batches for every padded row; the packed rows hold more residues under the same budget.
    assert len({rows[n]["tokens_per_step"] for n in rows if rows[n]["layout"] == "padded"}) == 1
    assert rows["mlm_packed@128"]["tokens_per_step"] > rows["mlm_padded@128"]["tokens_per_step"]
    ratios = {q["name"]: q for q in run["ratios"]}
    assert sorted(ratios) == sorted(RATIOS + EMBED_RATIOS + TARGETS + bf16_ratios)
    assert ratios["embed / peer (fp32)"]["target"] == ">= 1.5"
    # Both sides embed the same 8 sequences whole, from the same weights, and agree.
    assert rows["embed"]["tokens_per_step"] == rows["embed_peer"]["tokens_per_step"] > 8 * 30
    checks = {c["name"]: c for c in run["checks"]}
    assert checks["embeddings match transformers'"]["passed"], checks
    directions = [(d, k) for d in ("fp32", "bf16")[:1 + NATIVE_BF16] for k in ("fwd", "fwd_bwd")]
    # fp32 backends equal math to 1e-4; auto's pick is among the fastest (timing: reported, not asserted)
    assert checks["attention backends match math (fp32, fwd_bwd)"]["passed"], checks
    assert {f"auto attention is the fastest correct ({d}, {k})" for d, k in directions} <= set(checks)
    assert ratios["mlm_jepa_masked / floor"]["target"] == "<= 1.1"
    assert ratios["latent metrics / mlm_jepa_masked"]["target"] == "<= 0.01"
    assert ratios["mlm / peer (crop 128)"]["target"] == ratios["mlm / peer"]["target"] == ">= 1.5"
    assert ratios["mlm MFU"]["target"] == ">= 0.5" and ratios["attention share mlm"]["target"] == "<= 0.25"
    # This tiny model's bf16 products run far below 4x fp32's: its bf16 targets are not judged.
    peaks = run["peaks"]
    if peaks["bf16"] < 4 * peaks["fp32"]:
        assert ratios["mlm+bf16 MFU"]["met"] is None and "not applicable here" in ratios["mlm+bf16 MFU"]["what"]
    if NATIVE_BF16:
        assert ratios["mlm bf16 / peer bf16"]["target"] == ">= 1.5" and ratios["mlm bf16 / fp32"]["target"] == ">= 2"
    assert [p["row"] for p in run["profiles"]] == ["mlm", "mlm+bf16"][:1 + NATIVE_BF16]
    printed = capsys.readouterr().out
    assert "mlm_jepa_masked / floor" in printed and "peer_hf_mlm" in printed


def test_profile_splits_every_step_row(data_root, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--size", "tiny", "--threads", "1", "--no-peer", "--embed-sequences", "0",
                 "--backends", "sdpa", "--profile", "--data-root", str(data_root), "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    profiles = {p["row"]: p for p in run["profiles"]}
    steps = ["mlm", "mlm_jepa_masked", "mlm_jepa_ema_half", "mlm_jepa_all", "jepa_only", "mlm_packed",
             "mlm_padded@128", "mlm_packed@128"]
    assert sorted(profiles) == sorted(steps + (["mlm+bf16", "mlm_jepa_masked+bf16"] if NATIVE_BF16 else []))
    for profile in profiles.values():
        assert profile["split"]["attention"] > 0 and profile["split"]["optimizer"] > 0, profile


def test_compiled_rows_run_as_training_compiles(data_root, tmp_path, capsys, monkeypatch):
    """--compile adds each of the MLM and masked MLM+JEPA steps compiled on padded rows (+compile) and
    on static shapes with training's compile options (+static; CUDA graphs on a GPU). aot_eager keeps
    the compiling short: what runs, not how fast, is checked here."""
    compile_calls = []
    compile_model = torch.compile

    def aot_eager(model, **options):
        compile_calls.append(options)
        return compile_model(model, backend="aot_eager", **options)

    monkeypatch.setattr(torch, "compile", aot_eager)
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--size", "tiny", "--threads", "1", "--embed-sequences", "0",
                 "--backends", "sdpa", "--compile", "--data-root", str(data_root), "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    rows = {r["name"]: r for r in run["rows"]}
    for variant in ("mlm", "mlm_jepa_masked"):
        assert rows[f"{variant}+compile"]["layout"] == "padded"
        static = rows[f"{variant}+static"]
        assert static["layout"] == "static" and "torch.compile: on, static shapes" in static["what"]
        assert static["tokens_per_s"] > 0 and static["mfu"] > 0
    # the padded rows compiled as they are; the static ones with training's options on a CPU
    assert compile_calls == [{}, {"dynamic": False}] * 2
    ratios = {q["name"]: q for q in run["ratios"]}
    assert {"mlm compile / eager", "mlm_jepa_masked compile / eager", "mlm static / packed"} <= set(ratios)
    # ours as training runs it on a GPU against transformers' eager step: the issue's 1.5x
    assert ratios["mlm compile / peer"]["target"] == ratios["mlm static / peer"]["target"] == ">= 1.5"
    err = capsys.readouterr().err
    assert re.search(r"^tiny: warm-up mlm\+static, \d+\.\d s$", err, re.M), err
    assert re.search(r"^tiny: warm-up of \d+ rows done, \d+ s$", err, re.M), err
    assert "tiny: repetition 1/1" in err and "mlm+static " in err


def test_no_cuda_graph_rows_when_the_rows_fill_memory():
    # A CUDA graph keeps its step's memory between replays; --fill-memory sizes rows for one step at a time.
    assert with_static_rows(BenchConfig(compile=True))
    assert not with_static_rows(BenchConfig(compile=True, fill_memory=True))
    assert not with_static_rows(BenchConfig(compile=False))


def test_profile_on_a_missing_gpu_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--quick", "--profile", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "protjepa: error: --device cuda: torch sees no CUDA device (this suite needs a GPU)"


def test_bf16_on_a_cpu_without_it_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_flags", lambda: {"avx512_bf16": False, "amx_bf16": False})
    assert main(["bench", "--quick", "--size", "tiny", "--dtype", "bf16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("protjepa: error: --dtype bf16:") and "AVX512-BF16" in err and "\n" not in err


def test_unknown_size_is_a_one_line_error(capsys):
    assert main(["bench", "--quick", "--size", "esm2_3b"]) == 2
    assert "--size 'esm2_3b': expected esm2_8m|" in capsys.readouterr().err


def test_rows_interleave_abba_on_the_same_batches():
    calls = []

    def row(name):
        return Row(name, name, "padded", lambda p: calls.append((name, p.tokens)))

    batches = {"padded": [Prepared(None, tokens=t, counts=None, peer_inputs={})
                          for t in (10, 20, 30)]}
    config = BenchConfig(repeats=3, steps=2, warmup=1)
    samples = measure([row("a"), row("b")], batches, config, torch.device("cpu"))
    assert calls == [("a", 10), ("b", 10),  # warm-up
                     ("a", 10), ("a", 20), ("b", 10), ("b", 20),  # repetition 0: a then b
                     ("b", 30), ("b", 10), ("a", 30), ("a", 10),  # 1: reversed, the next batches
                     ("a", 20), ("a", 30), ("b", 20), ("b", 30)]
    assert [tokens for _, tokens, _ in samples["a"]] == [30, 40, 50]


def test_a_compiled_row_that_fails_its_warm_up_is_left_out_and_the_others_are_timed():
    """A GPU session must not lose its eager rows to one step that torch.compile or CUDA graphs refuse;
    an eager row that fails is a bug in the bench, not a measurement, and stops it."""
    def broken(_):
        raise RuntimeError("CUDA graphs: a host sync in the step\nmore detail")

    ran = []
    rows = [Row("mlm", "mlm", "padded", lambda p: ran.append("mlm")),
            Row("mlm+static", "mlm static", "padded", broken, compiled=True)]
    batches = {"padded": [Prepared(None, tokens=10, counts=None, peer_inputs={})]}
    failed, lines = {}, []
    samples = measure(rows, batches, BenchConfig(repeats=2, steps=1, warmup=1), torch.device("cpu"), lines.append,
                      failed)
    assert list(samples) == ["mlm"] and ran == ["mlm"] * 3  # warm-up, then both repetitions
    assert failed == {"mlm+static": "RuntimeError: CUDA graphs: a host sync in the step"}
    assert "esm2_8m: warm-up mlm+static failed, left out: RuntimeError: CUDA graphs: a host sync in the step" in lines
    assert "esm2_8m: warm-up of 1 rows done, 0 s" in lines
    with pytest.raises(RuntimeError, match="host sync"):
        measure([Row("mlm", "mlm", "padded", broken)], batches, BenchConfig(repeats=1, warmup=1), torch.device("cpu"))


def test_ratios_are_medians_of_paired_repetitions():
    # (seconds, tokens, flops) per repetition
    samples = {"jepa": [(3.0, 100, 0), (5.0, 100, 0), (4.0, 100, 0)],
               "mlm": [(2.0, 100, 0), (3.0, 100, 0), (2.0, 100, 0)],
               "fwd": [(1.0, 100, 0), (1.0, 100, 0), (2.0, 100, 0)]}
    # per repetition 3/3, 5/4, 4/4 -> median 1.0
    assert cost_over_floor(samples, "jepa", "mlm", "fwd") == pytest.approx(1.0)
    # tokens/s ratios 2/3, 3/5, 2/4 -> median 0.6
    assert paired(samples, "jepa", "mlm") == pytest.approx(0.6)


def test_cost_curves_measure_every_point_and_plot_them(tmp_path, data_root, capsys):
    png, out = tmp_path / "curves.png", tmp_path / "curves.json"
    assert main(["bench", "--curves", str(png), "--size", "tiny", "--repeats", "1", "--steps", "1", "--warmup", "0",
                 "--json", str(out), "--data-root", str(data_root)]) == 0
    points = json.loads(out.read_text())["curves"][0]["points"]
    crops = {(p["series"], p["x"]) for p in points if p["curve"] == "crop"}
    assert crops == {(s, c) for s in ("mlm", "mlm_jepa_masked", "peer_hf_mlm") for c in (128, 256, 512, 1024)}
    batches = {(p["series"], p["x"]) for p in points if p["curve"] == "batch"}
    assert batches == {(s, b) for s in ("mlm", "peer_hf_mlm") for b in (2048, 4096, 8192, 16384)}
    stages = [(p["series"], p["x"]) for p in points if p["curve"] == "pipeline"]
    assert stages == [("read", 0), ("+ crop, encode, collate", 0), ("+ masking", 0), ("+ packing", 0),
                      ("DataLoader", 1), ("DataLoader", 2)]
    assert all(p["tokens_per_s"] > 0 for p in points)
    assert all(p["range"][0] <= p["tokens_per_s"] <= p["range"][1] for p in points if p["curve"] != "pipeline")
    assert png.stat().st_size > 10_000 and f"plotted {png}" in capsys.readouterr().out
