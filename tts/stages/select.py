"""`select` stage: compute-optimal settings per difficulty bin and budget (2-fold
cross-validation), against the baseline, for search and (when its files exist) revisions.

Reads difficulty/questions.jsonl and the result files search/<method>/n<N>.jsonl and
revision_search/<method>/n<N>.jsonl; writes select/selection.json (curves, choices,
efficiency ratios) and select/settings.json (every setting's accuracy by bin). Schemas in
WORKSPACE.md.
"""
import glob
import os
import re

import numpy as np

from tts import config_schema
from tts.atomic_files import read_jsonl, write_json_atomic
from tts.scaling import selection
from tts.scaling.config import BIN_KINDS, SelectConfig
from tts.scaling.selection import Setting

FAMILIES = {"search": "search", "revisions": "revision_search"}  # name -> stage folder
SETTING_FIELDS = ("kind", "beam_width", "lookahead", "chains", "chain_length")


def read_difficulty(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "difficulty", "questions.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found; run the difficulty stage first")
  return read_jsonl(path)


def read_results(directory: str, ids: list[str]) -> dict[str, dict[int, list[dict]]]:
  """method -> budget -> records of <directory>/<method>/n<N>.jsonl, checked to hold the
  difficulty stage's questions in the same order."""
  out = {}
  for path in sorted(glob.glob(os.path.join(directory, "*", "n*.jsonl"))):
    match = re.fullmatch(r"n(\d+)\.jsonl", os.path.basename(path))
    if not match:
      continue
    records = read_jsonl(path)
    found = [r["id"] for r in records]
    if found != ids:
      raise ValueError(f"{path} holds questions {found[:3]}... but difficulty/questions.jsonl "
                       f"holds {ids[:3]}... ({len(found)} vs {len(ids)}): both must cover the "
                       "first search.num_questions test questions; redo the older stage "
                       "with --force")
    out.setdefault(os.path.basename(os.path.dirname(path)), {})[int(match[1])] = records
  return out


def to_setting(method: str, n: int, records: list[dict], rule: str, path: str) -> Setting:
  generations = {r["counts"]["generations"] for r in records}
  if len(generations) != 1:
    raise ValueError(f"{path}: counts.generations differs between questions {sorted(generations)}")
  if rule not in records[0]["selected"]:
    raise ValueError(f"select.rule={rule!r} is not in {path} (selected has "
                     f"{sorted(records[0]['selected'])})")
  return Setting(method, n, generations.pop(),
                 np.array([r["selected"][rule]["correct"] for r in records], bool),
                 np.array([r["counts"]["policy_flops"] + r["counts"]["verifier_flops"]
                           for r in records], np.float64))


def baseline_of(family: str, results: dict, settings: dict, cfg: SelectConfig) -> dict:
  """generations -> the baseline setting there: best-of-N (search) or all-parallel chains
  (P = N, revisions)."""
  if family == "search":
    if cfg.search_baseline not in results:
      raise ValueError(f"select.search_baseline={cfg.search_baseline!r} has no files in "
                       f"search/ (methods: {', '.join(sorted(results))})")
    chosen = [settings[(cfg.search_baseline, n)] for n in results[cfg.search_baseline]]
  else:
    chosen = [settings[(m, n)] for m, per in results.items() for n, rs in per.items()
              if rs[0].get("chains") == n]
  return {s.generations: s for s in chosen}


def _round(values) -> list[float]:
  return [round(float(v), 4) for v in values]


