"""Seeds and statistics (protjepa.evaluation.seed_stats): pooled seed noise, the noise band, the
minimal detectable effect, the noise rule's W/L/T, the paired Wilcoxon test and the seed-vs-seed
null, each against values worked out by hand."""
from __future__ import annotations

import itertools
import json
import math
import statistics

import pytest
from scipy import stats

from protjepa.cli import main
from protjepa.evaluation.compare import CompareError, compare
from protjepa.evaluation.seed_stats import (
    LOSS,
    NOT_SEPARABLE,
    WIN,
    SeedNoise,
    compare_seeds,
    load_seeds,
    minimal_detectable_effect,
    noise_band,
    null_summary,
    paired_test,
    pooled_noise,
    seed_pairs,
    seed_scores,
    task_noise,
    wilcoxon_p,
)

TIE = 0.005


def _results(scores: dict[str, float]) -> dict:
    return {"tasks": {task: {"metric": "spearman", "value": value} for task, value in scores.items()}}


def test_pooled_noise_weights_variances_by_n_minus_one():
    # variances 1 (n 3) and 2 (n 2); a single seed adds nothing: (2 * 1 + 1 * 2) / 3 = 4/3
    noise = pooled_noise([[1.0, 2.0, 3.0], [2.0, 4.0], [5.0]])
    assert noise.df == 3
    assert noise.std == pytest.approx(math.sqrt(4 / 3), rel=1e-12)
    assert pooled_noise([[1.0], [7.0]]) == SeedNoise(None, 0)


def test_noise_band_is_twice_the_standard_error_of_the_difference():
    # 2 sqrt(4/3) sqrt(1/3 + 1/2) = 2 sqrt(10/9)
    assert noise_band(SeedNoise(math.sqrt(4 / 3), 3), 3, 2) == pytest.approx(2 * math.sqrt(10) / 3, rel=1e-12)
    assert noise_band(SeedNoise(None, 0), 3, 3) is None


def test_minimal_detectable_effect_by_hand():
    t_975_df3, t_80_df3 = 3.1824463052837078, 0.9784723123633042  # scipy.stats.t.ppf(0.975 / 0.8, 3)
    mde = minimal_detectable_effect(SeedNoise(math.sqrt(4 / 3), 3), 3)
    assert mde == pytest.approx((t_975_df3 + t_80_df3) * math.sqrt(4 / 3) * math.sqrt(2 / 3), rel=1e-9)
    assert mde == pytest.approx(3.9229, abs=1e-4)
    assert minimal_detectable_effect(SeedNoise(None, 0), 3) is None


# Three seeds a variant, four tasks. Per task: the seed noise s pooled over A and B, the band
# 2 s sqrt(2/3), delta = mean A - mean B, then the outcome under the tie rule and the noise rule.
A = {"t1": [0.60, 0.62, 0.64], "t2": [0.50, 0.55, 0.60], "t3": [0.30, 0.30, 0.30], "t4": [0.700, 0.702, 0.704]}
B = {"t1": [0.50, 0.52, 0.54], "t2": [0.48, 0.53, 0.58], "t3": [0.40, 0.42, 0.44], "t4": [0.699, 0.701, 0.703]}
S = {"t1": 0.02, "t2": 0.05, "t3": math.sqrt((2 * 0 + 2 * 0.02**2) / 4), "t4": 0.002}
#           delta   band (2 s 0.8165)  tie rule  noise rule
# t1       +0.10    0.0327             W         W
# t2       +0.02    0.0816             W         T   (beyond the tie tolerance, within the noise)
# t3       -0.12    0.0231             L         L
# t4       +0.001   0.0033             T         T


def _seeded(a: dict[str, list[float]], b: dict[str, list[float]]):
    seeds = [0, 1, 2]
    probed_a = [_results({t: v[k] for t, v in a.items()}) for k in seeds]
    probed_b = [_results({t: v[k] for t, v in b.items()}) for k in seeds]
    scores_a, scores_b = seed_scores(probed_a, seeds), seed_scores(probed_b, seeds)
    noise = task_noise([scores_a, scores_b])
    means = compare(_results({t: statistics.fmean(v) for t, v in a.items()}),
                    _results({t: statistics.fmean(v) for t, v in b.items()}), TIE, "A", "B")
    return compare_seeds(means, scores_a, scores_b, noise), noise


