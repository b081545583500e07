"""Paired bootstrap over questions: 95% percentile intervals for accuracies, differences and
ratios computed from per-question outcomes.

Paired: one draw of questions (with replacement) is applied to every method, budget and bin
at once, so a question's records move together and a difference between two settings keeps
the correlation of their outcomes on the same questions. A resample is a row of weights
(how often each question was drawn, divided by the number of questions); a statistic that
is a mean over questions is then one matrix product for all resamples.
"""
import numpy as np

LEVEL = 0.95


def resample_weights(num_questions: int, resamples: int, seed: int) -> np.ndarray:
  """float[B, Q]: row b counts how often each question is drawn in resample b, / Q."""
  rng = np.random.default_rng(seed)
  drawn = rng.integers(0, num_questions, size=(resamples, num_questions))
  counts = np.zeros((resamples, num_questions))
  np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1.0)
  return counts / num_questions


def means(weights: np.ndarray, values, mask=None) -> np.ndarray:
  """Resampled means of per-question values: values [Q] or [Q, K] -> [B] or [B, K].
  mask bool[Q]: the mean over the drawn questions inside it (a bin); a resample that drew
  none of them gives NaN, which `interval` leaves out."""
  values = np.asarray(values, np.float64)
  w = weights if mask is None else weights * np.asarray(mask, np.float64)
  total = w.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    out = (w @ values.reshape(len(values), -1)) / total[:, None]
  return out.reshape((len(weights),) + values.shape[1:])


def interval(samples, level: float = LEVEL) -> np.ndarray:
  """Percentile interval along axis 0 (resamples): [lo, hi] per statistic, float[2, ...]."""
  tail = 100 * (1 - level) / 2
  return np.nanpercentile(np.asarray(samples, np.float64), [tail, 100 - tail], axis=0)


def estimate(point, samples, digits: int = 4) -> dict:
  """{value, ci: [lo, hi]} for one statistic (rounded: what the result files hold)."""
  lo, hi = interval(samples)
  return {"value": round(float(point), digits), "ci": [round(float(lo), digits),
                                                       round(float(hi), digits)]}
