"""The paper's four findings (docs/paper.md), each judged from the intervals in the select and
flops files, for each kind of difficulty bins (oracle, predicted, prompt): reproduced,
partly, not reproduced or not measurable, with the criterion and the intervals behind the
verdict in its statement.

A check reads a 95% paired-bootstrap interval against a threshold: `supported` when the
whole interval is on the finding's side, `contradicted` when none of it is, `undecided`
(too wide to decide) otherwise. Thresholds are ours (the paper gives curves, not tests).
"""
SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "undecided"


def check(ci, above: float = 0.0, below: float | None = None) -> str:
  """Whether the interval [lo, hi] lies above `above` (or, given `below`, under it)."""
  lo, hi = ci
  if below is not None:
    return SUPPORTED if hi < below else CONTRADICTED if lo >= below else UNDECIDED
  return SUPPORTED if lo > above else CONTRADICTED if hi <= above else UNDECIDED


def verdict(checks: list[str]) -> str:
  """All supported: reproduced; some: partly; none but some undecided: not measurable."""
  if all(c == SUPPORTED for c in checks):
    return "reproduced"
  if SUPPORTED in checks:
    return "partly"
  return "not measurable" if UNDECIDED in checks else "not reproduced"


def _est(e: dict, digits: int = 3) -> str:
  return f"{e['value']:+.{digits}f} [{e['ci'][0]:+.{digits}f}, {e['ci'][1]:+.{digits}f}]"


def beam_vs_best_of_n(gap: dict | None, bins: str) -> dict:
  """Finding 1: PRM beam search beats best-of-N at small budgets; best-of-N catches up at
  large ones. Beam: the setting (M >= 2) chosen on the other fold (cross-validated)."""
  if gap is None:
    return {"status": "not measurable", "statement": "needs beam search (M >= 2) and "
            "best-of-N at two or more equal budgets"}
  ahead = check(gap["small_gap"]["ci"])
  declines = check(gap["gap_decline"]["ci"])
  status = ({SUPPORTED: "reproduced" if declines == SUPPORTED else "partly",
             CONTRADICTED: "not reproduced", UNDECIDED: "not measurable"}[ahead])
  return {"status": status, "checks": {"ahead_at_small_budgets": ahead,
                                       "gap_falls_by_the_largest": declines},
          "statement": (f"{bins} folds, cross-validated beam choice minus best-of-N accuracy "
                        f"(95% interval): {_est(gap['small_gap'])} on average at budgets "
                        f"{gap['small_budgets']}, {_est(gap['largest_gap'])} at "
                        f"{gap['budgets'][-1]}; decline {_est(gap['gap_decline'])}. Criterion: "
                        "reproduced when the small-budget interval is above 0 and the "
                        "decline interval above 0 (best-of-N catches up); partly when only "
                        "the first; not reproduced when the first is at or below 0; not "
                        "measurable when it straddles 0.")}


def headline_text(head: dict) -> str:
  """An efficiency headline for a reader: max and median with intervals, lower bounds apart."""
  if head["max"] is None:
    text = "no budget where the baseline reached compute-optimal's accuracy"
  else:
    text = (f"up to {head['max']:.2f}x [{head['max_ci'][0]:.2f}, {head['max_ci'][1]:.2f}] "
            f"at {head['at_budget']} generations, median {head['median']:.2f}x "
            f"[{head['median_ci'][0]:.2f}, {head['median_ci'][1]:.2f}] over budgets "
            f"{head['budgets_counted']}")
  bounds = ", ".join(f">= {b['ratio_at_least']:.2f}x at {b['budget']}"
                     for b in head["lower_bounds"])
  return text + (f"; lower bounds, left out (the baseline never reached it): {bounds}"
                 if bounds else "")


def efficiency(family: dict | None, name: str, bins: str, at_least: float = 2.0) -> dict:
  """Finding 2 (search) and half of 3 (revisions): compute-optimal needs less compute than
  the baseline for the same accuracy (the paper: about 4x). Reproduced when some budget's
  ratio interval lies above `at_least`, partly when above 1, not reproduced when every
  budget's is at or below 1."""
  if family is None:
    return {"status": "not measurable", "statement": f"no {name} result files"}
  block = family[family["efficiency_judged"]]  # charged with select.charge_difficulty
  rows = block["rows"]
  strong = [r["budget"] for r in rows if check(r["ratio_ci"], at_least) == SUPPORTED]
  some = [r["budget"] for r in rows if check(r["ratio_ci"], 1.0) == SUPPORTED]
  status = ("reproduced" if strong else "partly" if some else "not reproduced"
            if all(check(r["ratio_ci"], 1.0) == CONTRADICTED for r in rows)
            else "not measurable")
  head = block["headline"]
  return {"status": status, "budgets_above_threshold": strong, "budgets_above_1": some,
          "headline": head,
          "statement": (f"{name}, {bins} bins, cross-validated: compute-optimal matches the "
                        f"baseline's accuracy with {headline_text(head)}. Criterion: a ratio "
                        f"interval above {at_least:g} at some budget "
                        f"(reproduced: {strong or 'none'}), above 1 (partly: {some or 'none'}); "
                        f"paper about 4x. {adaptive_text(family, head)}")}


