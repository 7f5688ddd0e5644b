"""Seeds and statistics (protjepa.evaluation.seed_stats, .verdicts): the pooled seed noise, the
per-task rule (paired t, test-set noise, the metric's resolution), the tests over tasks (Wilcoxon,
sign test, two-level bootstrap, Holm, the run-effect check) and the compare command, each against
values worked out by hand. Their false-positive rates: tests/test_calibration.py."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from protjepa.cli import main
from protjepa.evaluation.compare import CompareError
from protjepa.evaluation.examples import EXAMPLES_FILE, task_examples, write_examples
from protjepa.evaluation.family import family_statistics
from protjepa.evaluation.seed_stats import (
    TEST_NOISE_OLD,
    SeedNoise,
    VariantRuns,
    beyond,
    combined_error,
    load_seeds,
    pooled_noise,
    resolution,
    task_test,
    t_test_p,
)
from protjepa.evaluation.verdicts import (
    LOSS,
    NOT_SEPARABLE,
    WIN,
    compare_family,
    holm,
    run_effect,
    sign_test_size,
    sign_test_two_sided,
    two_level_interval,
    wilcoxon_two_sided,
)

TIE = 0.005


def _results(scores: dict[str, float], metric: str = "spearman") -> dict:
    return {"tasks": {task: {"metric": metric, "value": value} for task, value in scores.items()}}


def _variant(name: str, table: dict[str, list[float]], seeds=(0, 1, 2)) -> VariantRuns:
    return VariantRuns(name, [_results({t: v[k] for t, v in table.items()}) for k in range(len(seeds))], list(seeds))


def test_pooled_noise_weights_variances_by_n_minus_one():
    # variances 1 (n 3) and 2 (n 2); a single seed adds nothing: (2 * 1 + 1 * 2) / 3 = 4/3
    noise = pooled_noise([[1.0, 2.0, 3.0], [2.0, 4.0], [5.0]])
    assert noise.df == 3
    assert noise.std == pytest.approx(math.sqrt(4 / 3), rel=1e-12)
    assert pooled_noise([[1.0], [7.0]]) == SeedNoise(None, 0)


def test_paired_t_by_hand():
    # deltas 0.10 0.09 0.10: mean 0.29/3, sd 0.01/sqrt(3), se 0.01/3, t = 29, df 2; for df 2 the
    # two-sided p is 1 - t / sqrt(t^2 + 2)
    row = task_test("t", "spearman", {0: 0.60, 1: 0.62, 2: 0.64}, {0: 0.50, 1: 0.53, 2: 0.54}, SeedNoise(0.02, 4), 0.0)
    assert (row.paired, row.df_seeds) == (3, 2)
    assert row.delta == pytest.approx(0.29 / 3) and row.se == pytest.approx(0.01 / 3)
    assert row.p == pytest.approx(1 - 29 / math.sqrt(29**2 + 2), rel=1e-9)
    assert row.outcome == "W" and row.se_test is None and row.test_note == TEST_NOISE_OLD
    # MDE: (t_{0.975,2} + t_{0.8,2}) se
    assert row.mde == pytest.approx((4.302652729911275 + 1.0606601717798212) * 0.01 / 3, rel=1e-9)


def test_without_seeds_in_common_the_test_is_two_sample_on_the_pooled_noise():
    row = task_test("t", "spearman", {0: 0.60}, {3: 0.50, 4: 0.54}, SeedNoise(0.02, 6), 0.0)
    assert row.paired == 0 and row.delta == pytest.approx(0.08)
    assert row.se == pytest.approx(0.02 * math.sqrt(1 + 1 / 2)) and row.df == 6
    assert row.p == pytest.approx(2 * stats.t.sf(0.08 / (0.02 * math.sqrt(1.5)), 6))
    untestable = task_test("t", "spearman", {0: 0.6}, {0: 0.5}, SeedNoise(None, 0), 0.0)
    assert not untestable.testable and untestable.p is None and untestable.outcome == "T"


def test_test_set_noise_adds_its_variance_with_welch_satterthwaite_degrees_of_freedom():
    se, df = combined_error(np.float64(0.003), 2, 0.004)
    assert float(se) == pytest.approx(0.005)  # sqrt(0.003^2 + 0.004^2)
    assert float(df) == pytest.approx(0.005**4 / (0.003**4 / 2))  # the bootstrap's part: unlimited df
    se, df = combined_error(np.float64(0.0), 2, 0.004)
    assert (float(se), float(df)) == (pytest.approx(0.004), math.inf)
    # no noise at all: a delta is significant exactly when it is not 0
    assert t_test_p(np.array([0.01, 0.0]), 0.0, 2).tolist() == [0.0, 1.0]


def test_resolution_is_one_test_example_for_accuracies_and_recalls():
    assert resolution({"metric": "accuracy", "type": "multiclass", "n_test": 149}) == 1 / 149
    assert resolution({"metric": "accuracy", "type": "per_residue_classification", "n_test": 200}) == 0.0
    assert resolution({"metric": "fold_recall@10", "notes": ["queries counted: 362 at family, 793 at fold"]}) == 1 / 793
    assert resolution({"metric": "spearman", "n_test": 800}) == 0.0
    examples = task_examples("accuracy", ["A"] * 3, np.array([1, 2, 1]), prediction=np.zeros(4), truth=np.zeros(4))
    assert resolution({"metric": "accuracy", "type": "per_residue_classification"}, examples) == 1 / 4


def test_price_149_counts_are_ties():
    # EC class on Price-149 (continued_small, committed): correct of 149 per seed
    mlm, ema_half, masked_w015 = [38, 39, 38], [38, 37, 36], [37, 37, 37]
    masked = [36, 38, 36]
    accuracy = {name: [c / 149 for c in counts] for name, counts in
                (("mlm", mlm), ("ema_half", ema_half), ("masked_w015", masked_w015), ("masked", masked))}
    # the old band, 2 s sqrt(2/3) with s pooled over the four variants, is 4/3 of one protein, and so
    # is |delta| for ema_half and masked_w015: floating point put the delta above the band
    s = pooled_noise(accuracy.values()).std
    band = 2 * s * math.sqrt(2 / 3)
    for name in ("ema_half", "masked_w015"):
        delta = abs(np.mean(accuracy[name]) - np.mean(accuracy["mlm"]))
        assert delta / band == pytest.approx(1.0, abs=1e-14) and delta > band  # the old rule: a loss
        assert not beyond(delta, band)  # the boundary compared with a relative tolerance: a tie
        assert beyond(delta, 1 / 149)  # more than one protein: the resolution does not decide it
    # the per-task rule: paired deltas 0 -2 -2 (t = -2) and -1 -2 -1 (t = -4) proteins, df 2
    noise = pooled_noise(accuracy.values())
    tests = {name: task_test("ec_class_price149", "accuracy", dict(enumerate(accuracy[name])),
                             dict(enumerate(accuracy["mlm"])), noise, 1 / 149) for name in ("ema_half", "masked_w015")}
    assert tests["ema_half"].p == pytest.approx(1 - 2 / math.sqrt(6))
    assert tests["masked_w015"].p == pytest.approx(1 - 4 / math.sqrt(18))
    assert [t.outcome for t in tests.values()] == ["T", "T"]


def test_a_count_step_repeated_in_every_seed_is_exactly_a_step():
    # +1 protein of 100 in every seed (EC New-392): identical deltas, rounding aside; one step is a tie
    row = task_test("ec", "accuracy", {0: 0.29, 1: 0.28, 2: 0.28}, {0: 0.28, 1: 0.27, 2: 0.27}, SeedNoise(0.01, 4),
                    1 / 100)
    assert row.se_seeds == 0.0 and row.p == 0.0 and row.outcome == "T"
    assert row.mde == pytest.approx(0.01)  # never below one step of the metric


def test_wilcoxon_against_the_exact_distribution_enumerated_by_hand():
    deltas = np.array([1.0, 2.5, -0.5, 3.0])  # ranks of |delta|: 2, 3, 1, 4; W+ = 9
    sums = [sum(rank for rank, positive in zip((1, 2, 3, 4), signs) if positive)
            for signs in itertools.product((False, True), repeat=4)]
    greater = sum(s >= 9 for s in sums) / 16  # 2 of 16
    p, lean = wilcoxon_two_sided(deltas)
    assert (float(p), int(lean)) == (pytest.approx(2 * greater), 1)
    rng = np.random.default_rng(0)
    table = rng.normal(0.2, 1, (200, 14))  # the exact path, row by row, against scipy
    assert wilcoxon_two_sided(table)[0] == pytest.approx([stats.wilcoxon(r).pvalue for r in table], rel=1e-12)
    tied = np.array([1.0, -1.0, 2.0, 0.0, 3.0])  # a zero and tied magnitudes: scipy's path
    assert float(wilcoxon_two_sided(tied)[0]) == pytest.approx(stats.wilcoxon(tied).pvalue)
    assert wilcoxon_two_sided(np.zeros(3))[0] == 1.0


def test_sign_test_two_sided_and_its_real_level():
    assert sign_test_two_sided(12, 2) == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert sign_test_two_sided(7, 7) == 1.0 and sign_test_two_sided(0, 0) == 1.0
    # over 14 tasks, 12 of one sign is the least that rejects: P = 2 (1 + 14 + 91) / 2^14 = 1.3%
    assert sign_test_size(14) == pytest.approx(212 / 16384)
    assert sign_test_size(5) == 0.0  # five tasks can never reject at 5%


def test_holm_by_hand():
    # sorted 0.01 (x3), 0.03 (x2), 0.04 (x1, but never below the step before)
    assert holm([0.04, 0.01, 0.03]).tolist() == pytest.approx([0.06, 0.03, 0.06])
    assert holm(np.array([[0.5, 0.01]])).tolist() == [[0.5, 0.02]]


def test_run_effect_is_the_f_test_of_seeds_in_the_tasks_by_seeds_table():
    rng = np.random.default_rng(1)
    table = rng.normal(0, 1, (14, 3))
    # by hand: two-way ANOVA without replication
    grand, tasks, seeds = table.mean(), table.mean(1, keepdims=True), table.mean(0, keepdims=True)
    ms_seed = 14 * ((seeds - grand) ** 2).sum() / 2
    ms_residual = ((table - tasks - seeds + grand) ** 2).sum() / 26
    assert float(run_effect(table)) == pytest.approx(stats.f.sf(ms_seed / ms_residual, 2, 26))
    lucky = table + np.array([0.0, 0.0, 3.0])  # seed 2 better on every task
    assert float(run_effect(lucky)) < 1e-6


def test_two_level_interval_draws_tasks_then_seeds():
    same = [np.array([0.5, 0.5, 0.5])] * 6
    assert two_level_interval(same, 500) == pytest.approx((0.5, 0.5))
    deltas = [np.array([d - 0.1, d, d + 0.1]) for d in np.linspace(-1, 1, 14)]
    low, high = two_level_interval(deltas, 4000)
    # the mean is 0; the spread of 14 task means of sd ~0.62 gives about 0.62 / sqrt(14) x 2.24
    assert low < 0 < high and high - low == pytest.approx(2 * 2.24 * 0.6 / math.sqrt(14), rel=0.2)


def _table(shift: float, run: tuple[float, ...] = (0.0, 0.0, 0.0)) -> tuple[VariantRuns, VariantRuns]:
    rng = np.random.default_rng(7)
    base = {f"t{i}": list(0.5 + rng.normal(0, 0.01, 3)) for i in range(14)}
    arm = {t: [v + shift + rng.normal(0, 0.01) + run[k] for k, v in enumerate(values)] for t, values in base.items()}
    return _variant("arm", arm), _variant("base", base)


def test_verdict_over_tasks():
    arm, base = _table(0.02)
    better = compare_family(base, [arm], TIE)["arm"]
    assert better.across.positive == 14 and better.across.wilcoxon == pytest.approx(2 / 2**14)
    assert better.run_check and better.verdict == WIN
    assert better.across.interval[0] > 0
    worse = compare_family(arm, [base], TIE)["base"]
    assert worse.verdict == LOSS
    same, base = _table(0.0)
    assert compare_family(base, [same], TIE)["arm"].verdict == NOT_SEPARABLE  # no shift


def test_a_seed_better_on_every_task_gets_no_verdict():
    arm, base = _table(0.0, run=(0.0, 0.0, 0.06))  # seed 2 of the arm lifts every task
    lucky = compare_family(base, [arm], TIE)["arm"]
    assert lucky.across.wilcoxon < 0.05 and not lucky.run_check
    assert lucky.verdict == NOT_SEPARABLE and "move every task together" in lucky.verdict_note


def test_several_arms_share_the_baseline_and_one_holm_family():
    arm, base = _table(0.02)
    other = _variant("other", {t: [by_seed[k] + 0.0001 for k in range(3)] for t, by_seed in base.scores.items()})
    family = compare_family(base, [arm, other], TIE)
    assert family["arm"].family == 2
    assert family["arm"].adjusted == pytest.approx(min(1.0, 2 * family["arm"].across.wilcoxon))


def _seed_folders(root, scores: dict[str, list[float]], probed=(0, 1, 2), metric="spearman"):
    """An experiment's layout: ``root/seed<k>/probe/results.json``; seeds outside ``probed`` left unprobed."""
    for k in range(len(next(iter(scores.values())))):
        (root / f"seed{k}").mkdir(parents=True)
        if k in probed:
            (root / f"seed{k}" / "probe").mkdir()
            (root / f"seed{k}" / "probe" / "results.json").write_text(
                json.dumps(_results({t: v[k] for t, v in scores.items()}, metric)))
    return root


