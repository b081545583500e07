"""One tree search covers best-of-N, beam search, lookahead search and DVTS.

Each question owns `width` = N candidate rows, split into `groups` independent subtrees of
`keep * children` rows. A round advances every live row by one step (up to a newline, the
end of the solution, or the length cap) and scores it with the verifier. Rows that ended
join the question's pool of finished candidates. In each subtree the `keep` best unfinished
rows (by the verifier's reading, after `lookahead` greedy steps if asked) are kept and each
is continued by `children` rows: their caches are gathered, never recomputed. A question
stops when its pool holds N candidates, nothing is left unfinished, or after `max_rounds`
rounds (then its unfinished rows join the pool as they are). The pool's N best by last step
score are the final candidates.

  best-of-N   groups=N,   keep=1,   children=1   (rows never interact)
  beam (M)    groups=1,   keep=N/M, children=M
  lookahead k beam with lookahead=k
  DVTS (M)    groups=N/M, keep=1,   children=M   (one subtree: greedy by verifier)

Python drives only this per-round loop; decoding and scoring are the jitted functions of
sampler.py and verifier.py over all rows of a batch of questions at once.
"""
import dataclasses
import functools
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from tts.model import LoadedModel
from tts.search import sampler, verifier
from tts.search.sampler import SamplingConfig


@dataclasses.dataclass(frozen=True)
class TreeShape:
  groups: int
  keep: int
  children: int
  lookahead: int = 0
  max_rounds: int | None = 40  # None: rounds end only with the length cap

  @property
  def width(self) -> int:
    return self.groups * self.keep * self.children


@dataclasses.dataclass
class Candidate:
  tokens: list[int]  # generated tokens, the stop token included
  step_scores: list[float]  # the verifier's reading after each step
  finished: bool = False  # ended with eos (not cut by the length or round cap)
  slot: int = 0  # the row it ended in, within its question
  rounds: int = 0  # decode rounds its path took

  @property
  def score(self) -> float:
    return self.step_scores[-1] if self.step_scores else 0.0


@dataclasses.dataclass
class Counts:
  """Work done for one question (tokens of discarded branches and rollouts included)."""
  prompt_tokens: int = 0  # prefilled once for the policy and once for the verifier
  generated_tokens: int = 0
  verifier_tokens: int = 0  # tokens the verifier read, its prompt prefill included
  rounds: int = 0


@dataclasses.dataclass
class QuestionResult:
  candidates: list[Candidate]
  counts: Counts


class Advanced(NamedTuple):
  """One decode-and-score call, as host arrays."""
  tokens: np.ndarray  # int32[B, T]
  lengths: np.ndarray  # int32[B]
  capped: np.ndarray  # bool[B]
  probs: np.ndarray  # float32[B, T], the verifier's reading after each token


class Engine(Protocol):
  """Batched rows of candidates: the policy's and the verifier's state side by side."""
  eos_id: int

  def start(self, prompts: list[list[int]], width: int) -> tuple[object, np.ndarray]:
    """State with `width` rows per prompt, and the verifier's reading after each prompt."""

  def advance(self, state, keys, live: np.ndarray, greedy: bool) -> tuple[object, Advanced]:
    """Extends live rows by one step each and scores the new tokens."""

  def reorder(self, state, rows: np.ndarray):
    """Row i of the new state is row rows[i] of the old."""


