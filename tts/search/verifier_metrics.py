"""How good a verifier's probabilities are: calibration and AUROC (pure numpy)."""
import numpy as np


def calibration(predicted: np.ndarray, target: np.ndarray, bins: int = 10) -> dict:
  """Equal-width bins of predicted probability: count, mean prediction and mean target
  per bin, and the expected calibration error (count-weighted |prediction - target|)."""
  which = np.minimum((predicted * bins).astype(int), bins - 1)
  table, error = [], 0.0
  for b in range(bins):
    inside = which == b
    if not inside.any():
      continue
    p, t = float(predicted[inside].mean()), float(target[inside].mean())
    table.append({"bin": [b / bins, (b + 1) / bins], "count": int(inside.sum()),
                  "mean_predicted": round(p, 4), "mean_target": round(t, 4)})
    error += inside.sum() / len(predicted) * abs(p - t)
  return {"ece": round(float(error), 4), "bins": table}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
  """Probability that a random positive outscores a random negative (ties count half);
  None when one class is missing."""
  pos, neg = scores[positive], scores[~positive]
  if not len(pos) or not len(neg):
    return None
  order = np.argsort(np.concatenate([pos, neg]), kind="stable")
  ranks = np.empty(len(order))
  values = np.concatenate([pos, neg])[order]
  ranks[order] = np.arange(1, len(order) + 1)
  for v in np.unique(values):  # average ranks of ties
    tied = order[values == v]
    ranks[tied] = ranks[tied].mean()
  return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def within_group_auroc(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """AUROC inside each group holding both classes (float[G'], groups in sorted order; groups
  with one class left out). A verifier's groups are questions: it can rank questions by
  difficulty (a high AUROC over all solutions) and still not tell a question's right answers
  from its wrong ones, which is what choosing among N samples needs."""
  out = [auroc(scores[groups == g], positive[groups == g]) for g in np.unique(groups)]
  return np.asarray([a for a in out if a is not None])
