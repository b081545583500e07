"""Question difficulty: oracle (pass@1 of the small policy), predicted (mean final
verifier score of the same samples) and prompt (the verifier's reading after the prompt
alone, no sample), each split into equal-count quantile bins.

Bins are numbered 1 (easiest) to num_bins (hardest), as the paper's levels. Equal counts:
a tie (e.g. many questions with pass@1 = 0) is split between neighbouring bins by question
order, so every bin has questions to select on and to measure on.
"""
import numpy as np


def pass_at_1(correct) -> np.ndarray:
  """correct: bool[Q, K] (K samples per question) -> float[Q]."""
  return np.asarray(correct, np.float64).mean(axis=1)


def mean_final_score(scores) -> np.ndarray:
  """scores: float[Q, K], the verifier's reading after each sample's last step -> float[Q]."""
  return np.asarray(scores, np.float64).mean(axis=1)


def quantile_bins(values, num_bins: int) -> np.ndarray:
  """Bin of each question, 1..num_bins, by descending `values` (higher = easier): int[Q].

  Bin b holds the questions ranked in its quantile; sizes differ by at most one.
  """
  values = np.asarray(values, np.float64)
  if num_bins < 1 or len(values) < 2 * num_bins:
    raise ValueError(f"{len(values)} questions cannot fill {num_bins} difficulty bins with at "
                     "least two questions each (one per cross-validation fold); use more "
                     "questions or fewer bins (difficulty.num_bins)")
  order = np.argsort(-values, kind="stable")
  bins = np.empty(len(values), np.int64)
  for b, members in enumerate(np.array_split(order, num_bins)):
    bins[members] = b + 1
  return bins


def ranks(x) -> np.ndarray:
  """0-based ranks, ties sharing their mean rank: float[len(x)]."""
  _, inverse, counts = np.unique(np.asarray(x, np.float64), return_inverse=True,
                                 return_counts=True)
  return (np.cumsum(counts) - (counts + 1) / 2.0)[inverse.reshape(-1)]


def spearman(a, b, undefined: float = 0.0) -> float:
  """Rank correlation (average ranks for ties): how well a difficulty score orders
  questions like pass@1 does. `undefined` when either side is constant."""
  ra, rb = ranks(a), ranks(b)
  if ra.std() == 0 or rb.std() == 0:
    return undefined
  return float(np.corrcoef(ra, rb)[0, 1])


def resampled_spearman(weights, a, b) -> np.ndarray:
  """`spearman` in each bootstrap resample: weights float[B, Q] as
  bootstrap.resample_weights (a question drawn c times counts c times) -> float[B]; NaN
  for a resample where either side is constant (bootstrap.interval leaves it out)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  counts = np.rint(np.asarray(weights) * len(a)).astype(np.int64)
  return np.array([spearman(np.repeat(a, c), np.repeat(b, c), undefined=np.nan)
                   for c in counts])
