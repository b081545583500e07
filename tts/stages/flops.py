"""`flops` stage: the small policy plus compute-optimal test-time compute against the model
with about 14x its parameters decoding greedily, at matched total FLOPs, per difficulty bin
and per R = D_inference / D_pretrain.

For a bin whose questions the large model answers with T tokens and F_L inference FLOPs
(parameters and attention) on average, the small model may spend F_L + 6 (N_large -
N_small) T / R inference FLOPs per question (tts/scaling/flops.py). Its accuracy there is
read off the bin's compute-optimal curve (select stage: per-question outcomes and FLOPs,
policy + verifier, attention included), interpolated in log FLOPs between budgets run; when
the matched budget exceeds the largest run, the largest run's accuracy stands and the cell
says `beyond_largest_run`. Intervals: the select stage's paired bootstrap (same resamples).
With select.charge_difficulty each question's curve also carries its bins' difficulty
estimate (K samples for oracle and predicted bins, one verifier prefill of the prompt for
prompt bins; parameters and attention).
"""
import os

import numpy as np

from tts import config_schema
from tts.atomic_files import exists, read_json, write_json_atomic
from tts.scaling import bootstrap, comparisons, flops
from tts.scaling.config import BIN_KINDS, FlopsConfig
from tts.stages.select import estimation_flops, read_difficulty
from tts.train.checkpoints import load_model_config


def _read(workdir: str, name: str) -> dict:
  path = os.path.join(workdir, "select", name)
  if not exists(path):
    raise FileNotFoundError(f"{path} not found; run the select stage first")
  return read_json(path)


def pretraining_tokens(cfg, imported: int) -> dict[str, int]:
  """D_pretrain per model: steps x rows x row length (packed rows are full), or `imported`
  (flops.pretraining_tokens) for a model the policy stage imported. The matching formula
  assumes both saw the same tokens (the demo trains them so); `same_pretraining_tokens` in
  flops.json says whether they did."""
  out = {}
  for name in ("small", "large"):
    section = cfg.policy[name]
    if "steps" in section:
      out[name] = section.steps * section.batch_size * cfg.data.max_len
    elif imported:
      out[name] = imported
    else:
      raise ValueError(f"policy.{name} is imported, so its pretraining tokens are unknown: "
                       "give them as --config.flops.pretraining_tokens=N")
  return out


def matched_cell(correct, spent, ceiling, budgets, large, mask, weights, small_params: int,
                 large_params: int, r: float) -> tuple[dict, np.ndarray]:
  """Small model + compute-optimal against the large model greedy on the questions in
  `mask`, at the small model's matched inference FLOPs for R. correct float[Q, K] and
  spent float[Q, K]: compute-optimal's outcomes and FLOPs per question and budget; large:
  per-question arrays correct, tokens, flops. The curve's accuracy at the target is linear in
  log FLOPs between the budgets around it, so per question too: the interval resamples
  those interpolated outcomes with the curve's FLOPs held at their means. ceiling float[Q]:
  FLOPs of the costliest setting run at the largest budget; a target past the curve's last
  point but within it is `at_largest_budget` (the runs reached it; compute-optimal chose to
  spend less), not a lower bound. Returns the cell and the difference's resamples."""
  points = spent[mask].mean(axis=0)
  target = flops.matched_inference_flops(float(large["flops"][mask].mean()),
                                         float(large["tokens"][mask].mean()), small_params,
                                         large_params, r)
  i, j, t, where = flops.interpolation(list(points), target)
  if where == "beyond_largest_run" and target <= ceiling[mask].mean():
    where = "at_largest_budget"
  small_q = (1 - t) * correct[:, i] + t * correct[:, j]
  small_s = bootstrap.means(weights, small_q, mask)
  large_s = bootstrap.means(weights, large["correct"], mask)
  small, big = float(small_q[mask].mean()), float(large["correct"][mask].mean())
  with np.errstate(invalid="ignore", divide="ignore"):
    relative_s = (small_s - large_s) / np.where(large_s > 0, large_s, np.nan)
  rel = flops.relative_difference(small, big)
  cell = {"questions": int(mask.sum()), "target_flops": round(target, 1),
          "flops_ratio": round(target / float(large["flops"][mask].mean()), 3),
          "largest_run_flops": round(float(ceiling[mask].mean()), 1),
          "matched_generations": round((1 - t) * budgets[i] + t * budgets[j], 2),
          "where": where,
          "small_accuracy": bootstrap.estimate(small, small_s),
          "large_accuracy": bootstrap.estimate(big, large_s),
          "absolute_difference": bootstrap.estimate(small - big, small_s - large_s),
          "relative_difference": None if rel is None else bootstrap.estimate(rel, relative_s)}
  return cell, small_s - large_s


