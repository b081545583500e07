"""The comparisons behind the findings, each with its paired-bootstrap interval: compute-
optimal and baseline curves (overall and per bin), their difference and efficiency ratio;
cross-validated beam search minus best-of-N; the sequential advantage of revisions by bin.

Every statistic is a function of per-question outcomes (a cross-validated choice is made
once, on the full folds; its per-question outcomes are then resampled), evaluated on one
shared set of resample weights (tts/scaling/bootstrap.py), so all intervals are paired.
"""
import numpy as np

from tts.scaling import bootstrap, selection
from tts.scaling.selection import Setting


def _round(values) -> list[float]:
  return [round(float(v), 4) for v in values]


def cis(samples) -> list[list[float]]:
  """[[lo, hi] per statistic] of samples float[B, K]."""
  lo, hi = bootstrap.interval(samples)
  return [[round(float(a), 4), round(float(b), 4)] for a, b in zip(lo, hi)]


def family_curves(settings: list[Setting], baseline: dict, bins, folds, weights,
                  extra_cost: float, charge: bool) -> tuple[dict, np.ndarray, np.ndarray]:
  """Compute-optimal and baseline accuracy (with intervals) and FLOPs per budget, overall
  and per bin, their difference and the efficiency ratios. Also returns compute-optimal's
  per-question outcomes and FLOPs, bool/float[Q, K] over the baseline's budgets.

  adaptive_minus_fixed: compute-optimal minus the best fixed setting per budget (one bin,
  chosen on the same folds). The ratio over the baseline counts two gains, a better method
  than the baseline and a different one per difficulty; this separates the second, the
  one the paper's method is about."""
  budgets = sorted(baseline)
  results = [selection.compute_optimal(settings, bins, folds, b) for b in budgets]
  co = np.stack([r.correct for r in results], axis=1).astype(np.float64)
  co_flops = np.stack([r.flops for r in results], axis=1)
  one_bin = np.zeros(len(folds), np.int64)
  fixed = np.stack([selection.compute_optimal(settings, one_bin, folds, b).correct
                    for b in budgets], axis=1).astype(np.float64)
  base = np.stack([baseline[b].correct for b in budgets], axis=1).astype(np.float64)
  co_s, base_s = bootstrap.means(weights, co), bootstrap.means(weights, base)
  fixed_s = bootstrap.means(weights, fixed)
  out = {"compute_optimal": {"accuracy": _round(co.mean(0)), "accuracy_ci": cis(co_s),
                             "mean_flops": _round(co_flops.mean(0)),
                             "mean_generations": _round(r.generations.mean() for r in results)},
         "baseline": {"accuracy": _round(base.mean(0)), "accuracy_ci": cis(base_s),
                      "mean_flops": _round(baseline[b].flops.mean() for b in budgets)},
         "difference": {"value": _round((co - base).mean(0)), "ci": cis(co_s - base_s)},
         "adaptive_minus_fixed": {"fixed_accuracy": _round(fixed.mean(0)),
                                  "fixed_accuracy_ci": cis(fixed_s),
                                  "value": _round((co - fixed).mean(0)),
                                  "ci": cis(co_s - fixed_s)},
         "by_bin": {}}
  for b in np.unique(bins):
    mask = bins == b
    co_b, base_b = bootstrap.means(weights, co, mask), bootstrap.means(weights, base, mask)
    out["by_bin"][str(b)] = {
        "questions": int(mask.sum()),
        "compute_optimal": _round(co[mask].mean(0)), "compute_optimal_ci": cis(co_b),
        "compute_optimal_flops": _round(co_flops[mask].mean(0)),
        "baseline": _round(base[mask].mean(0)), "baseline_ci": cis(base_b),
        "baseline_flops": _round(baseline[n].flops[mask].mean() for n in budgets),
        "difference": _round((co - base)[mask].mean(0)), "difference_ci": cis(co_b - base_b),
        "choices": [r.choices[int(b)] for r in results]}
  for key, cost in (("efficiency", 0.0), ("efficiency_charged", extra_cost)):
    out[key] = efficiency(budgets, co.mean(0), base.mean(0), co_s, base_s, cost)
  out["efficiency_judged"] = "efficiency_charged" if charge else "efficiency"
  out["efficiency_ratio"] = out[out["efficiency_judged"]]["headline"]
  return out, co.astype(bool), co_flops