def test_noise_rule_on_a_three_seed_table():
    seeded, noise = _seeded(A, B)
    assert {t: n.std for t, n in noise.items()} == pytest.approx(S, rel=1e-9)
    assert {t: n.df for t, n in noise.items()} == {"t1": 4, "t2": 4, "t3": 4, "t4": 4}
    bands = {r.row.task: r.band for r in seeded.rows}
    assert bands == pytest.approx({t: 2 * s * math.sqrt(2 / 3) for t, s in S.items()}, rel=1e-9)
    assert [r.row.outcome(TIE) for r in seeded.rows] == ["W", "W", "L", "T"]
    assert [r.outcome(TIE) for r in seeded.rows] == ["W", "T", "L", "T"]
    assert (seeded.means.count("W"), seeded.means.count("L"), seeded.means.count("T")) == (2, 1, 1)
    assert (seeded.count("W"), seeded.count("L"), seeded.count("T")) == (1, 1, 2)
    assert seeded.p_value == pytest.approx(0.75)  # P(X >= 1), X ~ Binomial(2, 1/2)
    first = seeded.rows[0]
    assert (first.a.mean, first.a.std, first.a.n) == (pytest.approx(0.62), pytest.approx(0.02), 3)
    assert seeded.verdict == NOT_SEPARABLE


def test_a_task_without_seed_noise_falls_back_to_the_tie_rule():
    scores_a, scores_b = {"t": {0: 0.51}}, {"t": {0: 0.50}}
    noise = task_noise([scores_a, scores_b])
    assert noise == {"t": SeedNoise(None, 0)}
    seeded = compare_seeds(compare(_results({"t": 0.51}), _results({"t": 0.50}), TIE), scores_a, scores_b, noise)
    assert seeded.rows[0].band is None and seeded.rows[0].outcome(TIE) == "W"
    assert seeded.paired.n == 0 and seeded.paired.left_out == ("t",) and seeded.paired.greater == 1.0


def test_wilcoxon_against_the_exact_distribution_enumerated_by_hand():
    deltas = [1.0, 2.5, -0.5, 3.0]  # ranks of |delta|: 2, 3, 1, 4; W+ = 2 + 3 + 4 = 9
    # W+ under the null: every assignment of signs to the ranks 1-4 is equally likely
    sums = [sum(rank for rank, positive in zip((1, 2, 3, 4), signs) if positive)
            for signs in itertools.product((False, True), repeat=4)]
    assert sum(s >= 9 for s in sums) == 2  # only rank 1 negative, or none
    greater = sum(s >= 9 for s in sums) / 16
    less = sum(s <= 9 for s in sums) / 16
    assert (greater, less) == (2 / 16, 15 / 16)
    assert wilcoxon_p(deltas, "greater") == pytest.approx(greater)
    assert wilcoxon_p(deltas, "less") == pytest.approx(less)
    assert wilcoxon_p(deltas, "two-sided") == pytest.approx(2 * greater)  # symmetric null: W+ <= 1 as likely
    assert wilcoxon_p(deltas, "greater") == pytest.approx(stats.wilcoxon(deltas, alternative="greater").pvalue)
    assert wilcoxon_p([0.0, 0.0], "greater") == 1.0


def test_paired_test_standardises_each_task_by_its_seed_noise():
    # x: A 1 2 3, B 0 2 1 -> both variances 1, s = 1; deltas 1 0 2 -> z 1 0 2
    # y: A 10 14 12, B 10 10 10 -> variances 4 and 0, s = sqrt(2); deltas 0 4 2 -> z 0 2.83 1.41
    a = {"x": {0: 1.0, 1: 2.0, 2: 3.0}, "y": {0: 10.0, 1: 14.0, 2: 12.0}}
    b = {"x": {0: 0.0, 1: 2.0, 2: 1.0}, "y": {0: 10.0, 1: 10.0, 2: 10.0, 3: 99.0}}  # seed 3: B only, unpaired
    noise = {"x": SeedNoise(1.0, 4), "y": SeedNoise(math.sqrt(2), 4)}
    paired = paired_test(a, b, noise, ["x", "y"])
    assert paired.n == 6 and paired.left_out == ()
    # the zeros drop out; the four left are all positive: W+ = 1 + 2 + 3 + 4 = 10, the largest of 16
    assert paired.greater == pytest.approx(1 / 16)
    assert paired.two_sided == pytest.approx(2 / 16)
    assert paired.less == pytest.approx(1.0)
    z = [1.0, 0.0, 2.0, 0.0, 4 / math.sqrt(2), 2 / math.sqrt(2)]
    assert paired.greater == pytest.approx(stats.wilcoxon(z, alternative="greater").pvalue)


def test_verdict_needs_the_sign_test_and_the_paired_test():
    base = [0.50, 0.51, 0.52]
    a = {f"t{i}": [v + 0.1 for v in base] for i in range(6)}  # 6 tasks, every seed 0.1 better
    b = {f"t{i}": list(base) for i in range(6)}
    better, _ = _seeded(a, b)
    assert better.count("W") == 6 and better.p_value == pytest.approx(1 / 64)
    assert better.paired.n == 18 and better.paired.greater < 1e-4
    assert better.verdict == WIN
    worse, _ = _seeded(b, a)
    assert worse.verdict == LOSS
    four, _ = _seeded({t: v for t, v in list(a.items())[:4]}, {t: v for t, v in list(b.items())[:4]})
    assert four.count("W") == 4 and four.p_value == pytest.approx(1 / 16)  # 4 of 4 is not enough
    assert four.verdict == NOT_SEPARABLE