def family_matched(per_question: dict, bins: np.ndarray, budgets: list[int], large: dict,
                   extra_flops: np.ndarray, weights, params: dict, ratios) -> dict:
  """One family's compute-optimal outcomes under one bin kind: `curves` and `large` (the
  14x model greedy) for every question (`all`) and per bin, with intervals, and `matched`:
  R -> {R, multiplier, all, bins {bin: cell}, easier (the easiest three fifths of the bins,
  the paper's easy and medium levels: the mean of their differences)}."""
  correct = np.asarray(per_question["correct"], np.float64)
  spent = np.asarray(per_question["flops"], np.float64) + extra_flops[:, None]
  ceiling = np.asarray(per_question["ceiling_flops"], np.float64) + extra_flops
  names = [str(b) for b in np.unique(bins)]
  groups = {"all": np.ones(len(bins), bool), **{b: bins == int(b) for b in names}}
  out = {"curves": {}, "large": {}, "matched": {}}
  for g, mask in groups.items():
    out["curves"][g] = {"flops": [round(float(f), 1) for f in spent[mask].mean(axis=0)],
                        "accuracy": [round(float(a), 4) for a in correct[mask].mean(axis=0)],
                        "accuracy_ci": comparisons.cis(bootstrap.means(weights, correct, mask))}
    right = large["correct"]
    out["large"][g] = {"flops": round(float(large["flops"][mask].mean()), 1),
                       "accuracy": bootstrap.estimate(right[mask].mean(),
                                                      bootstrap.means(weights, right, mask))}
  easier = names[:max(1, (3 * len(names)) // 5)]
  for r in ratios:
    cell = lambda mask: matched_cell(correct, spent, ceiling, budgets, large, mask, weights,
                                     params["small"], params["large"], r)
    row = {"R": r, "multiplier": round(flops.matched_multiplier(
        params["large"] / params["small"], r), 3), "all": cell(groups["all"])[0], "bins": {}}
    samples = {}
    for b in names:
      row["bins"][b], samples[b] = cell(groups[b])
    point = float(np.mean([row["bins"][b]["absolute_difference"]["value"] for b in easier]))
    row["easier"] = {"bins": easier, "absolute_difference": bootstrap.estimate(
        point, np.mean([samples[b] for b in easier], axis=0)),
        "beyond_largest_run": [b for b in easier
                               if row["bins"][b]["where"] == "beyond_largest_run"]}
    out["matched"][f"{r:g}"] = row
  return out


def run(ctx) -> dict:
  cfg = config_schema.build(FlopsConfig, ctx.config.flops, "flops")
  selection = _read(ctx.workdir, "selection.json")
  per_question = _read(ctx.workdir, "per_question.json")
  questions = read_difficulty(ctx.workdir)
  models = {n: load_model_config(os.path.join(ctx.workdir, "policy", n, "final"))
            for n in ("small", "large")}
  params = {n: m.num_params for n, m in models.items()}
  d_pre = pretraining_tokens(ctx.config, cfg.pretraining_tokens)
  tokens = np.array([q["large_tokens"] for q in questions], np.float64)
  large = {"correct": np.array([q["large_greedy_correct"] for q in questions], np.float64),
           "tokens": tokens,
           "flops": np.array([flops.greedy_flops(models["large"], t) for t in tokens])}
  boot = selection["bootstrap"]
  weights = bootstrap.resample_weights(len(questions), boot["resamples"], boot["seed"])
  # Per bin kind, each question's difficulty estimate (parameters and attention), charged
  # with select.charge_difficulty.
  charge = selection["charge_difficulty"]
  extra = {k: np.array([estimation_flops(q, k) if charge else 0.0 for q in questions])
           for k in BIN_KINDS}
  out = {"params": {**params, "ratio": round(params["large"] / params["small"], 3)},
         "attention_flops_per_pair": {n: flops.attention_flops_per_pair(m)
                                      for n, m in models.items()},
         "pretraining_tokens": d_pre,
         "same_pretraining_tokens": d_pre["small"] == d_pre["large"],
         "pretraining_flops": {n: flops.pretraining_flops(p, d_pre[n])
                               for n, p in params.items()},
         # This run's own R: the large model answering the search questions once.
         "run_R": len(questions) * float(tokens.mean()) / d_pre["large"],
         "large_greedy": {"accuracy": bootstrap.estimate(
             large["correct"].mean(), bootstrap.means(weights, large["correct"])),
             "mean_tokens": float(tokens.mean()), "mean_flops": float(large["flops"].mean())},
         "bins": selection["bins"], "charge_difficulty": selection["charge_difficulty"],
         "families": {}}
  for family, entry in selection["families"].items():
    out["families"][family] = {
        kind: family_matched(per_question[family][kind],
                           np.array([q[f"{kind}_bin"] for q in questions]), entry["budgets"],
                           large, extra[kind], weights, params, cfg.ratios)
        for kind in BIN_KINDS}
  if ctx.is_main:
    write_json_atomic(os.path.join(ctx.stage_dir("flops"), "flops.json"), out)
  head = selection["bins"]
  return {family: {r: {b: v["absolute_difference"]["value"] for b, v in per["bins"].items()}
                   for r, per in kinds[head]["matched"].items()}
          for family, kinds in out["families"].items()}
