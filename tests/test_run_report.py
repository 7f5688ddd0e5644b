"""The run's summary and curves: what a user sees of collapse without reading metrics.jsonl."""
from __future__ import annotations

import matplotlib.image

from protjepa.training.summary import _regularizer_ids, format_summary, plot_curves, rank_warning, summarize_run


def records(rank_end: float) -> list[dict]:
    common = {"tokens": 100, "seconds": 1.0, "fraction": 0.5}
    return [
        {"kind": "monitor", "step": 0, **common, "monitor/embed_std": 0.02, "monitor/effective_rank": 10.0,
         "val/sigreg/loss": 150.0, "val/sigreg/std": 0.05},
        {"kind": "train", "step": 2, **common, "padding_fraction": 0.1, "loss": 160.0, "mlm/loss": 3.6,
         "sigreg/loss": 155.0, "sigreg/std": 0.05, "jepa/pred_std": 0.4},
        {"kind": "train", "step": 4, **common, "padding_fraction": 0.1, "loss": 5.0, "mlm/loss": 3.0,
         "sigreg/loss": 2.0, "sigreg/std": 0.9, "jepa/pred_std": 0.9},
        {"kind": "monitor", "step": 4, **common, "monitor/embed_std": 0.03, "monitor/effective_rank": rank_end,
         "val/sigreg/loss": 2.5, "val/sigreg/std": 0.95},
    ]


def test_a_rank_below_half_its_start_is_flagged_in_the_summary(tmp_path):
    fallen = summarize_run(records(rank_end=4.9))
    assert rank_warning(fallen) == ("warning: held-out effective rank fell below half its start (10.00 -> 4.90): "
                                    "possible collapse; compare with an MLM-only run under the same budget")
    assert format_summary(fallen, tmp_path).splitlines()[-1] == rank_warning(fallen)
    held = summarize_run(records(rank_end=5.0))
    assert rank_warning(held) is None and "warning" not in format_summary(held, tmp_path)


def test_curves_get_a_panel_per_regularizer(tmp_path):
    # sigreg logs its statistic and its input's std; jepa's pred_std has no statistic beside it
    assert _regularizer_ids(records(5.0)) == ["sigreg"]
    path = tmp_path / "curves.png"
    plot_curves(records(5.0), path)
    height, width, _ = matplotlib.image.imread(path).shape
    # three losses + the collapse monitors + the regulariser: two rows of three panels
    assert (height, width) == (680, 1350)


def test_the_summary_gives_the_runs_model_flops_or_says_they_were_not_counted(tmp_path):
    counted = [{**r, "flops": 2.5e12} for r in records(rank_end=5.0)]
    assert summarize_run(counted)["flops"] == 2.5e12
    assert "steps 4 | 100 non-padding tokens | 2.5e+12 model FLOPs | 1.0 s of training clock" in \
        format_summary(summarize_run(counted), tmp_path)
    uncounted = summarize_run([{**r, "flops": None} for r in records(rank_end=5.0)])  # an encoder with no count
    assert uncounted["flops"] is None and "| model FLOPs not counted |" in format_summary(uncounted, tmp_path)
