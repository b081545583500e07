"""Compute-optimal strategy selection by 2-fold cross-validation, and its efficiency ratio
against a baseline (best-of-N weighted, or all-parallel revisions).

A setting is one method at one budget (search: a method with its hyperparameters at N;
revisions: P parallel chains at N). It costs `generations` per question, the paper's budget
unit. At a budget B every setting costing at most B generations may be chosen. In each
difficulty bin, the setting with the best accuracy on one fold of the bin's questions is
measured on the other fold, and the other way round; each question is thus scored by a
setting chosen without it.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Setting:
  method: str
  n: int
  generations: int  # per question
  correct: np.ndarray  # bool[Q]: the setting's selected answer is right, per question
  flops: np.ndarray  # float[Q]: inference FLOPs spent per question (policy + verifier)
  kind: str = "best_of_n"  # search: best_of_n|beam|lookahead|dvts; revisions: revision
  verifier: str = ""  # the verifier whose scores chose the answer
  beam_width: int = 0  # search: M (0 for best-of-N)
  chains: int = 0  # revisions: P parallel chains of n // P answers

  @property
  def name(self) -> str:
    return f"{self.method}/n{self.n}"


@dataclasses.dataclass(frozen=True)
class BudgetResult:
  """Compute-optimal at one budget: every question measured with a setting chosen on the
  other fold of its bin."""
  budget: int
  correct: np.ndarray  # bool[Q]
  flops: np.ndarray  # float[Q]
  generations: np.ndarray  # int[Q], of the setting each question was measured with
  choices: dict  # bin -> [setting chosen on fold 0, on fold 1]


def two_folds(bins, seed: int) -> np.ndarray:
  """Fold (0 or 1) of each question: within each bin a seeded shuffle, then alternating,
  so each bin's folds differ in size by at most one. int[Q]."""
  bins = np.asarray(bins)
  rng = np.random.default_rng(seed)
  folds = np.empty(len(bins), np.int64)
  for b in np.unique(bins):
    members = np.flatnonzero(bins == b)
    folds[rng.permutation(members)] = np.arange(len(members)) % 2
  return folds


def best_setting(settings: list[Setting], budget: int, mask: np.ndarray) -> Setting:
  """The most accurate setting costing at most `budget` on the questions in `mask`; ties go
  to fewer generations, then fewer FLOPs, then the name (deterministic)."""
  affordable = [s for s in settings if s.generations <= budget]
  if not affordable:
    raise ValueError(f"no setting costs at most {budget} generations")
  if not mask.any():
    raise ValueError("cannot select on an empty fold")
  return min(affordable, key=lambda s: (-s.correct[mask].mean(), s.generations,
                                        s.flops[mask].mean(), s.name))


def compute_optimal(settings: list[Setting], bins, folds, budget: int) -> BudgetResult:
  bins, folds = np.asarray(bins), np.asarray(folds)
  q = len(bins)
  correct, flops = np.zeros(q, bool), np.zeros(q)
  generations = np.zeros(q, np.int64)
  choices = {}
  for b in np.unique(bins):
    chosen = []
    for fold in (0, 1):
      train = (bins == b) & (folds == fold)
      test = (bins == b) & (folds != fold)
      s = best_setting(settings, budget, train)
      correct[test], flops[test], generations[test] = s.correct[test], s.flops[test], s.generations
      chosen.append(s.name)
    choices[int(b)] = chosen
  return BudgetResult(budget, correct, flops, generations, choices)


def budgets_to_reach(budgets, accuracies, targets) -> tuple[np.ndarray, np.ndarray]:
  """For each row of `accuracies` (float[B, K], one curve over `budgets` per row), the
  smallest budget at which the curve, linear in log2 budget between budgets run, reaches
  targets[b]. Returns (budget float[B], reached bool[B]); not reached: the largest budget,
  so budget / B is then a lower bound of the ratio."""
  log_b = np.log2(np.asarray(budgets, np.float64))
  acc = np.atleast_2d(np.asarray(accuracies, np.float64))
  targets = np.asarray(targets, np.float64).reshape(-1, 1)
  above = acc >= targets - 1e-9  # resampled means of equal outcomes may differ in rounding
  reached = above.any(axis=1)
  first = np.where(reached, above.argmax(axis=1), len(log_b) - 1)
  before = np.where(reached, np.maximum(first - 1, 0), first)
  rows = np.arange(len(acc))
  a0, a1 = acc[rows, before], acc[rows, first]
  with np.errstate(invalid="ignore", divide="ignore"):
    t = np.clip(np.where(first > before, (targets[:, 0] - a0) / (a1 - a0), 0.0), 0.0, 1.0)
  return 2 ** (log_b[before] + t * (log_b[first] - log_b[before])), reached


def budget_to_reach(budgets, accuracies, target: float) -> tuple[float, bool]:
  """`budgets_to_reach` for one curve."""
  needed, reached = budgets_to_reach(budgets, [accuracies], [target])
  return float(needed[0]), bool(reached[0])


def ratio_samples(budgets, accuracies, baseline_accuracies, extra_cost: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Efficiency ratios of resampled curves: accuracies, baseline_accuracies float[B, K]
  over the same `budgets` -> (ratio float[B, K], reached bool[B, K])."""
  acc = np.asarray(accuracies, np.float64)
  ratios, reached = np.empty_like(acc), np.empty(acc.shape, bool)
  for k, b in enumerate(budgets):
    needed, reached[:, k] = budgets_to_reach(budgets, baseline_accuracies, acc[:, k])
    ratios[:, k] = needed / (b + extra_cost)
  return ratios, reached


def efficiency_ratios(budgets, accuracies, baseline_budgets, baseline_accuracies,
                      extra_cost: float = 0.0) -> list[dict]:
  """Per compute-optimal budget B (accuracy a): the budget the baseline needs to reach a,
  divided by B + extra_cost (extra_cost: difficulty estimation charged per question).
  `lower_bound` marks ratios where the baseline never reached a within its budgets."""
  out = []
  for b, a in zip(budgets, accuracies):
    needed, reached = budget_to_reach(baseline_budgets, baseline_accuracies, a)
    spent = b + extra_cost
    out.append({"budget": b, "spent": spent, "accuracy": round(float(a), 4),
                "baseline_budget": round(needed, 3), "ratio": round(needed / spent, 3),
                "lower_bound": not reached})
  return out


def headline_ratio(rows: list[dict]) -> dict:
  """Max (the paper: 'up to 4x less compute') and median ratio over the budgets where the
  baseline reached compute-optimal's accuracy; the others are lower bounds, listed apart.
  max and median are None when no budget counts."""
  counted = [r for r in rows if not r["lower_bound"]]
  best = max(counted, key=lambda r: r["ratio"], default=None)
  return {"max": best and best["ratio"], "at_budget": best and best["budget"],
          "median": round(float(np.median([r["ratio"] for r in counted])), 3) if counted
          else None, "budgets_counted": [r["budget"] for r in counted],
          "lower_bounds": [{"budget": r["budget"], "ratio_at_least": r["ratio"]}
                           for r in rows if r["lower_bound"]]}
