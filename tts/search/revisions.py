"""Sequential and parallel revisions: chains of answers, each conditioned on the last few.

A budget of N generations is split into P parallel chains of L = N / P sequential answers,
for every P dividing N. Chain c of a question is the same in every split (its answers are
drawn with keys of (question, chain, step) only), so one run of the longest chains serves
every budget and split: a split reads chains 0..P-1 up to step L. `chain_lengths` plans how
far each chain must run. All live chains of all questions advance together, one answer per
step, through the jitted sampler in fixed-size batches.

Selection (docs/paper.md): a revision-aware ORM scores every answer with its history in context.
`weighted` is hierarchical: weighted best-of-N within each chain, then weighted best-of-N
across the chain winners (each carrying the score of its best answer); `majority` and
`argmax` run flat over all N answers.
"""
import dataclasses

import jax
import numpy as np

from tts.data.revisions import revision_prompt
from tts.search import answers, sampler
from tts.search.sampler import SamplingConfig
from tts.search.verifier import final_readings


def budget_splits(n: int) -> list[tuple[int, int]]:
  """(parallel chains P, chain length L) with P * L = n, for every P dividing n."""
  return [(p, n // p) for p in range(1, n + 1) if n % p == 0]


def chain_lengths(budgets, full_chains: int = 1) -> list[int]:
  """How many answers chain c must produce so that every split of every budget can be read
  off: the longest L among splits with P > c. The first `full_chains` chains run to the
  largest budget, so pass@1 per step is measured on the same chains at every step."""
  longest = max(budgets)
  lengths = [0] * longest
  for n in budgets:
    for p, length in budget_splits(n):
      for c in range(p):
        lengths[c] = max(lengths[c], length)
  for c in range(min(full_chains, longest)):
    lengths[c] = longest
  return lengths


@dataclasses.dataclass
class Answer:
  tokens: list[int]  # generated tokens, eos included when emitted
  prompt_length: int  # tokens of the revision prompt it was sampled from (re-prefilled)
  score: float = 0.0  # the revision ORM's reading after it, history in context


def chain_keys(question_keys, rows: np.ndarray):
  """Key of each (question, chain, step) row: fold_in(fold_in(fold_in(key_q, chain), step)).
  rows: int32[R, 3] of (question index, chain, step); question_keys: [Q] typed keys."""
  fold = jax.vmap(jax.random.fold_in)
  keys = question_keys[rows[:, 0]]
  return fold(fold(keys, rows[:, 1]), rows[:, 2])


def run_chains(model, vocab, prompts: list[list[int]], question_keys, lengths: list[int],
               sampling: SamplingConfig, window: int, batch_size: int,
               progress=None) -> list[list[list[Answer]]]:
  """answers[q][c][t]: step t of chain c of question q, for t < lengths[c].

  Every step re-prefills each live chain's prompt (the window of earlier answers moves, so
  no cache carries over). Rows are sorted by prompt length so a batch pads little.
  """
  chains = [[[] for _ in lengths] for _ in prompts]
  for step in range(max(lengths)):
    rows = [(q, c, step) for q in range(len(prompts)) for c, n in enumerate(lengths) if n > step]
    texts = {(q, c): revision_prompt(vocab, prompts[q], [a.tokens for a in chains[q][c]],
                                     window) for q, c, _ in rows}
    rows.sort(key=lambda r: (len(texts[r[:2]]), r))
    keys = chain_keys(question_keys, np.asarray(rows, np.int32))
    outs = sampler.sample_all(model.graphdef, model.params, [texts[r[:2]] for r in rows], keys,
                              sampling, (vocab.eos_id,), vocab.pad_id, batch_size, multiple=64,
                              sharding=model.sharding)
    for (q, c, _), tokens in zip(rows, outs):
      chains[q][c].append(Answer(tokens, len(texts[(q, c)])))
    if progress is not None:
      progress(step + 1, max(lengths))
  return chains


def score_chains(verifier_model, vocab, prompts, chains, window: int, batch_size: int):
  """Fills every answer's `score`: the revision ORM's reading after it, with the same
  history in context as the revision model had."""
  flat = [(q, c, t) for q, per_q in enumerate(chains) for c, chain in enumerate(per_q)
          for t in range(len(chain))]
  seqs = [revision_prompt(vocab, prompts[q], [a.tokens for a in chains[q][c][:t]], window)
          + chains[q][c][t].tokens for q, c, t in flat]
  scores = final_readings(verifier_model, seqs, vocab.eos_id, vocab.pad_id, batch_size)
  for (q, c, t), score in zip(flat, scores):
    chains[q][c][t].score = float(score)


def hierarchical_select(found: list[str | None], scores: list[float], chain_of: list[int],
                        same_answer) -> int | None:
  """Index of the chosen answer: weighted best-of-N within each chain picks a winner (the
  best-scoring answer of the chain's heaviest answer group), then weighted best-of-N across
  winners. None when no answer parses."""
  winners = []
  for chain in sorted(set(chain_of)):
    mine = [i for i, c in enumerate(chain_of) if c == chain]
    best = answers.select([found[i] for i in mine], [scores[i] for i in mine], "weighted",
                          same_answer)
    if best is not None:
      winners.append(mine[best])
  best = answers.select([found[i] for i in winners], [scores[i] for i in winners], "weighted",
                        same_answer)
  return None if best is None else winners[best]


def select_all(found, scores, chain_of, same_answer) -> dict[str, int | None]:
  """The chosen index under each rule: weighted (hierarchical), argmax and majority (flat)."""
  return {"weighted": hierarchical_select(found, scores, chain_of, same_answer),
          "argmax": answers.select(found, scores, "argmax", same_answer),
          "majority": answers.select(found, scores, "majority", same_answer)}
