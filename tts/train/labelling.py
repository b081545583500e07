"""Monte-Carlo step labels (Math-Shepherd style, as the paper trains its PRM).

For each sampled solution with a parsable answer, every step prefix but the last is
continued `rollouts` times by the same policy; the step's soft label is the fraction of
continuations whose answer is right: an estimate of the prefix's value under the policy.
The last step's label is the solution's own correctness (its continuation is itself).
Each batch prefills the whole solutions its prefixes come from, once, and every rollout
branches off that cache (sampler.prefill_branches): no rollout re-reads its prefix.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tts.model import LoadedModel
from tts.search import sampler
from tts.search.sampler import SamplingConfig


@dataclasses.dataclass
class Solution:
  question: int  # index into the questions being labelled
  number: int  # which of the question's samples
  tokens: list[int]  # generated tokens, eos included when it was emitted
  answer: str | None
  correct: bool
  step_ends: list[int]  # index in `tokens` of each step's last token (eos excluded)
  labels: list[float] = dataclasses.field(default_factory=list)
  rollouts_correct: list[int] = dataclasses.field(default_factory=list)


def step_ends(tokens: list[int], step_end_ids, eos_id: int) -> list[int]:
  """Index of each step's last token: every step-end token, plus the last token before eos
  when the text does not end with one. The eos itself belongs to no step."""
  body = tokens[:-1] if tokens and tokens[-1] == eos_id else tokens
  ends = [i for i, t in enumerate(body) if t in step_end_ids]
  if body and (not ends or ends[-1] != len(body) - 1):
    ends.append(len(body) - 1)
  return ends


@jax.jit
def rollout_keys(key, ids):
  """Key of each rollout from its (question, sample, step, rollout) ids: int32[R, 4]. A
  rollout draws the same tokens whatever batch or shard it lands in."""
  def one(row):
    k = key
    for i in range(4):
      k = jax.random.fold_in(k, row[i])
    return k
  return jax.vmap(one)(ids)


def label(task, policy: LoadedModel, examples: list[dict], solutions: list[Solution],
          rollouts: int, sampling: SamplingConfig, key, rows_per_batch: int,
          prompt_width: int, share_prefixes: bool = True,
          work: sampler.Work | None = None) -> int:
  """Fills `labels` and `rollouts_correct` of every solution in place; returns the number
  of tokens the rollouts generated. work: tallies the row-tokens their decoding computed.

  Batches hold rows_per_batch // rollouts step prefixes (padded: one decode shape),
  longest expected continuation first, so rollouts of similar lengths share a batch; its
  rollouts that still run go on in smaller batches (sampler.decode_to_end). Each solution
  is prefilled only up to its last rolled-out step. share_prefixes=False prefills every
  rollout's own prefix instead (what scripts/bench_label.py compares against).
  """
  capacity = prompt_width + sampling.max_new_tokens
  per_batch = max(1, rows_per_batch // rollouts)
  for s in solutions:
    s.rollouts_correct = [0] * (len(s.step_ends) - 1) + [rollouts * s.correct]
  prefixes = [(k, j) for k, s in enumerate(solutions) for j in range(len(s.step_ends) - 1)]
  remaining = lambda p: len(solutions[p[0]].tokens) - solutions[p[0]].step_ends[p[1]]
  prefixes.sort(key=lambda p: (-remaining(p), p))
  generated = 0
  for start in range(0, len(prefixes), per_batch):
    generated += _label_batch(task, policy, examples, solutions,
                              prefixes[start:start + per_batch], rollouts, sampling, key,
                              per_batch, capacity, share_prefixes, work)
  for s in solutions:
    s.labels = [c / rollouts for c in s.rollouts_correct[:-1]] + [float(s.correct)]
  return generated


def _label_batch(task, policy, examples, solutions, prefixes, rollouts, sampling, key,
                 per_batch, capacity, share_prefixes, work) -> int:
  """Rolls out `rollouts` continuations of each (solution, step) prefix; counts the right
  ones into the solutions' rollouts_correct."""
  vocab = task.vocab
  users = sorted({k for k, _ in prefixes})
  seq_of = {k: i for i, k in enumerate(users)}
  prompts = [examples[solutions[k].question]["prompt_ids"] for k in users]
  seqs = [p + solutions[k].tokens for p, k in zip(prompts, users)]
  seqs += [seqs[0]] * (per_batch - len(seqs))
  prompt_lengths = np.asarray([len(p) for p in prompts] + [len(prompts[0])] *
                              (per_batch - len(prompts)), np.int32)
  plan = [(k, j, r) for k, j in prefixes for r in range(rollouts)]
  fill = per_batch * rollouts - len(plan)
  plan_rows = [seq_of[k] for k, _, _ in plan]
  plan_cuts = [int(prompt_lengths[seq_of[k]]) + solutions[k].step_ends[j] + 1
               for k, j, _ in plan]
  rows = np.asarray(plan_rows + [0] * fill, np.int32)
  cuts = np.asarray(plan_cuts + [plan_cuts[0]] * fill, np.int32)
  if share_prefixes:
    needed = np.ones(len(seqs), np.int32)  # read up to the last cut: the last step has none
    np.maximum.at(needed, rows, cuts)
    tokens, lengths = sampler.pad_prompts([s[:n] for s, n in zip(seqs, needed)], vocab.pad_id,
                                          multiple=32)
    state = sampler.prefill_branches(policy.graphdef, policy.params, tokens, lengths, rows,
                                     cuts, prompt_lengths, capacity, policy.sharding)
  else:
    own = [seqs[i][:cut] for i, cut in zip(rows, cuts)]
    tokens, lengths = sampler.pad_prompts(own, vocab.pad_id, multiple=32)
    state = sampler.prefill(policy.graphdef, policy.params, tokens, lengths, capacity,
                            policy.sharding)
    state = state._replace(prompt_lengths=jnp.asarray(prompt_lengths[rows]))
  ids = np.asarray([(solutions[k].question, solutions[k].number, j, r) for k, j, r in plan]
                   + [(0, 0, 0, 0)] * fill, np.int32)
  live = np.arange(len(rows)) < len(plan)
  out = sampler.decode_to_end(policy.graphdef, policy.params, state, rollout_keys(key, ids),
                              live, sampling, (vocab.eos_id,), policy.sharding,
                              work=work)
  for i, (k, j, _) in enumerate(plan):
    s = solutions[k]
    text = vocab.decode(s.tokens[:s.step_ends[j] + 1] + out.tokens[i, :out.lengths[i]].tolist())
    s.rollouts_correct[j] += bool(task.is_correct(text, examples[s.question]))
  return int(out.lengths[:len(plan)].sum())


