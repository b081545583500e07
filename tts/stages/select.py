"""`select` stage: compute-optimal settings per difficulty bin and budget (2-fold
cross-validation), against the baseline, for search and (when its files exist) revisions,
under each kind of difficulty bins (oracle, predicted, prompt), each charged what its
estimate cost.

Reads difficulty/questions.jsonl and the result files search/<method>/n<N>.jsonl and
revision_search/<method>/n<N>.jsonl; writes select/selection.json (curves, choices,
efficiency ratios, how each bin kind tracks pass@1) and select/settings.json (every
setting's accuracy by bin). Schemas in WORKSPACE.md.
"""
import glob
import os
import re

import numpy as np

from tts import config_schema
from tts.atomic_files import exists, read_jsonl, write_json_atomic
from tts.interop.hf_layout import read_model_config
from tts.scaling import bootstrap, comparisons, difficulty, flops
from tts.scaling.config import BIN_ESTIMATION, BIN_KINDS, BIN_SCORES, SelectConfig
from tts.scaling.selection import Setting, two_folds
from tts.train.checkpoints import is_saved_model, load_model_config

FAMILIES = {"search": "search", "revisions": "revision_search"}  # name -> stage folder
SETTING_FIELDS = ("kind", "beam_width", "lookahead", "chains", "chain_length", "verifier")
PAPER_SEARCH_KINDS = ("best_of_n", "beam", "lookahead")


def read_difficulty(workdir: str) -> list[dict]:
  """difficulty/questions.jsonl, checked to hold every bin kind's fields."""
  path = os.path.join(workdir, "difficulty", "questions.jsonl")
  if not exists(path):
    raise FileNotFoundError(f"{path} not found; run the difficulty stage first")
  questions = read_jsonl(path)
  first = questions[0] if questions else {}
  missing = [f for k in BIN_KINDS for f in (f"{k}_bin", BIN_SCORES[k]) if f not in first] + [
      f"{e}.attention_flops" for e in sorted(set(BIN_ESTIMATION.values()))
      if "attention_flops" not in first.get(e, {})]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)} (written by an older version); "
                     "redo the difficulty stage with --force")
  return questions


def estimation_flops(question: dict, kind: str) -> float:
  """FLOPs one question's difficulty estimate for `kind` bins cost: parameters and
  attention of the policy and the verifier."""
  spent = question[BIN_ESTIMATION[kind]]
  return float(spent["flops"] + spent["attention_flops"])


def rank_correlation(score, pass1, weights) -> dict | None:
  """Spearman {value, ci}; None when either side is the same for every question."""
  rho = difficulty.spearman(score, pass1, undefined=np.nan)
  if np.isnan(rho):
    return None
  return bootstrap.estimate(rho, difficulty.resampled_spearman(weights, score, pass1))


def bin_kind_quality(questions: list[dict], weights) -> dict:
  """Per bin kind, how well it tracks difficulty and what it costs: agreement with oracle
  bins (fraction of questions in the same bin), Spearman of its score with pass@1 (each
  with its paired-bootstrap interval; the correlation None when undefined), and its
  estimation per question in generations and in FLOPs."""
  pass1 = np.array([q["pass1"] for q in questions], np.float64)
  oracle = np.array([q["oracle_bin"] for q in questions])
  out = {}
  for kind in BIN_KINDS:
    score = np.array([q[BIN_SCORES[kind]] for q in questions], np.float64)
    same = np.array([q[f"{kind}_bin"] for q in questions]) == oracle
    out[kind] = {
        "score": BIN_SCORES[kind],
        "agreement_with_oracle": bootstrap.estimate(same.mean(), bootstrap.means(weights, same)),
        "rank_correlation": rank_correlation(score, pass1, weights),
        "estimation_generations": float(np.mean([q[BIN_ESTIMATION[kind]]["generations"]
                                                 for q in questions])),
        "estimation_flops": round(float(np.mean([estimation_flops(q, kind)
                                                 for q in questions])), 1)}
  return out


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


