"""FLOPs accounting (Kaplan et al.): pretraining 6*N*D, inference 2*N*D, and the
inference budget that makes a small model plus test-time compute cost as much as a model
M times larger decoding once (docs/paper.md, FLOPs-matched comparison).

Large:  6*(M*N)*D_pre + 2*(M*N)*D_inf.  Small spending X times the inference tokens:
6*N*D_pre + 2*N*(X*D_inf).  Equal when X = M + 3*(M - 1)/R, with R = D_inf / D_pre.
"""
import math


def pretraining_flops(params: int, tokens: float) -> float:
  return 6.0 * params * tokens


def inference_flops(params: int, tokens: float) -> float:
  return 2.0 * params * tokens


def matched_multiplier(m: float, r: float) -> float:
  """X: how many times the large model's inference tokens the small model may spend (at its
  own size) for the same total FLOPs. m: parameter ratio; r: D_inference / D_pretrain."""
  if r <= 0 or m < 1:
    raise ValueError(f"FLOPs matching needs R > 0 and M >= 1 (got R={r}, M={m})")
  return m + 3.0 * (m - 1.0) / r


def accuracy_at_flops(flops, accuracies, target: float) -> tuple[float, str]:
  """Accuracy of a curve (points ordered by budget) at `target` FLOPs, linear in log FLOPs
  between the two budgets around it. Returns (accuracy, where): `interpolated`;
  `beyond_largest_run` (the largest budget run costs less than the target: its accuracy,
  a lower bound if more compute does not hurt); `below_smallest_run` (even the smallest
  budget costs more: its accuracy, an upper bound)."""
  points = sorted(zip(flops, accuracies))
  if target >= points[-1][0]:
    return float(points[-1][1]), ("interpolated" if target == points[-1][0]
                                  else "beyond_largest_run")
  if target < points[0][0]:
    return float(points[0][1]), "below_smallest_run"
  for (f0, a0), (f1, a1) in zip(points, points[1:]):
    if f0 <= target < f1:
      t = (math.log(target) - math.log(f0)) / (math.log(f1) - math.log(f0))
      return float(a0 + t * (a1 - a0)), "interpolated"
  raise AssertionError("unreachable: target lies between the first and last points")


def relative_difference(test_time: float, pretrained: float) -> float | None:
  """(small + test-time compute - larger model) / larger model; None when the larger
  model gets nothing right (the absolute difference is reported beside it)."""
  if pretrained == 0:
    return None
  return (test_time - pretrained) / pretrained
