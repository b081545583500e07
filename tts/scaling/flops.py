"""FLOPs accounting (Kaplan et al.): pretraining 6*N*D, inference 2*N*D plus attention, and
the inference budget that makes a small model plus test-time compute cost as much as a model
M times larger decoding once (docs/paper.md, FLOPs-matched comparison).

Parameters only -- large: 6*(M*N)*D_pre + 2*(M*N)*D_inf; small spending X times the
inference tokens: 6*N*D_pre + 2*N*(X*D_inf); equal when X = M + 3*(M - 1)/R, with
R = D_inf / D_pre. With attention, per question answered with T tokens by the large model at
F_L inference FLOPs: the small model may spend F_L + 6*(N_large - N_small)*T/R.

Attention (forward, with a KV cache): a token at position i of its sequence attends to i
keys; each (query, key) pair costs 4 * layers * heads * head_dim FLOPs (q.k and the
weighted sum of values, 2 FLOPs per multiply-add), whatever the number of KV heads.
"""
import math

import numpy as np


def pretraining_flops(params: int, tokens: float) -> float:
  return 6.0 * params * tokens


def inference_flops(params: int, tokens: float) -> float:
  return 2.0 * params * tokens


def attention_flops_per_pair(model) -> float:
  """FLOPs of one (query, key) pair over all layers: model is a ModelConfig."""
  return 4.0 * model.num_layers * model.num_heads * model.head_dim


def causal_pairs(context: float, tokens: float) -> float:
  """(query, key) pairs of `tokens` tokens decoded after `context` cached ones:
  sum over i = 1..tokens of (context + i)."""
  return tokens * context + tokens * (tokens + 1) / 2.0


def record_attention_pairs(record: dict) -> float:
  """(query, key) pairs the policy computed for one result record (the verifier reads the
  same tokens in the same contexts, so the same pairs).

  Revision records: each candidate is its own sequence, its `prompt_tokens` (question and
  earlier answers) then `num_tokens`: exact. Search records: the prompt is prefilled once
  and every generated token (`counts.generated_tokens`, pruned branches and lookahead
  rollouts included) sits after it; candidate paths of lengths l_c put the mean generated
  token at (L + 1) / 2 with L = sum l_c^2 / sum l_c. Exact for best-of-N (every row is a
  candidate); for tree searches it assumes discarded tokens sit at the depths of the kept
  ones (rows advance in step)."""
  candidates = record["candidates"]
  if candidates and "prompt_tokens" in candidates[0]:
    return sum(causal_pairs(0, c["prompt_tokens"] + c["num_tokens"]) for c in candidates)
  counts = record["counts"]
  prompt, generated = counts["prompt_tokens"], counts["generated_tokens"]
  lengths = np.array([c["num_tokens"] for c in candidates], np.float64)
  path = float((lengths ** 2).sum() / lengths.sum()) if lengths.sum() else 0.0
  return causal_pairs(0, prompt) + generated * prompt + generated * (path + 1) / 2.0


def greedy_flops(model, tokens: float) -> float:
  """Inference FLOPs of one sequence of `tokens` tokens (prompt + answer): params and
  attention."""
  return (inference_flops(model.num_params, tokens)
          + attention_flops_per_pair(model) * causal_pairs(0, tokens))


def matched_inference_flops(large_flops: float, large_tokens: float, small_params: int,
                            large_params: int, r: float) -> float:
  """Inference FLOPs per question the small model may spend for the same total FLOPs as the
  large model answering with `large_tokens` tokens at `large_flops`, when the large model's
  inference tokens are R times its pretraining tokens (pretraining 6 N D both)."""
  if r <= 0 or large_params < small_params:
    raise ValueError(f"FLOPs matching needs R > 0 and a larger model (got R={r}, "
                     f"N_small={small_params}, N_large={large_params})")
  return large_flops + 6.0 * (large_params - small_params) * large_tokens / r


def matched_multiplier(m: float, r: float) -> float:
  """X: how many times the large model's inference tokens the small model may spend (at its
  own size) for the same total FLOPs. m: parameter ratio; r: D_inference / D_pretrain."""
  if r <= 0 or m < 1:
    raise ValueError(f"FLOPs matching needs R > 0 and M >= 1 (got R={r}, M={m})")
  return m + 3.0 * (m - 1.0) / r


def interpolation(flops, target: float) -> tuple[int, int, float, str]:
  """Where `target` FLOPs falls on a curve with points at `flops`: (i, j, t, where), the
  curve's value there being (1 - t) * value[i] + t * value[j], linear in log FLOPs between
  the two points around it. where: `interpolated`; `beyond_largest_run` (the costliest
  point costs less than the target: its value, a lower bound if more compute does not
  hurt); `below_smallest_run` (even the cheapest point costs more: its value, an upper
  bound)."""
  order = sorted(range(len(flops)), key=lambda k: (flops[k], k))
  first, last = order[0], order[-1]
  if target >= flops[last]:
    return last, last, 0.0, "interpolated" if target == flops[last] else "beyond_largest_run"
  if target < flops[first]:
    return first, first, 0.0, "below_smallest_run"
  for i, j in zip(order, order[1:]):
    if flops[i] <= target < flops[j]:
      t = (math.log(target) - math.log(flops[i])) / (math.log(flops[j]) - math.log(flops[i]))
      return i, j, t, "interpolated"
  raise AssertionError("unreachable: target lies between the first and last points")


def accuracy_at_flops(flops, accuracies, target: float) -> tuple[float, str]:
  """The curve's accuracy at `target` FLOPs and where it lies (see `interpolation`)."""
  i, j, t, where = interpolation(flops, target)
  return float((1 - t) * accuracies[i] + t * accuracies[j]), where


def relative_difference(test_time: float, pretrained: float) -> float | None:
  """(small + test-time compute - larger model) / larger model; None when the larger
  model gets nothing right (the absolute difference is reported beside it)."""
  if pretrained == 0:
    return None
  return (test_time - pretrained) / pretrained