def family_curves(settings: list[Setting], baseline: dict, bins, folds, extra_cost: float,
                  charge: bool) -> dict:
  """Compute-optimal and baseline accuracy and FLOPs per budget, overall and per bin."""
  budgets = sorted(baseline)
  results = [selection.compute_optimal(settings, bins, folds, b) for b in budgets]
  out = {"compute_optimal": {"accuracy": _round(r.correct.mean() for r in results),
                             "mean_flops": _round(r.flops.mean() for r in results),
                             "mean_generations": _round(r.generations.mean() for r in results)},
         "baseline": {"accuracy": _round(baseline[b].correct.mean() for b in budgets),
                      "mean_flops": _round(baseline[b].flops.mean() for b in budgets)},
         "by_bin": {}}
  for b in np.unique(bins):
    mask = bins == b
    out["by_bin"][str(b)] = {
        "questions": int(mask.sum()),
        "compute_optimal": _round(r.correct[mask].mean() for r in results),
        "compute_optimal_flops": _round(r.flops[mask].mean() for r in results),
        "baseline": _round(baseline[n].correct[mask].mean() for n in budgets),
        "baseline_flops": _round(baseline[n].flops[mask].mean() for n in budgets),
        "choices": [r.choices[int(b)] for r in results]}
  co, base = out["compute_optimal"]["accuracy"], out["baseline"]["accuracy"]
  for key, cost in (("efficiency", 0.0), ("efficiency_charged", extra_cost)):
    rows = selection.efficiency_ratios(budgets, co, budgets, base, extra_cost=cost)
    out[key] = {"rows": rows, "headline": selection.headline_ratio(rows)}
  out["efficiency_ratio"] = out["efficiency_charged" if charge else "efficiency"]["headline"]
  return out


def setting_table(settings: list[Setting], results: dict, bins_by_kind: dict) -> list[dict]:
  """Each setting's accuracy overall and per bin, for the per-method plots."""
  rows = []
  for s in settings:
    first = results[s.method][s.n][0]
    row = {"method": s.method, "n": s.n, "generations": s.generations,
           **{k: first[k] for k in SETTING_FIELDS if k in first},
           "accuracy": round(float(s.correct.mean()), 4),
           "mean_flops": round(float(s.flops.mean()), 1)}
    for kind, bins in bins_by_kind.items():
      row[f"{kind}_bins"] = {str(b): round(float(s.correct[bins == b].mean()), 4)
                             for b in np.unique(bins)}
    rows.append(row)
  return rows


def run(ctx) -> dict:
  cfg = config_schema.build(SelectConfig, ctx.config.select, "select")
  questions = read_difficulty(ctx.workdir)
  ids = [q["id"] for q in questions]
  bins_by_kind = {k: np.array([q[f"{k}_bin"] for q in questions]) for k in BIN_KINDS}
  cost = float(np.mean([q["estimation"]["generations"] for q in questions]))
  out = {"bins": cfg.bins, "rule": cfg.rule, "charge_difficulty": cfg.charge_difficulty,
         "difficulty_cost_generations": cost, "questions": len(ids), "families": {}}
  tables, summary = {}, {}
  for family, folder in FAMILIES.items():
    results = read_results(ctx.stage_dir(folder), ids)
    if not results:
      continue
    by_key = {(m, n): to_setting(m, n, rs, cfg.rule,
                                 os.path.join(ctx.stage_dir(folder), m, f"n{n}.jsonl"))
              for m, per in results.items() for n, rs in per.items()}
    baseline = baseline_of(family, results, by_key, cfg)
    if not baseline:
      raise ValueError(f"{ctx.stage_dir(folder)} has no baseline setting (all-parallel chains "
                       "with chains == N)")
    settings = list(by_key.values())
    entry = {"budgets": sorted(baseline),
             "baseline": [baseline[n].name for n in sorted(baseline)]}
    for kind, bins in bins_by_kind.items():
      folds = selection.two_folds(bins, cfg.seed)
      entry[kind] = family_curves(settings, baseline, bins, folds, cost, cfg.charge_difficulty)
    out["families"][family] = entry
    tables[family] = setting_table(settings, results, bins_by_kind)
    summary[family] = {k: entry[k]["efficiency_ratio"]["max"] for k in BIN_KINDS}
  if "search" not in out["families"]:
    raise FileNotFoundError(f"no result files under {ctx.stage_dir('search')}; run the search "
                            "stage first")
  if ctx.is_main:
    write_json_atomic(os.path.join(ctx.stage_dir("select"), "selection.json"), out)
    write_json_atomic(os.path.join(ctx.stage_dir("select"), "settings.json"), tables)
  return {"efficiency_ratio_max": summary}
