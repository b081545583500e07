"""Monte-Carlo step labels (Math-Shepherd style, as the paper trains its PRM).

For each sampled solution with a parsable answer, every step prefix but the last is
continued `rollouts` times by the same policy; the step's soft label is the fraction of
continuations whose answer is right: an estimate of the prefix's value under the policy.
The last step's label is the solution's own correctness (its continuation is itself).
All prefixes of a solution branch off one prefill of the whole solution
(sampler.prefill_branches), so no rollout re-reads its prefix.
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


def branch_rows(solutions: list[Solution], rollouts: int) -> list[tuple[int, int]]:
  """(solution index, step index) of every rollout row: each step but the last, x rollouts."""
  return [(k, j) for k, s in enumerate(solutions) for j in range(len(s.step_ends) - 1)
          for _ in range(rollouts)]


def label(task, policy: LoadedModel, examples: list[dict], solutions: list[Solution],
          rollouts: int, sampling: SamplingConfig, key, rows_per_batch: int,
          prompt_width: int) -> int:
  """Fills `labels` and `rollouts_correct` of every solution in place; returns the number
  of tokens the rollouts generated. Solutions go in batches of at most rows_per_batch rows
  (each batch padded to that size: one compile)."""
  capacity = prompt_width + sampling.max_new_tokens
  max_seqs = max(1, rows_per_batch // rollouts)
  for s in solutions:
    s.labels = [0.0] * (len(s.step_ends) - 1) + [float(s.correct)]
    s.rollouts_correct = [0] * (len(s.step_ends) - 1) + [rollouts * s.correct]
  pending = [k for k, s in enumerate(solutions) if len(s.step_ends) > 1]
  generated = 0
  while pending:
    chunk, rows = [], 0
    while pending and len(chunk) < max_seqs and (
        not chunk or rows + (len(solutions[pending[0]].step_ends) - 1) * rollouts
        <= rows_per_batch):
      rows += (len(solutions[pending[0]].step_ends) - 1) * rollouts
      chunk.append(pending.pop(0))
    generated += _label_chunk(task, policy, examples, [solutions[k] for k in chunk], rollouts,
                              sampling, key, max(rows, rows_per_batch), max_seqs, capacity,
                              prompt_width)
  return generated


def _label_chunk(task, policy, examples, chunk, rollouts, sampling, key, num_rows, num_seqs,
                 capacity, prompt_width) -> int:
  vocab = task.vocab
  prompts = [examples[s.question]["prompt_ids"] for s in chunk]
  seqs = [p + s.tokens for p, s in zip(prompts, chunk)]
  seqs += [seqs[0]] * (num_seqs - len(seqs))
  tokens, lengths = sampler.pad_prompts(seqs, vocab.pad_id, width=capacity)
  plan = branch_rows(chunk, rollouts)
  cuts = [len(prompts[k]) + chunk[k].step_ends[j] + 1 for k, j in plan]
  fill = num_rows - len(plan)
  rows = np.asarray([k for k, _ in plan] + [0] * fill, np.int32)
  cuts = np.asarray(cuts + [cuts[0]] * fill, np.int32)
  prompt_lengths = np.asarray([len(p) for p in prompts] + [1] * (num_seqs - len(prompts)),
                              np.int32)
  state = sampler.prefill_branches(policy.graphdef, policy.params, tokens, lengths, rows,
                                   cuts, prompt_lengths, capacity)
  ids = np.asarray([(chunk[k].question, chunk[k].number, j, i % rollouts)
                    for i, (k, j) in enumerate(plan)] + [(0, 0, 0, 0)] * fill, np.int32)
  keys = rollout_keys(key, ids)
  live = np.arange(num_rows) < len(plan)
  _, out = sampler.decode(policy.graphdef, policy.params, state, keys, jnp.asarray(live),
                          sampling, (vocab.eos_id,), sampling.max_new_tokens)
  out_tokens, out_lengths = jax.device_get((out.tokens, out.lengths))
  for i, (k, j) in enumerate(plan):
    s = chunk[k]
    text = vocab.decode(s.tokens[:s.step_ends[j] + 1] + out_tokens[i, :out_lengths[i]].tolist())
    s.rollouts_correct[j] += bool(task.is_correct(text, examples[s.question]))
  for s in chunk:
    for j in range(len(s.step_ends) - 1):
      s.labels[j] = s.rollouts_correct[j] / rollouts
  return int(out_lengths[:len(plan)].sum())


def sample_solutions(task, policy: LoadedModel, examples: list[dict], questions: list[int],
                     samples: int, sampling: SamplingConfig, key, batch_size: int
                     ) -> tuple[list[Solution], int, int]:
  """`samples` solutions per question (indices into examples). Returns the solutions with a
  parsable answer, how many were sampled, and the tokens generated."""
  ids = np.asarray([(q, n) for q in questions for n in range(samples)], np.int32)
  keys = jax.vmap(lambda row: jax.random.fold_in(jax.random.fold_in(key, row[0]), row[1]))(ids)
  vocab = task.vocab
  outs = sampler.sample_all(policy.graphdef, policy.params,
                            [examples[q]["prompt_ids"] for q, _ in ids], keys, sampling,
                            (vocab.eos_id,), vocab.pad_id, batch_size)
  kept = []
  for (q, n), tokens in zip(ids.tolist(), outs):
    text = vocab.decode(tokens)
    answer = task.extract_answer(text)
    if answer is None:
      continue
    kept.append(Solution(q, n, tokens, answer, bool(task.is_correct(text, examples[q])),
                         step_ends(tokens, vocab.step_end_ids, vocab.eos_id)))
  return kept, len(outs), sum(map(len, outs))
