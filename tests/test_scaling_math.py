"""Difficulty bins, cross-validated selection, efficiency ratio and FLOPs matching on
hand-made numbers whose right answers are known."""
import math

import numpy as np
import pytest

from tts.scaling import bootstrap, comparisons, difficulty, flops, selection
from tts.scaling.selection import Setting


def test_bins_are_equal_count_quantiles_easiest_first():
  values = np.random.default_rng(0).permutation(100) / 100.0
  bins = difficulty.quantile_bins(values, 5)
  assert np.bincount(bins).tolist() == [0, 20, 20, 20, 20, 20]
  for b in range(1, 5):  # every question of bin b is easier than every one of bin b + 1
    assert values[bins == b].min() > values[bins == b + 1].max()
  assert set(np.flatnonzero(bins == 1)) == set(np.argsort(-values)[:20])
  with pytest.raises(ValueError, match="difficulty.num_bins"):
    difficulty.quantile_bins(values[:9], 5)


def test_pass_rate_and_rank_correlation():
  correct = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
  np.testing.assert_allclose(difficulty.pass_at_1(correct), [0.75, 0.0, 0.25])
  assert difficulty.spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
  assert difficulty.spearman([3, 1, 2], [10, 30, 20]) == pytest.approx(-1.0)
  np.testing.assert_allclose(difficulty.ranks([0.5, 0.0, 0.5, 0.5, 1.0]), [2, 0, 2, 2, 4])


@pytest.mark.filterwarnings("ignore:An input array is constant")
def test_resampled_rank_correlation_counts_each_draw():
  """A resample drawing question i c times ranks it c times (ties share their mean); one
  whose draws are constant on a side has no correlation (NaN, left out of intervals)."""
  from scipy import stats
  from tts.scaling import bootstrap
  a, b = [0.9, 0.1, 0.4, 0.7, 0.2], [1.0, 0.0, 0.75, 0.25, 0.25]
  weights = bootstrap.resample_weights(5, 50, seed=0)
  got = difficulty.resampled_spearman(weights, a, b)
  for w, rho in zip(weights, got):
    drawn = np.repeat(np.arange(5), np.rint(w * 5).astype(int))
    want = stats.spearmanr(np.take(a, drawn), np.take(b, drawn)).statistic
    assert rho == pytest.approx(want, abs=1e-12, nan_ok=True)
  assert np.isnan(got).any() and not np.isnan(got).all()
  once = np.full((1, 5), 0.2)  # every question drawn once: the plain correlation
  assert difficulty.resampled_spearman(once, a, b)[0] == pytest.approx(
      difficulty.spearman(a, b))


def _setting(method, correct, generations=4, n=4):
  correct = np.asarray(correct, bool)
  return Setting(method, n, generations, correct, np.full(len(correct), 100.0 * generations))


def test_selection_finds_the_best_setting_of_each_bin():
  bins = np.repeat([1, 2, 3], 10)
  folds = selection.two_folds(bins, seed=0)
  rng = np.random.default_rng(1)
  half = lambda: rng.permutation(np.arange(10) % 2).astype(bool)
  ones, zeros = np.ones(10, bool), np.zeros(10, bool)
  settings = [
      _setting("beam", np.concatenate([ones, half(), zeros])),
      _setting("best_of_n", np.concatenate([half(), ones, zeros])),
      _setting("lookahead", np.concatenate([zeros, zeros, ones]), generations=16),
      _setting("dvts", np.concatenate([zeros, zeros, half()]), generations=2),
  ]
  result = selection.compute_optimal(settings, bins, folds, budget=4)
  assert result.choices == {1: ["beam/n4"] * 2, 2: ["best_of_n/n4"] * 2, 3: ["dvts/n4"] * 2}
  assert result.correct[:20].all()  # lookahead (16 generations) is over the budget of 4
  np.testing.assert_array_equal(result.generations, [4] * 20 + [2] * 10)
  wide = selection.compute_optimal(settings, bins, folds, budget=16)
  assert wide.choices[3] == ["lookahead/n4"] * 2 and wide.correct.all()


def test_cross_validation_never_measures_on_the_fold_it_selected_on():
  bins = np.repeat([1, 2], 12)
  folds = selection.two_folds(bins, seed=3)
  assert [np.bincount(folds[bins == b]).tolist() for b in (1, 2)] == [[6, 6], [6, 6]]
  # A is right exactly on fold 0, B exactly on fold 1: selecting on a fold and measuring on
  # the other is always wrong; a leak (selecting on the measured fold) would be always right.
  a, b = _setting("a", folds == 0), _setting("b", folds == 1)
  result = selection.compute_optimal([a, b], bins, folds, budget=4)
  assert not result.correct.any()
  assert result.choices == {1: ["a/n4", "b/n4"], 2: ["a/n4", "b/n4"]}
  assert not np.array_equal(selection.two_folds(bins, 3), selection.two_folds(bins, 4))
  np.testing.assert_array_equal(selection.two_folds(bins, 3), folds)