def test_time_models(ctx, family: str) -> tuple:
  """(policy ModelConfig, verifier name -> its directory) whose FLOPs a family's records
  count: the small policy and search.verifiers, or the revision model and its ORM."""
  if family == "search":
    return (load_model_config(os.path.join(ctx.workdir, "policy", "small", "final")),
            {name: os.path.join(ctx.workdir, spec.path)
             for name, spec in ctx.config.search.verifiers.items()})
  return (load_model_config(os.path.join(ctx.workdir, "revision", "final")),
          {"revision_orm": os.path.join(ctx.workdir, "revision_orm", "final")})


def model_config(directory: str):
  """One of ours (model.json) or an imported Hugging Face checkpoint (config.json)."""
  if is_saved_model(directory):
    return load_model_config(directory)
  return read_model_config(directory)


def to_setting(method: str, n: int, records: list[dict], rule: str, path: str,
               models: tuple) -> Setting:
  """A setting from its records; FLOPs per question: policy + verifier parameters (the
  records' counts) plus both models' attention (tts/scaling/flops.py)."""
  generations = {r["counts"]["generations"] for r in records}
  if len(generations) != 1:
    raise ValueError(f"{path}: counts.generations differs between questions {sorted(generations)}")
  if rule not in records[0]["selected"]:
    raise ValueError(f"select.rule={rule!r} is not in {path} (selected has "
                     f"{sorted(records[0]['selected'])})")
  policy, verifiers = models
  first = records[0]
  if first["verifier"] not in verifiers:
    raise ValueError(f"{path}: verifier {first['verifier']!r} is not under search.verifiers "
                     f"({', '.join(sorted(verifiers))}); give its path there")
  per_pair = (flops.attention_flops_per_pair(policy)
              + flops.attention_flops_per_pair(model_config(verifiers[first["verifier"]])))
  return Setting(method, n, generations.pop(),
                 np.array([r["selected"][rule]["correct"] for r in records], bool),
                 np.array([r["counts"]["policy_flops"] + r["counts"]["verifier_flops"]
                           + per_pair * flops.record_attention_pairs(r) for r in records],
                          np.float64),
                 kind=first["kind"], verifier=first["verifier"],
                 beam_width=first.get("beam_width", 0), chains=first.get("chains", 0))


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


def paper_menu(family: str, settings: list[Setting], baseline: dict) -> list[Setting]:
  """The paper's compute-optimal candidates: search settings scored by the baseline's
  verifier (the PRM) -- best-of-N, beam (M = sqrt(N), M = 4), lookahead; every revision
  split. The others (ORM, DVTS, other verifiers) belong to the extended menu only."""
  if family != "search":
    return settings
  verifier = next(iter(baseline.values())).verifier
  return [s for s in settings if s.verifier == verifier and s.kind in PAPER_SEARCH_KINDS]


def setting_table(settings: list[Setting], results: dict, bins_by_kind: dict, weights
                  ) -> list[dict]:
  """Each setting's accuracy (with its interval) overall and per bin, for the per-method
  plots."""
  correct = np.stack([s.correct for s in settings], axis=1)  # [Q, S]
  overall = comparisons.cis(bootstrap.means(weights, correct))
  per_bin = {kind: {str(b): comparisons.cis(bootstrap.means(weights, correct, bins == b))
                    for b in np.unique(bins)} for kind, bins in bins_by_kind.items()}
  rows = []
  for i, s in enumerate(settings):
    first = results[s.method][s.n][0]
    row = {"method": s.method, "n": s.n, "generations": s.generations,
           **{k: first[k] for k in SETTING_FIELDS if k in first},
           "accuracy": round(float(s.correct.mean()), 4), "accuracy_ci": overall[i],
           "mean_flops": round(float(s.flops.mean()), 1)}
    for kind, bins in bins_by_kind.items():
      row[f"{kind}_bins"] = {str(b): round(float(s.correct[bins == b].mean()), 4)
                             for b in np.unique(bins)}
      row[f"{kind}_bins_ci"] = {b: cis[i] for b, cis in per_bin[kind].items()}
    rows.append(row)
  return rows


