"""The paired bootstrap over questions behind every interval in select, flops and report:
seeded, paired (one draw of questions for every method and budget), and the vectorised
efficiency-ratio search it feeds."""
import numpy as np

from tts.scaling import bootstrap, selection


def test_resamples_are_seeded_draws_of_questions():
  w = bootstrap.resample_weights(50, 1000, seed=3)
  assert w.shape == (1000, 50)
  np.testing.assert_allclose(w.sum(axis=1), 1.0)
  np.testing.assert_allclose(w * 50, np.round(w * 50))  # counts of draws
  np.testing.assert_array_equal(w, bootstrap.resample_weights(50, 1000, seed=3))
  assert not np.array_equal(w, bootstrap.resample_weights(50, 1000, seed=4))


def test_a_constant_difference_has_a_zero_width_interval():
  rng = np.random.default_rng(0)
  a = rng.random(80)
  w = bootstrap.resample_weights(80, 1000, seed=0)
  diff = bootstrap.means(w, a) - bootstrap.means(w, a - 0.25)
  assert bootstrap.estimate(0.25, diff) == {"value": 0.25, "ci": [0.25, 0.25]}


def test_the_interval_covers_the_point_estimate_and_narrows_with_more_questions():
  rng = np.random.default_rng(1)
  widths = []
  for q in (40, 400):
    correct = rng.random(q) < 0.6
    lo, hi = bootstrap.interval(bootstrap.means(bootstrap.resample_weights(q, 1000, 0), correct))
    assert lo < correct.mean() < hi
    widths.append(hi - lo)
  assert widths[1] < widths[0] / 2


def test_pairing_narrows_the_interval_of_a_difference_on_correlated_outcomes():
  """Two methods that mostly agree per question: resampling their questions together keeps
  the agreement; resampling each method on its own draw (unpaired) loses it."""
  rng = np.random.default_rng(2)
  q = 200
  a = rng.random(q) < 0.5
  b = np.where(rng.random(q) < 0.1, ~a, a)  # flips 10% of a's outcomes
  paired = bootstrap.resample_weights(q, 1000, seed=0)
  other = bootstrap.resample_weights(q, 1000, seed=1)
  width = lambda s: np.diff(bootstrap.interval(s))[0]
  paired_width = width(bootstrap.means(paired, a) - bootstrap.means(paired, b))
  unpaired_width = width(bootstrap.means(paired, a) - bootstrap.means(other, b))
  assert paired_width < unpaired_width / 2


def test_means_within_a_bin_and_a_bin_left_undrawn():
  values = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # [Q, K]
  w = np.array([[1, 1, 1], [0, 2, 1], [0, 3, 0]]) / 3.0
  in_bin = np.array([True, True, False])
  np.testing.assert_allclose(bootstrap.means(w, values),
                             [[2 / 3, 1 / 3], [1 / 3, 1 / 3], [0.0, 0.0]])
  np.testing.assert_allclose(bootstrap.means(w, values, in_bin)[:2], [[0.5, 0.0], [0.0, 0.0]])
  assert np.isnan(bootstrap.means(w, values, ~in_bin)[2]).all()  # question 3 never drawn
  assert bootstrap.interval(bootstrap.means(w, values, ~in_bin)[:, 0]).tolist() == [1.0, 1.0]


def test_vectorised_budget_search_matches_the_curve_walk():
  budgets = [1, 2, 4, 8, 16]
  curves = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.5, 0.6, 0.6, 0.9],
                     [0.0, 0.0, 0.0, 0.0, 0.1]])
  needed, reached = selection.budgets_to_reach(budgets, curves, [0.35, 0.55, 0.5])
  np.testing.assert_allclose(needed, [2 ** 2.5, 2 ** 1.5, 16.0])
  assert reached.tolist() == [True, True, False]
  assert selection.budget_to_reach(budgets, curves[1], 0.4) == (1.0, True)
  co = np.array([[0.45, 0.7], [0.2, 0.2]])
  ratios, hit = selection.ratio_samples([4, 16], co, np.array([[0.1, 0.6]] * 2))
  # 0.2 lies a fifth of the way from 0.1 (at 4) to 0.6 (at 16): budget 2^2.4.
  np.testing.assert_allclose(ratios[1], [2 ** 2.4 / 4, 2 ** 2.4 / 16])
  np.testing.assert_allclose(ratios[0], [2 ** 3.4 / 4, 16 / 16])  # 0.7: never reached
  assert hit.tolist() == [[True, False], [True, True]]