def test_seed_against_seed_counts():
    seeds = [0, 1, 2]
    probed = [_results({"a": 0.50, "b": 0.60, "c": 0.70, "d": 0.80}),
              _results({"a": 0.52, "b": 0.60, "c": 0.69, "d": 0.79}),
              _results({"a": 0.53, "b": 0.62, "c": 0.72, "d": 0.83})]
    pairs = seed_pairs("x", probed, seeds, TIE)
    # seed 1 vs 0: +.02 0 -.01 -.01 = 1 / 2 / 1, turned to seed 0 over seed 1: 2 / 1 / 1
    # seed 2 vs 0: all up by .02-.03 = 4 / 0 / 0; seed 2 vs 1: up by .01-.04 = 4 / 0 / 0
    assert [(p.name_a, p.name_b) for p in pairs] == [("x seed 0", "seed 1"), ("x seed 2", "seed 0"),
                                                     ("x seed 2", "seed 1")]
    assert [(p.count("W"), p.count("L"), p.count("T")) for p in pairs] == [(2, 1, 1), (4, 0, 0), (4, 0, 0)]
    assert [p.p_value for p in pairs] == pytest.approx([0.5, 1 / 16, 1 / 16])
    summary = null_summary(pairs)
    assert (summary.pairs, summary.below_alpha) == (3, 0)
    assert (summary.wins, summary.losses, summary.ties) == pytest.approx((10 / 3, 1 / 3, 1 / 3))
    assert summary.smallest_p == pytest.approx(1 / 16)


def _seed_folders(root, scores: dict[str, list[float]], probed: tuple[int, ...] = (0, 1, 2)):
    """An experiment's layout: ``root/seed<k>/probe/results.json``; seeds outside ``probed`` left unprobed."""
    for k in range(3):
        (root / f"seed{k}").mkdir(parents=True)
        if k in probed:
            (root / f"seed{k}" / "probe").mkdir()
            (root / f"seed{k}" / "probe" / "results.json").write_text(
                json.dumps(_results({t: v[k] for t, v in scores.items()})))
    return root


def test_compare_command_over_seed_folders(tmp_path, capsys):
    a, b = _seed_folders(tmp_path / "jepa", A), _seed_folders(tmp_path / "mlm", B)
    assert load_seeds(a)[1] == [0, 1, 2]
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    # the three-seed table worked out above: t1 0.62 ± 0.02 against 0.52 ± 0.02, band 2 (0.02) sqrt(2/3)
    assert "| t1 | spearman | 0.6200 ± 0.0200 (3) | 0.5200 ± 0.0200 (3) | +0.1000 | 0.0327 | W | W |" in out
    assert "| t2 | spearman | 0.5500 ± 0.0500 (3) | 0.5300 ± 0.0500 (3) | +0.0200 | 0.0816 | T | W |" in out
    assert "noise rule: 1 wins / 1 losses / 2 ties**; one-sided sign test (ties left out) p = 0.75" in out
    assert "tie rule: 2 / 1 / 1" in out and "12 pairs" in out
    assert f"**verdict: {NOT_SEPARABLE}**" in out
    # B's seeds against each other: every task moves up by the same step from seed to seed
    assert "- mlm, seed against seed (3 pairs, tie rule)" in out
    assert (tmp_path / "cmp" / "compare.md").read_text() in out
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def test_compare_one_result_against_seeds_and_unprobed_seed_folders(tmp_path, capsys):
    single = tmp_path / "single"
    single.mkdir()
    (single / "results.json").write_text(json.dumps(_results({t: v[0] for t, v in A.items()})))
    b = _seed_folders(tmp_path / "mlm", B, probed=(0, 2))  # seed 1 unprobed: left out
    assert load_seeds(b)[1] == [0, 2] and load_seeds(single)[1] == [None]
    assert main(["compare", str(single), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    # t1: 0.60 (one result) against seeds 0 and 2 of B, mean 0.52, s = std(0.50, 0.54) = 0.02 sqrt(2)
    band = 2 * 0.02 * math.sqrt(2) * math.sqrt(1 + 1 / 2)
    assert f"| t1 | spearman | 0.6000 (1) | 0.5200 ± 0.0283 (2) | +0.0800 | {band:.4f} | W | W |" in out
    assert "paired test: no seed in common" in out and f"**verdict: {NOT_SEPARABLE}**" in out
    empty = _seed_folders(tmp_path / "empty", B, probed=())
    with pytest.raises(CompareError, match=r"empty: none of its seed folders \(seed0, seed1, seed2\) holds probe"):
        load_seeds(empty)
