"""``protjepa bench``: the quick run writes every row and ratio; the timing protocol and the
ratios it reports are the ones documented (interleaved ABBA, medians of paired ratios)."""
from __future__ import annotations

import json

import pytest
import torch

from protjepa import bench
from protjepa.cli import main

STEP_ROWS = ["mlm", "mlm_jepa_masked", "mlm_jepa_ema_half", "mlm_jepa_all", "jepa_only", "mlm_packed",
             "peer_hf_mlm@128", "mlm_padded@128", "mlm_packed@128", "target_forward_last", "target_forward_half",
             "peer_hf_mlm"]
ENCODER_ROWS = ["encoder_fwd[math]", "encoder_fwd_bwd[math]", "encoder_fwd[sdpa]", "encoder_fwd_bwd[sdpa]"]
RATIOS = ["mlm / peer", "mlm packed / peer", "mlm / peer (crop 128)", "mlm packed / peer (crop 128)",
          "mlm_jepa_masked / floor", "mlm_jepa_ema_half / floor",
          "mlm_jepa_masked / mlm", "mlm_jepa_ema_half / mlm", "mlm_jepa_all / mlm", "jepa_only / mlm",
          "target_forward_last / mlm", "packed / padded (crop 128)", "packed / padded (step batches)",
          "math / sdpa fwd", "math / sdpa fwd_bwd"]


def test_quick_run_writes_every_row(data_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--size", "tiny", "--threads", "1", "--data-root", str(data_root),
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["machine"]["torch"] == torch.__version__
    (run,) = result["runs"]
    rows = {r["name"]: r for r in run["rows"]}
    assert sorted(rows) == sorted(STEP_ROWS + ENCODER_ROWS)  # no xformers rows: it has no CPU kernels
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["tokens_per_step"] > 0
    # The same batches for every padded row; the packed rows hold more residues under the same budget.
    assert len({rows[n]["tokens_per_step"] for n in rows if rows[n]["layout"] == "padded"}) == 1
    assert rows["mlm_packed@128"]["tokens_per_step"] > rows["mlm_padded@128"]["tokens_per_step"]
    ratios = {q["name"]: q for q in run["ratios"]}
    assert sorted(ratios) == sorted(RATIOS)
    assert ratios["mlm / peer"]["target"] == ">= 1.3" and ratios["mlm_jepa_masked / floor"]["target"] == "<= 1.1"
    printed = capsys.readouterr().out
    assert "mlm_jepa_masked / floor" in printed and "peer_hf_mlm" in printed


def test_bf16_on_cpu_is_a_one_line_error(capsys):
    assert main(["bench", "--quick", "--size", "tiny", "--dtype", "bf16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("protjepa: error: --dtype bf16:") and "\n" not in err


def test_unknown_size_is_a_one_line_error(capsys):
    assert main(["bench", "--quick", "--size", "esm2_3b"]) == 2
    assert "--size 'esm2_3b': expected esm2_8m|" in capsys.readouterr().err


def test_rows_interleave_abba_on_the_same_batches():
    calls = []

    def row(name):
        return bench.Row(name, name, "padded", lambda p: calls.append((name, p.tokens)))

    batches = {"padded": [bench.Prepared(None, tokens=t, attention_pairs=0, masked=0, peer_inputs={})
                          for t in (10, 20, 30)]}
    config = bench.BenchConfig(repeats=3, steps=2, warmup=1)
    samples = bench.measure([row("a"), row("b")], batches, config, torch.device("cpu"))
    assert calls == [("a", 10), ("b", 10),  # warm-up
                     ("a", 10), ("a", 20), ("b", 10), ("b", 20),  # repetition 0: a then b
                     ("b", 30), ("b", 10), ("a", 30), ("a", 10),  # 1: reversed, the next batches
                     ("a", 20), ("a", 30), ("b", 20), ("b", 30)]
    assert [tokens for _, tokens, _ in samples["a"]] == [30, 40, 50]


def test_ratios_are_medians_of_paired_repetitions():
    # (seconds, tokens, flops) per repetition
    samples = {"jepa": [(3.0, 100, 0), (5.0, 100, 0), (4.0, 100, 0)],
               "mlm": [(2.0, 100, 0), (3.0, 100, 0), (2.0, 100, 0)],
               "fwd": [(1.0, 100, 0), (1.0, 100, 0), (2.0, 100, 0)]}
    # per repetition 3/3, 5/4, 4/4 -> median 1.0
    assert bench.cost_over_floor(samples, "jepa", "mlm", "fwd") == pytest.approx(1.0)
    # tokens/s ratios 2/3, 3/5, 2/4 -> median 0.6
    assert bench.paired(samples, "jepa", "mlm") == pytest.approx(0.6)


def test_flop_counts_by_hand():
    # 2 blocks of width 4: 24 * 16 per token per block, 4 * 4 per attending pair per block
    assert bench.encoder_flops(4, 2, tokens=10, attention_pairs=50) == 2 * (24 * 16 * 10 + 16 * 50)
    assert bench.lm_head_flops(4, 33, positions=3) == 2 * 3 * (16 + 4 * 33)