@dataclasses.dataclass(frozen=True)
class Decoder:
  """The Engine of real runs: jitted, cached, batched over questions x candidates.

  Caches start with room for the prompts and one step and grow in blocks of `block` slots
  as candidates lengthen, up to prompt_width + sampling.max_new_tokens: attention reads
  every slot each token, so a cache sized for the longest solution from the start costs
  about twice as much. Each size compiles once; rounds and batches reuse it.
  """
  policy: LoadedModel
  verifier: LoadedModel
  sampling: SamplingConfig
  step_end_ids: tuple[int, ...]
  eos_id: int
  pad_id: int
  prompt_width: int
  max_step_tokens: int
  block: int = 32

  def _capacity(self, needed: int) -> int:
    full = self.prompt_width + self.sampling.max_new_tokens
    return min(full, -(-needed // self.block) * self.block)

  def start(self, prompts, width):
    tokens, lengths = sampler.pad_prompts(prompts, self.pad_id, width=self.prompt_width)
    capacity = self._capacity(self.prompt_width + self.max_step_tokens)
    state = sampler.prefill(self.policy.graphdef, self.policy.params, tokens, lengths, capacity)
    scored = verifier.score_prompts(self.verifier.graphdef, self.verifier.params, tokens,
                                    lengths, capacity)
    fan_out = np.repeat(np.arange(len(prompts)), width)
    rows = (sampler.reorder(state, fan_out), sampler.reorder(scored.cache, fan_out))
    return rows, np.asarray(scored.probs[:, 0])[fan_out]

  def advance(self, state, keys, live, greedy):
    policy_state, cache = state
    longest = int(np.max(np.where(live, np.asarray(cache.lengths), 0)))
    capacity = self._capacity(longest + self.max_step_tokens)
    if capacity > cache.max_len:
      policy_state, cache = sampler.grow(policy_state, capacity), sampler.grow(cache, capacity)
    sampling = dataclasses.replace(self.sampling, temperature=0.0) if greedy else self.sampling
    policy_state, step = sampler.decode(
        self.policy.graphdef, self.policy.params, policy_state, keys, jnp.asarray(live),
        sampling, tuple(self.step_end_ids) + (self.eos_id,), self.max_step_tokens)
    scored = verifier.score_tokens(self.verifier.graphdef, self.verifier.params, cache,
                                   step.tokens, step.lengths)
    host = jax.device_get((step.tokens, step.lengths, step.capped, scored.probs))
    return (policy_state, scored.cache), Advanced(*host)

  def reorder(self, state, rows):
    return tuple(sampler.reorder(part, rows) for part in state)


@functools.partial(jax.jit, static_argnames=("width",))
def round_keys(question_keys, round_index, width: int):
  """Key of slot s of question q in round r: fold_in(fold_in(key_q, r), s). Depends on
  the question's own key only, so a question draws the same tokens in any batch."""
  def per_question(key):
    key = jax.random.fold_in(key, round_index)
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(width))
  return jax.vmap(per_question)(question_keys).reshape(-1)


def search(engine: Engine, prompts: list[list[int]], question_keys, shape: TreeShape
           ) -> list[QuestionResult]:
  """Runs the tree search for a batch of questions; see the module docstring."""
  num_q, width = len(prompts), shape.width
  state, prompt_scores = engine.start(prompts, width)
  rows = [Candidate([], []) for _ in range(num_q * width)]
  last = prompt_scores.astype(np.float64)  # each row's latest reading, the prompt's at first
  live = np.ones(num_q * width, bool)
  pools: list[list[Candidate]] = [[] for _ in range(num_q)]
  counts = [Counts(prompt_tokens=len(p), verifier_tokens=len(p)) for p in prompts]
  round_index = 0
  while live.any():
    state, step = engine.advance(state, round_keys(question_keys, round_index, width), live,
                                 greedy=False)
    ended = np.zeros_like(live)
    for i in np.flatnonzero(live):
      n = int(step.lengths[i])
      row = rows[i]
      row.tokens = row.tokens + step.tokens[i, :n].tolist()
      last[i], scored = verifier.step_score(step.probs[i], step.tokens[i], n, engine.eos_id,
                                            last[i])
      if scored:
        row.step_scores = row.step_scores + [last[i]]
      row.finished = n > 0 and row.tokens[-1] == engine.eos_id
      row.slot, row.rounds = i % width, row.rounds + 1
      ended[i] = row.finished or bool(step.capped[i])
      c = counts[i // width]
      c.generated_tokens += n
      c.verifier_tokens += n
    for q in range(num_q):
      counts[q].rounds += bool(live[q * width:(q + 1) * width].any())
    rank = _lookahead_scores(engine, state, question_keys, round_index, width, shape,
                             live & ~ended, last, counts) if shape.lookahead else last
    round_index += 1
    out_of_rounds = shape.max_rounds is not None and round_index >= shape.max_rounds
    source, next_live = _select(shape, width, rows, live, ended, rank, pools, out_of_rounds)
    if not next_live.any():
      break
    state = engine.reorder(state, source)
    rows = [Candidate(rows[s].tokens, rows[s].step_scores, rounds=rows[s].rounds)
            for s in source]
    last = last[source]
    live = next_live
  return [QuestionResult(_best(pool, width), counts[q]) for q, pool in enumerate(pools)]


def _select(shape: TreeShape, width: int, rows, live, ended, rank, pools, out_of_rounds):
  """Moves ended rows into their question's pool and picks the rows of the next round:
  (source, next_live), where next-round row i continues row source[i]. A question is done
  (all its rows dead) once its pool holds `width`, nothing is open, or rounds ran out; its
  open rows then join the pool unfinished."""
  source = np.arange(len(rows))
  next_live = np.zeros_like(live)
  subtree = shape.keep * shape.children
  for q, pool in enumerate(pools):
    mine = range(q * width, (q + 1) * width)
    pool += [rows[i] for i in mine if live[i] and ended[i]]
    open_rows = [i for i in mine if live[i] and not ended[i]]
    if len(pool) >= width or not open_rows or out_of_rounds:
      pool += [rows[i] for i in open_rows]
      continue
    for start in range(q * width, (q + 1) * width, subtree):  # one subtree each
      group_open = [i for i in open_rows if start <= i < start + subtree]
      kept = sorted(group_open, key=lambda i: (-rank[i], i))[:shape.keep]
      for j, parent in enumerate(kept):
        slots = start + j * shape.children + np.arange(shape.children)
        source[slots] = parent
        next_live[slots] = True
  return source, next_live


def _best(pool: list[Candidate], width: int) -> list[Candidate]:
  """The `width` best-scoring candidates, in the order they finished."""
  if len(pool) <= width:
    return pool
  keep = set(sorted(range(len(pool)), key=lambda i: (-pool[i].score, i))[:width])
  return [c for i, c in enumerate(pool) if i in keep]


def _lookahead_scores(engine, state, question_keys, round_index, width, shape, rolling,
                      last, counts) -> np.ndarray:
  """Ranks rows by the verifier's reading after `shape.lookahead` more greedy steps (fewer
  if the solution ends first); the rollouts are counted as work, then dropped."""
  rank = last.copy()
  rolling = rolling.copy()
  for _ in range(shape.lookahead):
    if not rolling.any():
      break
    state, step = engine.advance(state, round_keys(question_keys, round_index, width),
                                 rolling, greedy=True)
    for i in np.flatnonzero(rolling):
      n = int(step.lengths[i])
      rank[i], _ = verifier.step_score(step.probs[i], step.tokens[i], n, engine.eos_id, rank[i])
      counts[i // width].generated_tokens += n
      counts[i // width].verifier_tokens += n
      rolling[i] = n > 0 and step.tokens[i, n - 1] != engine.eos_id and not step.capped[i]
  return rank