def efficiency(budgets, co, base, co_samples, base_samples, extra_cost: float) -> dict:
  """Efficiency rows (selection.efficiency_ratios) with each ratio's interval and the share
  of resamples where it is a lower bound; the headline with intervals of its max (the
  interval of the ratio at that budget) and of its median (over the same budgets)."""
  rows = selection.efficiency_ratios(budgets, co, budgets, base, extra_cost=extra_cost)
  ratios, reached = selection.ratio_samples(budgets, co_samples, base_samples, extra_cost)
  for row, ci, share in zip(rows, cis(ratios), 1 - reached.mean(axis=0)):
    row["ratio_ci"], row["lower_bound_share"] = ci, round(float(share), 4)
  head = selection.headline_ratio(rows)
  counted = [budgets.index(b) for b in head["budgets_counted"]]
  head["max_ci"] = rows[budgets.index(head["at_budget"])]["ratio_ci"] if counted else None
  head["median_ci"] = cis(np.median(ratios[:, counted], axis=1)[:, None])[0] if counted \
      else None
  return {"rows": rows, "headline": head}


def beam_minus_best_of_n(menu: list[Setting], baseline: dict, folds, weights) -> dict | None:
  """Finding 1: at each budget where both ran, the beam setting (M >= 2) chosen on one fold
  (all bins together) measured on the other, minus best-of-N; the mean gap over the smaller
  half of those budgets, the gap at the largest, and how far it falls from the first to the
  second (> 0: best-of-N catches up).
  None when fewer than two budgets have both."""
  budgets = sorted(b for b in baseline if any(
      s.kind == "beam" and s.beam_width >= 2 and s.generations == b for s in menu))
  if len(budgets) < 2:
    return None
  everyone = np.ones(len(folds), np.int64)
  diffs, choices = [], []
  for b in budgets:
    beams = [s for s in menu if s.kind == "beam" and s.beam_width >= 2 and s.generations == b]
    chosen = selection.compute_optimal(beams, everyone, folds, b)
    diffs.append(chosen.correct.astype(np.float64) - baseline[b].correct)
    choices.append(chosen.choices[1])
  diffs = np.stack(diffs, axis=1)
  small = budgets[:len(budgets) // 2 or 1]
  small_gap = diffs[:, :len(small)].mean(axis=1)
  stat = lambda values: bootstrap.estimate(np.mean(values), bootstrap.means(weights, values))
  samples = bootstrap.means(weights, diffs)
  return {"budgets": budgets, "gap": _round(diffs.mean(0)), "gap_ci": cis(samples),
          "beam_choices": choices, "small_budgets": small, "small_gap": stat(small_gap),
          "largest_gap": stat(diffs[:, -1]), "gap_decline": stat(small_gap - diffs[:, -1])}


def sequential_advantage(settings: list[Setting], bins, folds, weights) -> dict | None:
  """Finding 3: at the largest budget N, in each bin, the sequential-leaning split (chain
  length > chains) chosen on one fold minus the parallel-leaning one (chains > chain
  length) chosen the same way, measured on the other fold; and that advantage on the
  easiest bin minus on the hardest (> 0: easier questions favour sequential revisions).
  None when N has no split of each kind."""
  n = max(s.n for s in settings)
  at = [s for s in settings if s.n == n and s.chains]
  sequential = [s for s in at if n // s.chains > s.chains]
  parallel = [s for s in at if s.chains > n // s.chains]
  if not sequential or not parallel:
    return None
  seq = selection.compute_optimal(sequential, bins, folds, n)
  par = selection.compute_optimal(parallel, bins, folds, n)
  diff = seq.correct.astype(np.float64) - par.correct
  names = [int(b) for b in np.unique(bins)]
  by_bin, samples = {}, {}
  for b in names:
    mask = bins == b
    samples[b] = bootstrap.means(weights, diff, mask)
    by_bin[str(b)] = {**bootstrap.estimate(diff[mask].mean(), samples[b]),
                      "sequential_choices": seq.choices[b], "parallel_choices": par.choices[b]}
  contrast = diff[bins == names[0]].mean() - diff[bins == names[-1]].mean()
  return {"budget": n, "by_bin": by_bin, "easiest_minus_hardest": bootstrap.estimate(
      contrast, samples[names[0]] - samples[names[-1]])}
