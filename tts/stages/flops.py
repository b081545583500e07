"""`flops` stage: the small policy plus compute-optimal test-time compute against the model
with about 14x its parameters decoding greedily, at matched total FLOPs, per difficulty bin
and per R = D_inference / D_pretrain.

For a bin whose questions the large model answers with T tokens on average (prompt + greedy
answer), the small model may spend X * 2 * N_small * T inference FLOPs per question, with
X = M + 3 (M - 1) / R (tts/scaling/flops.py). Its accuracy there is read off the bin's
compute-optimal curve (select stage, FLOPs counted from the result files: policy + verifier),
interpolated in log FLOPs between budgets run; when the matched budget exceeds the largest
run, the largest run's accuracy stands and the row says `beyond_largest_run`.
"""
import os

import numpy as np

from tts import config_schema
from tts.atomic_files import read_json, write_json_atomic
from tts.scaling import flops
from tts.scaling.config import FlopsConfig
from tts.stages.select import read_difficulty
from tts.train.checkpoints import load_model_config


def _read_selection(workdir: str) -> dict:
  path = os.path.join(workdir, "select", "selection.json")
  if not os.path.exists(path):
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


def matched_rows(curve: dict, bins: np.ndarray, questions: list[dict], budgets: list[int],
                 params: dict, ratios, charged: bool) -> dict:
  """R -> {multiplier, bins: {bin: comparison}} for one family's compute-optimal curves."""
  m = params["large"] / params["small"]
  out = {}
  for r in ratios:
    x = flops.matched_multiplier(m, r)
    per_bin = {}
    for b, entry in curve["by_bin"].items():
      members = [q for q, qb in zip(questions, bins) if str(qb) == b]
      tokens = float(np.mean([q["large_tokens"] for q in members]))
      extra = float(np.mean([q["estimation"]["flops"] for q in members])) if charged else 0.0
      spent = [f + extra for f in entry["compute_optimal_flops"]]
      target = x * flops.inference_flops(params["small"], tokens)
      small, where = flops.accuracy_at_flops(spent, entry["compute_optimal"], target)
      budget, _ = flops.accuracy_at_flops(spent, budgets, target)
      large = float(np.mean([q["large_greedy_correct"] for q in members]))
      rel = flops.relative_difference(small, large)
      per_bin[b] = {"target_flops": round(target, 1), "largest_run_flops": round(max(spent), 1),
                    "matched_generations": round(budget, 2), "where": where,
                    "small_accuracy": round(small, 4), "large_accuracy": round(large, 4),
                    "absolute_difference": round(small - large, 4),
                    "relative_difference": None if rel is None else round(rel, 4)}
    out[f"{r:g}"] = {"R": r, "multiplier": round(x, 3), "bins": per_bin}
  return out


def run(ctx) -> dict:
  cfg = config_schema.build(FlopsConfig, ctx.config.flops, "flops")
  selection = _read_selection(ctx.workdir)
  questions = read_difficulty(ctx.workdir)
  params = {n: load_model_config(os.path.join(ctx.workdir, "policy", n, "final")).num_params
            for n in ("small", "large")}
  d_pre = pretraining_tokens(ctx.config, cfg.pretraining_tokens)
  bins = np.array([q[f"{selection['bins']}_bin"] for q in questions])
  large_tokens = float(np.mean([q["large_tokens"] for q in questions]))
  out = {"params": {**params, "ratio": round(params["large"] / params["small"], 3)},
         "pretraining_tokens": d_pre,
         "same_pretraining_tokens": d_pre["small"] == d_pre["large"],
         "pretraining_flops": {n: flops.pretraining_flops(p, d_pre[n])
                               for n, p in params.items()},
         # This run's own R: the large model answering the search questions once.
         "run_R": len(questions) * large_tokens / d_pre["large"],
         "large_greedy": {"accuracy": float(np.mean([q["large_greedy_correct"]
                                                      for q in questions])),
                          "mean_tokens": large_tokens},
         "bins": selection["bins"], "charge_difficulty": selection["charge_difficulty"],
         "families": {}}
  for family, entry in selection["families"].items():
    out["families"][family] = matched_rows(entry[selection["bins"]], bins, questions,
                                           entry["budgets"], params, cfg.ratios,
                                           selection["charge_difficulty"])
  if ctx.is_main:
    write_json_atomic(os.path.join(ctx.stage_dir("flops"), "flops.json"), out)
  return {family: {r: {b: v["relative_difference"] for b, v in per["bins"].items()}
                   for r, per in rows.items()} for family, rows in out["families"].items()}