def adaptive_text(family: dict, head: dict) -> str:
  """How much of compute-optimal's lead is choosing per difficulty bin rather than one
  setting per budget for all questions (comparisons.family_curves)."""
  budgets = [row["budget"] for row in family["efficiency"]["rows"]]
  at = head["at_budget"] if head["max"] is not None else budgets[-1]
  gain = family["adaptive_minus_fixed"]
  i = budgets.index(at)
  return (f"Adapting to difficulty: compute-optimal minus the best fixed setting per budget "
          f"(chosen on the same folds) at {at} generations: "
          f"{_est({'value': gain['value'][i], 'ci': gain['ci'][i]})}.")


def revision_ratio(advantage: dict | None, family: dict | None, bins: str) -> dict:
  """Finding 3: easier questions favour sequential revisions (cross-validated sequential-
  leaning minus parallel-leaning split, easiest bin minus hardest), and compute-optimal
  revisions beat all-parallel."""
  if family is None:
    return {"status": "not measurable", "statement": "no revision result files"}
  eff = efficiency(family, "revisions", bins)
  if advantage is None:
    return {"status": "not measurable", "efficiency": eff, "statement": "the largest revision "
            "budget has no sequential-leaning and parallel-leaning split to compare"}
  contrast = advantage["easiest_minus_hardest"]
  checks = [check(contrast["ci"]),
            SUPPORTED if eff["status"] == "reproduced" else
            CONTRADICTED if eff["status"] == "not reproduced" else UNDECIDED]
  per_bin = ", ".join(f"bin {b}: {_est(v)}" for b, v in advantage["by_bin"].items())
  return {"status": verdict(checks), "sequential_advantage": advantage, "efficiency": eff,
          "statement": (f"{bins} bins, at N = {advantage['budget']}: sequential-leaning minus "
                        f"parallel-leaning split accuracy (each chosen on the other fold) "
                        f"{per_bin}; easiest minus hardest {_est(contrast)} (criterion: "
                        f"interval above 0). {eff['statement']}")}


def flops_matched(kinds: dict | None, name: str, bins: str) -> dict:
  """Finding 4: at matched FLOPs, test-time compute wins on easy and medium bins at the
  smallest R; the 14x model wins on the hardest bin at the largest R. A cell beyond the
  largest run holds a lower bound of the small model's accuracy: it can support the first
  claim but not contradict it, and cannot support the second."""
  if not kinds:
    return {"status": "not measurable", "statement": f"{name}: not measured (no result files)."}
  by_r = sorted(kinds[bins]["matched"].values(), key=lambda r: r["R"])
  low, high = by_r[0], by_r[-1]
  easier = low["easier"]
  first = check(easier["absolute_difference"]["ci"])
  if first == CONTRADICTED and easier["beyond_largest_run"]:
    first = UNDECIDED
  hardest_bin = sorted(high["bins"], key=int)[-1]
  hard = high["bins"][hardest_bin]
  second = check(hard["absolute_difference"]["ci"], below=0.0)
  if second == SUPPORTED and hard["where"] == "beyond_largest_run":
    second = UNDECIDED
  beyond = [f"bin {b} at R={low['R']:g}" for b in easier["beyond_largest_run"]]
  if hard["where"] == "beyond_largest_run":
    beyond.append(f"bin {hardest_bin} at R={high['R']:g}")
  caveat = (f" Beyond the largest run (the small model's accuracy a lower bound): "
            f"{', '.join(beyond)}." if beyond else "")
  return {"status": verdict([first, second]),
          "checks": {"test_time_ahead_on_easier_bins_low_R": first,
                     "large_ahead_on_hardest_bin_high_R": second},
          "easier_bins_difference_low_R": easier["absolute_difference"],
          "hardest_bin_difference_high_R": hard["absolute_difference"],
          "statement": (f"{name}, {bins} bins: small + cross-validated compute-optimal "
                        f"test-time compute minus the 14x model at matched FLOPs, "
                        f"R={low['R']:g}, bins {', '.join(easier['bins'])}: "
                        f"{_est(easier['absolute_difference'])}; R={high['R']:g}, bin "
                        f"{hardest_bin}: {_est(hard['absolute_difference'])} (criterion: the "
                        "first interval above 0, the second below 0)." + caveat)}


def _with_status(parts: dict) -> dict:
  """One verdict over the families measured (search, revisions)."""
  measured = [p["status"] for p in parts.values() if p["status"] != "not measurable"]
  status = ("not measurable" if not measured else measured[0] if len(set(measured)) == 1
            else "partly")
  return {"status": status, "statement": " ".join(p["statement"] for p in parts.values()),
          **parts}


def all_findings(selection: dict, flops: dict, bins: str) -> dict:
  """The four findings under one bin kind (config.BIN_KINDS)."""
  families = selection["families"]
  search = families["search"][bins]
  revisions = families.get("revisions", {}).get(bins)
  return {
      "1_beam_search_vs_best_of_n": beam_vs_best_of_n(search["beam_minus_best_of_n"], bins),
      "2_compute_optimal_search": efficiency(search, "search", bins),
      "3_revisions": revision_ratio(revisions and revisions["sequential_advantage"],
                                    revisions, bins),
      "4_flops_matched": _with_status({f: flops_matched(flops["families"].get(f), f, bins)
                                       for f in ("search", "revisions")}),
  }
