"""A hand-made workdir for the select, flops and report stages: difficulty records and
search / revision result files whose best setting per bin and efficiency ratio are known.

40 questions, 5 oracle bins of 8 (bin b: questions 8(b-1) .. 8b-1). Search: best-of-N at
n is right on bins <= log2(n) + 1 (accuracy 0.2 .. 1.0 for n = 1 .. 16); beam4 at n = 4 is
right on bins 4 and 5 only, so compute-optimal at 4 generations takes best-of-n with n =
1, 2, 4 on bins 1, 2, 3 (cheapest perfect one) and beam4 on bins 4, 5: accuracy 1.0, which
best-of-N first reaches at 16: efficiency ratio 4. lookahead4_k3/n4 costs 16 generations
and is never right. Revisions: P = N chains behave as best-of-N; P = ideal[bin] chains
(N >= 4) are right: the same ratio 4, easy bins best all-sequential, hard ones P = 2.
Every setting spends FLOPS_PER_GENERATION per generation in parameters (policy 3/4,
verifier 1/4) and ATTENTION_PER_GENERATION in attention (each generation one candidate of
TOKENS tokens after an empty prompt): the FLOPs-matched budgets then fall between budgets
run at R = 22 and beyond them at R = 0.16 (unless best-of-N runs further: bon_budgets).
"""
import dataclasses
import math
import os

import ml_collections
import numpy as np

from tts.atomic_files import write_json_atomic, write_jsonl_atomic
from tts.model.config import ModelConfig

Q, BINS = 40, 5
IDEAL_CHAINS = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2}
LARGE_RIGHT_BINS = (1, 2, 3)  # the 14x model's greedy answer is right on these bins
SMALL = ModelConfig(vocab_size=20, num_layers=2, d_model=16, num_heads=2, num_kv_heads=1, d_ff=32)
LARGE = dataclasses.replace(SMALL, num_layers=4, d_model=48, d_ff=128)
ESTIMATION_GENERATIONS = 4
ESTIMATION_FLOPS = 6000.0  # parameters; attention adds ESTIMATION_ATTENTION (per question)
ESTIMATION_ATTENTION = 1000.0
PROMPT_ESTIMATION_FLOPS = 300.0  # one verifier prefill of the prompt: parameters + attention
FLOPS_PER_GENERATION = 2_000_000
TOKENS = 10
# By hand: 1 + 2 + ... + 10 = 55 (query, key) pairs per candidate, 4 x 2 layers x 2 heads x
# head_dim 8 = 128 FLOPs a pair, for the policy and for the verifier (same shape).
ATTENTION_PER_GENERATION = 2 * 128 * 55


def bin_of(i: int) -> int:
  return i // (Q // BINS) + 1


def _record(i, method, kind, n, generations, correct, verifier="prm", **extra):
  candidate = {"num_tokens": TOKENS, **({"prompt_tokens": 0} if kind == "revision" else {})}
  return {"id": f"test-{i:05d}", "difficulty": bin_of(i), "method": method, "kind": kind, "n": n,
          "verifier": verifier, "candidates": [candidate] * generations,
          "selected": {rule: {"answer": "1", "correct": bool(correct)}
                       for rule in ("argmax", "weighted", "majority")},
          "counts": {"generations": generations, "prompt_tokens": 0,
                     "generated_tokens": TOKENS * generations,
                     "policy_flops": FLOPS_PER_GENERATION * generations * 3 // 4,
                     "verifier_flops": FLOPS_PER_GENERATION * generations // 4}, **extra}


def _write(directory, method, n, records):
  write_jsonl_atomic(os.path.join(directory, method, f"n{n}.jsonl"), records)


def write_run(workdir: str, revisions: bool = True, ids_offset: int = 0,
              bon_budgets=(1, 2, 4, 8, 16), bon_bins=lambda n: math.log2(n) + 1) -> None:
  """bon_budgets / bon_bins: best-of-N's budgets (other methods stop at 16) and the bins it
  is right on at n (bins <= bon_bins(n))."""
  rng = np.random.default_rng(0)
  predicted = [min(BINS, max(1, bin_of(i) + int(rng.integers(-1, 2)))) for i in range(Q)]
  prompt = [min(BINS, max(1, bin_of(i) + int(rng.integers(-2, 3)))) for i in range(Q)]
  write_jsonl_atomic(os.path.join(workdir, "difficulty", "questions.jsonl"), [
      {"id": f"test-{i:05d}", "difficulty": bin_of(i), "pass1": 1 - bin_of(i) / 10,
       "predicted_score": 1 - predicted[i] / 10, "prompt_score": 1 - prompt[i] / 10,
       "oracle_bin": bin_of(i), "predicted_bin": predicted[i], "prompt_bin": prompt[i],
       "large_greedy_correct": bin_of(i) in LARGE_RIGHT_BINS, "large_tokens": 20 + bin_of(i),
       "large_flops": 2 * LARGE.num_params * (20 + bin_of(i)),
       "estimation": {"generations": ESTIMATION_GENERATIONS, "policy_tokens": 0,
                      "verifier_tokens": 0, "flops": ESTIMATION_FLOPS,
                      "attention_flops": ESTIMATION_ATTENTION},
       "prompt_estimation": {"generations": 0, "policy_tokens": 0, "verifier_tokens": 0,
                             "flops": PROMPT_ESTIMATION_FLOPS - 100.0,
                             "attention_flops": 100.0}} for i in range(Q)])
  search = os.path.join(workdir, "search")
  ids = range(ids_offset, ids_offset + Q)
  for n in bon_budgets:
    _write(search, "best_of_n", n, [_record(i, "best_of_n", "best_of_n", n, n,
                                            bin_of(i) <= bon_bins(n)) for i in ids])
  for n in (4, 8, 16):
    _write(search, "beam4", n, [_record(i, "beam4", "beam", n, n, bin_of(i) >= 4,
                                        beam_width=4, lookahead=0) for i in ids])
  _write(search, "lookahead4_k3", 4, [_record(i, "lookahead4_k3", "lookahead", 4, 16, False,
                                              beam_width=4, lookahead=3) for i in ids])
  if revisions:
    folder = os.path.join(workdir, "revision_search")
    for n in (1, 2, 4, 8, 16):
      for p in (p for p in (1, 2, 4, 8, 16) if n % p == 0):
        right = lambda i: ((p == n and bin_of(i) <= math.log2(n) + 1)
                           or (n >= 4 and p == IDEAL_CHAINS[bin_of(i)]))
        _write(folder, f"chains{p}", n, [_record(i, f"chains{p}", "revision", n, n, right(i),
                                                 verifier="revision_orm", chains=p,
                                                 chain_length=n // p) for i in range(Q)])
  scorer = dataclasses.replace(SMALL, value_head=True)
  for path, model in (("policy/small", SMALL), ("policy/large", LARGE), ("prm", scorer),
                      ("revision", SMALL), ("revision_orm", scorer)):
    write_json_atomic(os.path.join(workdir, path, "final", "model.json"),
                      dataclasses.asdict(model))


def config(**select) -> ml_collections.ConfigDict:
  from tts.scaling.config import FlopsConfig, ReportConfig, SelectConfig
  from tts.config_schema import all_fields
  train = dict(steps=10, batch_size=4)
  return ml_collections.ConfigDict({
      "data": {"max_len": 32}, "policy": {"small": train, "large": train},
      "search": {"verifiers": {"prm": {"path": "prm/final", "kind": "prm"}}},
      "select": all_fields(SelectConfig, **select), "flops": all_fields(FlopsConfig),
      "report": all_fields(ReportConfig, dpi=40)})
