"""The paper's four findings (docs/paper.md), each judged from the select and flops files:
reproduced, partly, not reproduced or not measurable, with the numbers behind the verdict.

Thresholds are ours (the paper gives curves, not tests) and are stated in each statement.
"""
import numpy as np


def _verdict(checks: list[bool]) -> str:
  return "reproduced" if all(checks) else "partly" if any(checks) else "not reproduced"


def beam_vs_best_of_n(settings: list[dict], baseline: str) -> dict:
  """Finding 1: PRM beam search beats best-of-N at small budgets; best-of-N catches up at
  large ones. Gap = best beam setting (M >= 2) minus best-of-N, at equal generations."""
  bon = {s["generations"]: s["accuracy"] for s in settings if s["method"] == baseline}
  gaps = {}
  for b, acc in sorted(bon.items()):
    beams = [s["accuracy"] for s in settings if s.get("kind") == "beam"
             and s["generations"] == b and s.get("beam_width", 0) >= 2]
    if beams:
      gaps[b] = round(max(beams) - acc, 4)
  if len(gaps) < 2:
    return {"status": "not measurable", "statement": "needs beam search at two or more "
            "budgets with beam width >= 2", "gap_by_budget": gaps}
  budgets = sorted(gaps)
  small = [gaps[b] for b in budgets[:len(budgets) // 2 or 1]]
  largest = gaps[budgets[-1]]
  ahead, narrower = float(np.mean(small)) > 0, largest < float(np.mean(small))
  status = ("reproduced" if ahead and narrower else "partly" if ahead else "not reproduced")
  return {"status": status, "gap_by_budget": {str(b): g for b, g in gaps.items()},
          "statement": (f"beam minus best-of-N accuracy: mean {np.mean(small):+.3f} at the "
                        f"smaller budgets {budgets[:len(small)]}, {largest:+.3f} at "
                        f"{budgets[-1]} generations (criterion: beam ahead at small budgets "
                        "and the gap narrower at the largest)")}


def efficiency(family: dict | None, name: str) -> dict:
  """Finding 2 (search) and half of 3 (revisions): compute-optimal needs less compute than
  the baseline for the same accuracy; the paper: about 4x."""
  if family is None:
    return {"status": "not measurable", "statement": f"no {name} result files"}
  head = family["efficiency_ratio"]
  bound = " (a lower bound: the baseline never reached it)" if head["max_is_lower_bound"] else ""
  status = "reproduced" if head["max"] >= 2 else "partly" if head["max"] > 1 else "not reproduced"
  return {"status": status, **head,
          "statement": (f"{name}: compute-optimal matches the baseline's accuracy with up "
                        f"to {head['max']:.2f}x less compute (at "
                        f"{head['at_budget']} generations{bound}; median over budgets "
                        f"{head['median']:.2f}x; criterion >= 2x; paper about 4x)")}


def revision_ratio(settings: list[dict] | None, family: dict | None, bins: str) -> dict:
  """Finding 3: the best sequential/parallel ratio depends on difficulty (easy questions
  more sequential), and compute-optimal revisions are more efficient than all-parallel."""
  if not settings or family is None:
    return {"status": "not measurable", "statement": "no revision result files"}
  largest = max(s["n"] for s in settings)
  at = [s for s in settings if s["n"] == largest and "chains" in s]
  bin_names = sorted(at[0][f"{bins}_bins"], key=int)
  best = {}
  for b in bin_names:  # equally accurate splits: the geometric mean of their ratios
    top = max(s[f"{bins}_bins"][b] for s in at)
    ratios = [s["chain_length"] / s["chains"] for s in at if s[f"{bins}_bins"][b] == top]
    best[b] = round(float(np.exp(np.mean(np.log(ratios)))), 4)
  eff = efficiency(family, "revisions")
  checks = [best[bin_names[0]] > best[bin_names[-1]], eff["status"] == "reproduced"]
  return {"status": _verdict(checks), "best_sequential_to_parallel": best,
          "budget": largest, "efficiency": eff,
          "statement": (f"at N={largest} the best sequential/parallel ratio is "
                        f"{best[bin_names[0]]:g} on the easiest bin and "
                        f"{best[bin_names[-1]]:g} on the hardest (criterion: easier prefers "
                        f"more sequential); {eff['statement']}")}


def flops_matched(rows: dict | None, name: str) -> dict:
  """Finding 4: at matched FLOPs, test-time compute wins on easy and medium bins at
  R << 1; pretraining (the 14x model) wins on the hardest bins at R >> 1."""
  if not rows:
    return {"status": "not measurable", "statement": f"{name}: not measured (no result files)."}
  by_r = sorted(rows.values(), key=lambda r: r["R"])
  low, high = by_r[0], by_r[-1]
  names = sorted(low["bins"], key=int)
  easy = names[:max(1, (3 * len(names)) // 5)]
  easy_diff = float(np.mean([low["bins"][b]["absolute_difference"] for b in easy]))
  hard = high["bins"][names[-1]]
  checks = [easy_diff > 0, hard["absolute_difference"] < 0]
  beyond = [f"bin {b} at R={low['R']:g}" for b in easy
            if low["bins"][b]["where"] == "beyond_largest_run"]
  if hard["where"] == "beyond_largest_run":
    beyond.append(f"bin {names[-1]} at R={high['R']:g}")
  caveat = (f" Matched budget beyond the largest run (the small model's accuracy a lower "
            f"bound): {', '.join(beyond)}." if beyond else "")
  return {"status": _verdict(checks),
          "statement": (f"{name}: at R={low['R']:g} test-time compute minus the 14x model on "
                        f"bins {', '.join(easy)}: {easy_diff:+.3f} accuracy; at R={high['R']:g} "
                        f"on bin {names[-1]}: {hard['absolute_difference']:+.3f} "
                        "(criterion: the first > 0, the second < 0)." + caveat),
          "easy_bins_difference_low_R": round(easy_diff, 4),
          "hardest_bin_difference_high_R": hard["absolute_difference"]}


def all_findings(selection: dict, settings: dict, flops: dict) -> dict:
  bins = selection["bins"]
  families = selection["families"]
  search = families["search"][bins]
  revisions = families.get("revisions", {}).get(bins)
  return {
      "1_beam_search_vs_best_of_n": beam_vs_best_of_n(settings["search"],
                                                      families["search"]["baseline"][0]
                                                      .split("/")[0]),
      "2_compute_optimal_search": efficiency(search, "search"),
      "3_revisions": revision_ratio(settings.get("revisions"), revisions, bins),
      "4_flops_matched": _with_status({f: flops_matched(flops["families"].get(f), f)
                                       for f in ("search", "revisions")}),
  }


def _with_status(parts: dict) -> dict:
  """One verdict over the families measured (search, revisions)."""
  measured = [p["status"] for p in parts.values() if p["status"] != "not measurable"]
  status = ("not measurable" if not measured else measured[0] if len(set(measured)) == 1
            else "partly")
  return {"status": status, "statement": " ".join(p["statement"] for p in parts.values()),
          **parts}
