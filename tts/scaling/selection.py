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
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Setting:
  method: str
  n: int
  generations: int  # per question
  correct: np.ndarray  # bool[Q]: the setting's selected answer is right, per question
  flops: np.ndarray  # float[Q]: inference FLOPs spent per question (policy + verifier)

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


def budget_to_reach(budgets, accuracies, target: float) -> tuple[float, bool]:
  """The smallest budget at which the curve (linear in log2 budget between the budgets
  run) reaches `target`. Returns (budget, reached); not reached: (largest budget, False),
  so budget / B is then a lower bound of the ratio."""
  budgets, accuracies = list(budgets), list(accuracies)
  if accuracies[0] >= target:
    return float(budgets[0]), True
  for (b0, a0), (b1, a1) in zip(zip(budgets, accuracies), zip(budgets[1:], accuracies[1:])):
    if a1 >= target > a0:
      t = (target - a0) / (a1 - a0)
      return float(2 ** (math.log2(b0) + t * (math.log2(b1) - math.log2(b0)))), True
  return float(budgets[-1]), False


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
  """The largest ratio over budgets (the paper: 'up to 4x less compute') and the median."""
  ratios = [r["ratio"] for r in rows]
  best = max(rows, key=lambda r: r["ratio"])
  return {"max": best["ratio"], "at_budget": best["budget"], "max_is_lower_bound":
          best["lower_bound"], "median": round(float(np.median(ratios)), 3)}