def test_adapting_to_difficulty_is_measured_against_the_best_fixed_setting():
  """`beam` is right on bin 1 only and `lookahead` on bin 2 only: per bin both are chosen
  and every question is right, while one setting for all questions is right on half, so
  adapting gains 0.5. When `beam` is right everywhere, compute-optimal still beats the
  baseline by as much, and adapting gains nothing."""
  bins = np.repeat([1, 2], 20)
  folds = selection.two_folds(bins, seed=0)
  weights = bootstrap.resample_weights(len(bins), 200, seed=0)
  ones, zeros = np.ones(20, bool), np.zeros(20, bool)
  baseline = {4: _setting("best_of_n", np.concatenate([zeros, zeros]))}
  split = [_setting("beam", np.concatenate([ones, zeros])),
           _setting("lookahead", np.concatenate([zeros, ones]))]
  dominant = [_setting("beam", np.concatenate([ones, ones])), split[1]]
  for settings, gain in ((split, 0.5), (dominant, 0.0)):
    out, correct, _ = comparisons.family_curves(settings + list(baseline.values()), baseline,
                                                bins, folds, weights, 0.0, False)
    assert correct.all() and out["difference"]["value"] == [1.0]
    adaptive = out["adaptive_minus_fixed"]
    assert adaptive["value"] == [gain]
    assert adaptive["fixed_accuracy"] == [1.0 - gain]
    lo, hi = adaptive["ci"][0]
    assert lo <= gain <= hi and (lo > 0) == (gain > 0)


def test_efficiency_ratio_on_a_constructed_curve():
  base_budgets = [1, 2, 4, 8, 16, 32, 64]
  base_acc = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
  rows = selection.efficiency_ratios([4, 16], [0.45, 0.7], base_budgets, base_acc)
  # 0.45 lies halfway between 8 (0.4) and 16 (0.5) in log2 budget: 2^3.5.
  assert rows[0]["baseline_budget"] == pytest.approx(2 ** 3.5, abs=1e-3)
  assert rows[0]["ratio"] == pytest.approx(2 ** 3.5 / 4, abs=1e-3)
  assert rows[1]["ratio"] == pytest.approx(4.0) and not rows[1]["lower_bound"]
  over = selection.efficiency_ratios([16], [0.9], base_budgets, base_acc)[0]
  assert over["lower_bound"] and over["ratio"] == pytest.approx(4.0)
  charged = selection.efficiency_ratios([16], [0.7], base_budgets, base_acc, extra_cost=16)
  assert charged[0]["ratio"] == pytest.approx(2.0) and charged[0]["spent"] == 32
  head = selection.headline_ratio(rows)
  assert head["max"] == pytest.approx(4.0) and head["at_budget"] == 16


def test_flops_formulas_match_hand_computed_values():
  assert flops.pretraining_flops(1_000, 2_000) == 12_000_000
  assert flops.inference_flops(1_000, 2_000) == 4_000_000
  assert flops.matched_multiplier(14, 0.16) == pytest.approx(14 + 39 / 0.16)  # 257.75
  assert flops.matched_multiplier(14, 0.79) == pytest.approx(63.367, abs=1e-3)
  assert flops.matched_multiplier(14, 22) == pytest.approx(15.773, abs=1e-3)
  n, m, d_pre, d_inf = 52_000, 13.7, 3.2e6, 8.0e5  # both sides' total FLOPs agree
  x = flops.matched_multiplier(m, d_inf / d_pre)
  large = flops.pretraining_flops(m * n, d_pre) + flops.inference_flops(m * n, d_inf)
  small = flops.pretraining_flops(n, d_pre) + flops.inference_flops(n, x * d_inf)
  assert small == pytest.approx(large)
  with pytest.raises(ValueError, match="R > 0"):
    flops.matched_multiplier(14, 0)


def test_accuracy_at_a_flops_budget_interpolates_and_says_when_out_of_range():
  f, a = [100.0, 400.0, 1600.0], [0.2, 0.4, 0.5]
  assert flops.accuracy_at_flops(f, a, 200.0) == (pytest.approx(0.3), "interpolated")
  assert flops.accuracy_at_flops(f, a, 1e4) == (0.5, "beyond_largest_run")
  assert flops.accuracy_at_flops(f, a, 50.0) == (0.2, "below_smallest_run")
  assert flops.relative_difference(0.6, 0.4) == pytest.approx(0.5)
  assert flops.relative_difference(0.6, 0.0) is None
  assert math.isclose(flops.accuracy_at_flops(f, a, 400.0)[0], 0.4)


def test_attention_flops_on_hand_counted_sequences():
  from tts.model.config import ModelConfig
  model = ModelConfig(vocab_size=20, num_layers=2, d_model=48, num_heads=4, num_kv_heads=2,
                      d_ff=128)  # the demo's small policy: head_dim 12
  assert flops.attention_flops_per_pair(model) == 4 * 2 * 4 * 12  # 384, KV heads aside
  assert flops.causal_pairs(3, 2) == 4 + 5
  # Best-of-2 after a 3-token prompt, candidates of 2 and 4 tokens: the prompt 1+2+3,
  # then 4+5 and 4+5+6+7 = 37 (query, key) pairs.
  best_of_2 = {"candidates": [{"num_tokens": 2}, {"num_tokens": 4}],
               "counts": {"prompt_tokens": 3, "generated_tokens": 6}}
  assert flops.record_attention_pairs(best_of_2) == 37
  # Revisions: each answer its own sequence (prompt = question + earlier answers).
  chain = {"candidates": [{"num_tokens": 2, "prompt_tokens": 3},
                          {"num_tokens": 1, "prompt_tokens": 5}], "counts": {}}
  assert flops.record_attention_pairs(chain) == 15 + 21
  assert flops.greedy_flops(model, 10) == 2 * model.num_params * 10 + 384 * 55


def test_matched_flops_reduce_to_the_parameter_multiplier_without_attention():
  n_small, n_large, tokens = 52_000, 728_000, 300.0
  for r in (0.16, 0.79, 22.0):
    x = flops.matched_multiplier(n_large / n_small, r)
    got = flops.matched_inference_flops(2 * n_large * tokens, tokens, n_small, n_large, r)
    assert got == pytest.approx(x * 2 * n_small * tokens)
  with pytest.raises(ValueError, match="R > 0"):
    flops.matched_inference_flops(1.0, 1.0, 10, 20, 0.0)