A = {"t1": [0.60, 0.62, 0.64], "t2": [0.50, 0.55, 0.60], "t3": [0.30, 0.30, 0.30], "t4": [0.700, 0.702, 0.704]}
B = {"t1": [0.50, 0.53, 0.54], "t2": [0.48, 0.53, 0.58], "t3": [0.40, 0.42, 0.44], "t4": [0.699, 0.701, 0.703]}


def test_compare_command_over_seed_folders(tmp_path, capsys):
    a, b = _seed_folders(tmp_path / "jepa", A), _seed_folders(tmp_path / "mlm", B)
    assert load_seeds(a).seeds == [0, 1, 2]
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    p = 1 - 29 / math.sqrt(29**2 + 2)  # t1, worked out above
    assert f"| t1 | spearman | 0.5233 ± 0.0208 | 0.6200 ± 0.0200 (+0.0967, p {p:.2g}, W) |" in out
    # t2: deltas 0.02 each seed, identical: p 0, beyond the resolution (0 for rank metrics): W
    assert "(+0.0200, p 0, W)" in out
    assert "| jepa | mlm | 4 |" in out and "test-set noise: not measured (old probe results)" in out
    assert "Unit of replication: the task (4 tasks" in out
    assert (tmp_path / "cmp" / "compare.md").read_text() in out
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def test_compare_several_candidates_against_one_baseline(tmp_path, capsys):
    a, b = _seed_folders(tmp_path / "jepa", A), _seed_folders(tmp_path / "mlm", B)
    c = _seed_folders(tmp_path / "ema", {t: [x + 0.001 for x in v] for t, v in B.items()})
    assert main(["compare", str(a), str(c), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| jepa | mlm |" in out and "| ema | mlm |" in out
    assert "family-wise over the 2 arms of this table, which share one baseline" in out


def test_compare_with_test_set_noise_from_scored_examples(tmp_path, capsys):
    # two variants, two seeds, one accuracy task over 40 test examples with their outputs kept
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 40)
    for name, shift in (("jepa", 0.15), ("mlm", 0.0)):
        for k in range(2):
            folder = tmp_path / name / f"seed{k}" / "probe"
            folder.mkdir(parents=True)
            prediction = np.where(rng.random(40) < 0.6 + shift, truth, 1 - truth)
            examples = task_examples("accuracy", [f"S{i}" for i in range(40)], np.ones(40), prediction=prediction,
                                     truth=truth)
            write_examples({"ec": examples}, folder / EXAMPLES_FILE)
            (folder / "results.json").write_text(json.dumps({"tasks": {"ec": {
                "metric": "accuracy", "type": "multiclass", "n_test": 40, "value": examples.metric,
                "examples": examples.summary()}}}))
    stats_ = family_statistics({n: load_seeds(tmp_path / n) for n in ("jepa", "mlm")}, {"jepa": "mlm"}, TIE)
    row = stats_.comparisons["jepa"].rows[0]
    # the accuracy difference of two runs over 40 examples: its sampling error dwarfs two seeds'
    assert row.se_test is not None and row.se_test > 0.03
    assert stats_.comparisons["jepa"].test_note == "test-set noise: measured on every task (bootstrap over its " \
                                                   "test examples)"
    assert main(["compare", str(tmp_path / "jepa"), str(tmp_path / "mlm"), "--out", str(tmp_path / "cmp")]) == 0
    assert "(benchmark)" in capsys.readouterr().out  # the MDE is the benchmark's


def test_compare_refuses_odd_seed_folders_and_names_the_file_of_a_bad_score(tmp_path, capsys):
    odd = _seed_folders(tmp_path / "odd", A)
    (odd / "seedX").mkdir()
    (odd / "seed-1").mkdir()
    with pytest.raises(CompareError, match=r"odd: seed-1, seedX: not seed folders"):
        load_seeds(odd)
    bad = _seed_folders(tmp_path / "bad", A)
    path = bad / "seed1" / "probe" / "results.json"
    path.write_text(path.read_text().replace("0.62", "NaN"))
    with pytest.raises(CompareError, match=rf"{path}: tasks.t1.value: nan is not a finite number"):
        load_seeds(bad)
    assert main(["compare", str(bad), str(_seed_folders(tmp_path / "mlm", B))]) == 2
    assert str(path) in capsys.readouterr().err


def test_a_task_missing_in_one_seed_is_compared_on_the_others_with_a_warning(tmp_path, capsys):
    a = _seed_folders(tmp_path / "jepa", A)
    path = a / "seed2" / "probe" / "results.json"
    results = json.loads(path.read_text())
    del results["tasks"]["t3"]
    path.write_text(json.dumps(results))
    b = _seed_folders(tmp_path / "mlm", B, probed=(0, 1))  # seed 2 unprobed: left out, said
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "t3: no score in jepa seed 2: compared on the seeds that have one" in out
    assert "mlm: seed2 not probed: left out" in out
    assert "| t3 | spearman |" in out


def test_the_api_compares_over_seeds_as_the_command_does(tmp_path):
    import protjepa

    a, b = _seed_folders(tmp_path / "jepa", A), _seed_folders(tmp_path / "mlm", B)
    result = protjepa.compare_seeds([a], b)
    comparison = result.comparisons["jepa"]
    assert comparison.baseline == "mlm" and len(comparison.rows) == 4
    assert comparison.rows[0].p == pytest.approx(1 - 29 / math.sqrt(29**2 + 2), rel=1e-9)
    assert protjepa.compare_seeds(a, a).comparisons["jepa (0)"].baseline == "jepa (1)"  # the same folder twice
