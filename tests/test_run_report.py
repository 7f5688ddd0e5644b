"""The run's summary and curves: what a user sees of collapse without reading metrics.jsonl."""
from __future__ import annotations

import matplotlib.image

from protjepa.objectives.base import LatentScore
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


def latent_records(lift: float) -> list[dict]:
    held = {"val/mlm/loss": 2.674, "val/mlm/perplexity": 14.5, "val/mlm/unigram_entropy": 2.895,
            "val/jepa/cosine": 0.55 + lift, "val/jepa/cosine_of_mean": 0.55, "val/jepa/lift": lift}
    return [*records(rank_end=7.5)[:-1], {**records(rank_end=7.5)[-1], **held}]


def test_the_summary_sets_each_held_out_score_beside_a_constant_predictions(tmp_path):
    learned = format_summary(summarize_run(latent_records(0.06), {"jepa": LatentScore("lift")}), tmp_path).splitlines()
    assert "held-out MLM loss (mlm) 2.674 nats; a constant prediction (the residues' unigram entropy) scores 2.895" \
        in learned
    assert ("held-out latent term jepa: lift +0.060 (cosine 0.610, the mean target's 0.550); lift > 0 beats the "
            "constant") in learned
    assert not any(line.startswith("warning") for line in learned)
    constant = format_summary(summarize_run(latent_records(-0.21), {"jepa": LatentScore("lift")}), tmp_path).splitlines()
    assert ("warning: the latent term jepa predicts the held-out targets no better than the best constant (lift 0): "
            "lift -0.210 (cosine 0.340, the mean target's 0.550)") in constant
    unscored = format_summary(summarize_run(latent_records(-0.21)), tmp_path)  # a run made before latent scores
    assert "latent term" not in unscored


def test_curves_get_a_latent_panel_beside_the_constant(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves(latent_records(0.06) + [{"kind": "train", "step": 6, "tokens": 1, "seconds": 1.0, "fraction": 1.0,
                                          "loss": 4.0, "mlm/loss": 2.9, "jepa/cosine": 0.6, "jepa/cosine_of_mean": 0.5,
                                          "jepa/r2": 0.1, "padding_fraction": 0.1}], path,
                latent={"jepa": LatentScore("lift")})
    height, width, _ = matplotlib.image.imread(path).shape
    # three losses + the collapse monitors + the latent term (with its cosine axis) + the regulariser: 2 rows of 3
    assert (height, width) == (680, 1350)


def test_an_objectives_own_score_is_set_beside_its_constant_and_a_missing_one_is_one_line(tmp_path):
    own = [*records(rank_end=7.5)[:-1], {**records(rank_end=7.5)[-1], "val/d2v/agreement": 0.42}]
    lines = format_summary(summarize_run(own, {"d2v": LatentScore("agreement", 0.5)}), tmp_path).splitlines()
    assert "held-out latent term d2v: agreement +0.420; agreement > 0.5 beats the constant" in lines
    assert ("warning: the latent term d2v predicts the held-out targets no better than the best constant "
            "(agreement 0.5): agreement +0.420") in lines
    # Declared, but the held-out batch logged no such metric (a run that ended early, an old plugin): one line.
    missing = format_summary(summarize_run(records(rank_end=7.5), {"d2v": LatentScore("agreement", 0.5)}), tmp_path)
    assert [line for line in missing.splitlines() if "d2v" in line] == [
        "held-out latent term d2v: its score agreement was not logged on the held-out batch (no val/d2v/agreement): "
        "whether it beats a constant is not known"]


def test_an_mlm_only_run_is_not_told_to_compare_with_an_mlm_only_run():
    fallen = summarize_run(records(rank_end=4.9), objectives={"mlm": "mlm"})
    assert rank_warning(fallen).endswith("possible collapse; MLM alone also loses rank early and often recovers: "
                                         "see whether it recovers under a longer budget")
    with_jepa = summarize_run(records(rank_end=4.9), objectives={"mlm": "mlm", "jepa": "jepa"})
    assert rank_warning(with_jepa).endswith("compare with an MLM-only run under the same budget")