def sample_solutions(task, policy: LoadedModel, examples: list[dict], questions: list[int],
                     samples: int, sampling: SamplingConfig, key, batch_size: int,
                     progress=None) -> tuple[list[Solution], int, int]:
  """`samples` solutions per question (indices into examples). Returns the solutions with a
  parsable answer, how many were sampled, and the tokens generated. progress: called with
  the rows of each finished batch."""
  ids = np.asarray([(q, n) for q in questions for n in range(samples)], np.int32)
  keys = jax.vmap(lambda row: jax.random.fold_in(jax.random.fold_in(key, row[0]), row[1]))(ids)
  vocab = task.vocab
  outs = sampler.sample_all(policy.graphdef, policy.params,
                            [examples[q]["prompt_ids"] for q, _ in ids], keys, sampling,
                            (vocab.eos_id,), vocab.pad_id, batch_size, progress=progress,
                            sharding=policy.sharding)
  kept = []
  for (q, n), tokens in zip(ids.tolist(), outs):
    text = vocab.decode(tokens)
    answer = task.extract_answer(text)
    if answer is None:
      continue
    kept.append(Solution(q, n, tokens, answer, bool(task.is_correct(text, examples[q])),
                         step_ends(tokens, task.step_end_ids, vocab.eos_id)))
  return kept, len(outs), sum(map(len, outs))
