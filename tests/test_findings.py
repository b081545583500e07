"""Verdict rules on hand-made intervals: each of reproduced, partly, not reproduced and not
measurable is reachable for every finding, and only from what the intervals support."""
import pytest

from tts.report import findings


def est(value, lo, hi):
  return {"value": value, "ci": [lo, hi]}


def test_a_check_reads_the_whole_interval():
  assert findings.check([0.01, 0.2]) == findings.SUPPORTED
  assert findings.check([-0.2, 0.0]) == findings.CONTRADICTED
  assert findings.check([-0.1, 0.1]) == findings.UNDECIDED
  assert findings.check([2.1, 3.0], above=2.0) == findings.SUPPORTED
  assert findings.check([-0.3, -0.1], below=0.0) == findings.SUPPORTED
  assert findings.check([0.0, 0.1], below=0.0) == findings.CONTRADICTED


def _gap(small, decline):
  return {"budgets": [4, 16], "small_budgets": [4], "small_gap": small,
          "largest_gap": est(0.0, -0.1, 0.1), "gap_decline": decline}


@pytest.mark.parametrize("small, decline, status", [
    (est(0.1, 0.05, 0.15), est(0.1, 0.02, 0.2), "reproduced"),
    (est(0.1, 0.05, 0.15), est(0.0, -0.1, 0.1), "partly"),
    (est(-0.1, -0.2, -0.05), est(0.1, 0.02, 0.2), "not reproduced"),
    (est(0.02, -0.05, 0.1), est(0.1, 0.02, 0.2), "not measurable"),
])
def test_beam_vs_best_of_n(small, decline, status):
  out = findings.beam_vs_best_of_n(_gap(small, decline), "oracle")
  assert out["status"] == status
  assert f"[{small['ci'][0]:+.3f}, {small['ci'][1]:+.3f}]" in out["statement"]
  assert findings.beam_vs_best_of_n(None, "oracle")["status"] == "not measurable"


def _family(*cis):
  rows = [{"budget": 2 ** i, "ratio": sum(ci) / 2, "ratio_ci": list(ci), "lower_bound": False}
          for i, ci in enumerate(cis)]
  best = max(rows, key=lambda r: r["ratio"])
  head = {"max": best["ratio"], "max_ci": best["ratio_ci"], "at_budget": best["budget"],
          "median": 1.0, "median_ci": [1.0, 1.0], "budgets_counted": [r["budget"] for r in rows],
          "lower_bounds": [{"budget": 64, "ratio_at_least": 5.0}]}
  adaptive = {"value": [0.01 * i for i in range(len(rows))],
              "ci": [[0.01 * i - 0.02, 0.01 * i + 0.02] for i in range(len(rows))]}
  return {"efficiency": {"rows": rows, "headline": head}, "efficiency_judged": "efficiency",
          "adaptive_minus_fixed": adaptive}


@pytest.mark.parametrize("cis, status", [
    (([1.0, 1.0], [2.5, 4.0]), "reproduced"),
    (([1.0, 1.0], [1.2, 3.0]), "partly"),
    (([0.5, 1.0], [0.8, 1.0]), "not reproduced"),
    (([1.0, 1.0], [0.9, 3.0]), "not measurable"),
])
def test_efficiency(cis, status):
  out = findings.efficiency(_family(*cis), "search", "predicted")
  assert out["status"] == status
  assert ">= 5.00x at 64" in out["statement"]  # lower bounds listed apart
  assert "predicted bins" in out["statement"]
  at = [c for c in cis].index(max(cis, key=sum))  # the headline budget's row
  assert (f"at {2 ** at} generations: +{0.01 * at:.3f} [{0.01 * at - 0.02:+.3f}, "
          f"{0.01 * at + 0.02:+.3f}]") in out["statement"]


@pytest.mark.parametrize("contrast, ratio, status", [
    (est(0.3, 0.1, 0.5), [2.5, 4.0], "reproduced"),
    (est(0.3, 0.1, 0.5), [0.5, 1.0], "partly"),
    (est(-0.3, -0.5, -0.1), [0.5, 1.0], "not reproduced"),
    (est(0.0, -0.2, 0.2), [0.9, 3.0], "not measurable"),
])
def test_revisions(contrast, ratio, status):
  advantage = {"budget": 8, "by_bin": {"1": est(0.3, 0.1, 0.5), "5": est(0.0, 0.0, 0.0)},
               "easiest_minus_hardest": contrast}
  out = findings.revision_ratio(advantage, _family(ratio), "oracle")
  assert out["status"] == status


def _matched(easier, hardest, beyond=(), hardest_where="interpolated"):
  cell = lambda d, where="interpolated": {"absolute_difference": d, "where": where}
  rows = {"0.16": {"R": 0.16, "bins": {"1": cell(easier), "2": cell(hardest)},
                   "easier": {"bins": ["1"], "absolute_difference": easier,
                              "beyond_largest_run": list(beyond)}},
          "22": {"R": 22.0, "bins": {"1": cell(easier), "2": cell(hardest, hardest_where)},
                 "easier": {"bins": ["1"], "absolute_difference": easier,
                            "beyond_largest_run": []}}}
  return {"oracle": {"matched": rows}}


@pytest.mark.parametrize("kinds, status", [
    (_matched(est(0.2, 0.1, 0.3), est(-0.2, -0.3, -0.1)), "reproduced"),
    (_matched(est(0.2, 0.1, 0.3), est(0.0, -0.1, 0.1)), "partly"),
    (_matched(est(-0.2, -0.3, -0.1), est(0.2, 0.1, 0.3)), "not reproduced"),
    (_matched(est(0.0, -0.1, 0.1), est(0.0, -0.1, 0.1)), "not measurable"),
    # A lower bound cannot contradict "test-time compute ahead", nor support "14x ahead".
    (_matched(est(-0.2, -0.3, -0.1), est(0.2, 0.1, 0.3), beyond=["1"]), "not measurable"),
    (_matched(est(0.2, 0.1, 0.3), est(-0.2, -0.3, -0.1), hardest_where="beyond_largest_run"),
     "partly"),
])
def test_flops_matched(kinds, status):
  assert findings.flops_matched(kinds, "search", "oracle")["status"] == status
  assert findings.flops_matched(None, "search", "oracle")["status"] == "not measurable"