def family_entry(family: str, settings: list[Setting], baseline: dict, bins_by_kind: dict,
                 weights, costs: dict, cfg: SelectConfig) -> tuple[dict, dict]:
  """selection.json's entry for one family, and compute-optimal's per-question outcomes and
  FLOPs per bin kind (the flops stage bootstraps its matched comparison from them). costs:
  bin kind -> generations per question its difficulty estimate spent."""
  menu = paper_menu(family, settings, baseline)
  entry = {"budgets": sorted(baseline), "baseline": [baseline[n].name for n in sorted(baseline)],
           "menu": sorted(s.name for s in menu)}
  extended = len(menu) < len(settings)
  if extended:
    entry["extended"] = {"menu": sorted(s.name for s in settings)}
  per_question = {}
  # What the runs could spend: the costliest menu setting at the largest budget. A matched
  # budget below it is inside the runs even where compute-optimal chose to spend less.
  largest = max(s.generations for s in menu)
  ceiling = max((s for s in menu if s.generations <= largest), key=lambda s: s.flops.mean())
  for kind, bins in bins_by_kind.items():
    folds = two_folds(bins, cfg.seed)
    curves = lambda candidates: comparisons.family_curves(
        candidates, baseline, bins, folds, weights, costs[kind], cfg.charge_difficulty)
    entry[kind], correct, spent = curves(menu)
    per_question[kind] = {"correct": correct.astype(int).tolist(), "flops": spent.tolist(),
                          "ceiling_flops": ceiling.flops.tolist()}
    if extended:
      entry["extended"][kind] = curves(settings)[0]
    if family == "search":
      entry[kind]["beam_minus_best_of_n"] = comparisons.beam_minus_best_of_n(
          menu, baseline, folds, weights)
    else:
      entry[kind]["sequential_advantage"] = comparisons.sequential_advantage(
          settings, bins, folds, weights)
  return entry, per_question


def run(ctx) -> dict:
  cfg = config_schema.build(SelectConfig, ctx.config.select, "select")
  questions = read_difficulty(ctx.workdir)
  ids = [q["id"] for q in questions]
  bins_by_kind = {k: np.array([q[f"{k}_bin"] for q in questions]) for k in BIN_KINDS}
  weights = bootstrap.resample_weights(len(ids), cfg.resamples, cfg.seed)
  quality = bin_kind_quality(questions, weights)
  costs = {k: quality[k]["estimation_generations"] for k in BIN_KINDS}
  out = {"bins": cfg.bins, "rule": cfg.rule, "charge_difficulty": cfg.charge_difficulty,
         "difficulty_cost_generations": costs, "questions": len(ids),
         "bootstrap": {"resamples": cfg.resamples, "seed": cfg.seed,
                       "level": bootstrap.LEVEL, "unit": "question (paired)"},
         "bin_kinds": quality, "families": {}}
  tables, per_question, summary = {}, {"ids": ids}, {}
  for family, folder in FAMILIES.items():
    results = read_results(ctx.stage_dir(folder), ids)
    if not results:
      continue
    models = test_time_models(ctx, family)
    by_key = {(m, n): to_setting(m, n, rs, cfg.rule,
                                 os.path.join(ctx.stage_dir(folder), m, f"n{n}.jsonl"), models)
              for m, per in results.items() for n, rs in per.items()}
    baseline = baseline_of(family, results, by_key, cfg)
    if not baseline:
      raise ValueError(f"{ctx.stage_dir(folder)} has no baseline setting (all-parallel chains "
                       "with chains == N)")
    settings = list(by_key.values())
    out["families"][family], per_question[family] = family_entry(
        family, settings, baseline, bins_by_kind, weights, costs, cfg)
    tables[family] = setting_table(settings, results, bins_by_kind, weights)
    summary[family] = {k: out["families"][family][k]["efficiency_ratio"]["max"]
                       for k in BIN_KINDS}
  if "search" not in out["families"]:
    raise FileNotFoundError(f"no result files under {ctx.stage_dir('search')}; run the search "
                            "stage first")
  if ctx.is_main:
    directory = ctx.stage_dir("select")
    write_json_atomic(os.path.join(directory, "selection.json"), out)
    write_json_atomic(os.path.join(directory, "settings.json"), tables)
    write_json_atomic(os.path.join(directory, "per_question.json"), per_question)
  return {"efficiency_ratio_max": summary}
