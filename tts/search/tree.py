"""One tree search covers best-of-N, beam search, lookahead search and DVTS.

Each question owns `width` = N candidate rows, split into `groups` independent subtrees of
`keep * children` rows. A round advances every live row by one whole step (to a step-end
token, the end of the solution, or the length cap; a step longer than the decoder's
`max_step_tokens` goes on in further decode calls, unread until it ends) and the verifier
reads it at the step's end, the only place a PRM is trained to read. Rows that ended join
their subtree's pool. In each subtree the `keep` best open rows, ranked by their aggregated
step scores (the last one taken after `lookahead` greedy steps if asked), are kept and fan
out to refill the subtree's rows, the best getting the spare ones when fewer than `keep` are
open: their caches are gathered, never recomputed. A subtree stops when its pool holds its
size, nothing in it is open, or after `max_rounds` rounds. Its final candidates are its
pool's best finished solutions; unfinished ones (cut by the length or round cap) fill in
only when too few finished.

  best-of-N   groups=N,   keep=1,   children=1   (rows never interact)
  beam (M)    groups=1,   keep=N/M, children=M
  lookahead k beam with lookahead=k
  DVTS (M)    groups=N/M, keep=1,   children=M   (each subtree greedy by verifier, and
                                                  delivers its own M candidates)

Python drives only this per-round loop; decoding and scoring are the jitted functions of
sampler.py and verifier.py over the live rows of a batch of questions at once.
"""
import dataclasses
import functools
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from tts.model import LoadedModel
from tts.search import sampler, verifier
from tts.search.sampler import SamplingConfig, Work


@dataclasses.dataclass(frozen=True)
class TreeShape:
  groups: int
  keep: int
  children: int
  lookahead: int = 0
  max_rounds: int | None = 40  # None: rounds end only with the length cap

  @property
  def subtree(self) -> int:
    """Rows (and final candidates) of one subtree."""
    return self.keep * self.children

  @property
  def width(self) -> int:
    return self.groups * self.subtree


@dataclasses.dataclass
class Candidate:
  tokens: list[int]  # generated tokens, the stop token included
  step_scores: list[float]  # the verifier's reading after each step
  finished: bool = False  # ended with eos (not cut by the length or round cap)
  slot: int = 0  # the row it ended in, within its question
  rounds: int = 0  # decode rounds its path took


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
  prompt_score: float = 0.0  # the verifier's reading after the prompt, before any sample


class Advanced(NamedTuple):
  """One decode-and-score call, as host arrays."""
  tokens: np.ndarray  # int32[B, T]
  lengths: np.ndarray  # int32[B]
  stopped: np.ndarray  # bool[B], ended on a step-end token or eos
  capped: np.ndarray  # bool[B], holds max_new_tokens: cannot go on
  # float32[B]: the verifier's reading after the call's last token that is not an eos
  # (verifier.reading_positions; meaningless for a row that made no such token)
  readings: np.ndarray


class Engine(Protocol):
  """Batched rows of candidates: the policy's and the verifier's state side by side."""
  eos_id: int

  def start(self, prompts: list[list[int]], width: int) -> tuple[object, np.ndarray]:
    """State with `width` rows per prompt, and the verifier's reading after each prompt."""

  def advance(self, state, keys, live: np.ndarray, greedy: bool) -> tuple[object, Advanced]:
    """Extends live rows by one step each (or its next max_step_tokens) and reads the new
    tokens with the verifier."""

  def reorder(self, state, rows: np.ndarray):
    """Row i of the new state is row rows[i] of the old."""

  def fork(self, state):
    """A copy of `state` for a rollout: advance and reorder consume the state they are
    given (its buffers are reused), and a lookahead still needs the original after."""


# The live rows are taken out into a batch of their own only when they are at most this
# share of the rows; while it decodes, both batches' caches are resident (`tts plan`).
LIVE_BATCH_MAX = 0.75


class DecoderRows(NamedTuple):
  """The Decoder's state: the policy's and the verifier's rows, and a beam selection not
  yet carried out (row i is row source[i] of the two; None: row i)."""
  policy: sampler.DecodeState
  reader: object  # the verifier's KVCache, or a likelihood verifier's row state
  source: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Decoder:
  """The Engine of real runs: jitted, cached, batched over questions x candidates.

  Caches start with room for the prompts and one step and grow in blocks of `block` slots
  as candidates lengthen, up to prompt_width + sampling.max_new_tokens: attention reads
  every slot each token, so a cache sized for the longest solution from the start costs
  about twice as much. Each size compiles once; rounds and batches reuse it.

  Only live rows are decoded. When they are at most LIVE_BATCH_MAX of the rows (finished subtrees,
  padding questions, steps that go on), they are taken into a batch of about their number
  (a power of two or 1.5 times one: few sizes to compile) and written back after. A
  decode call returns once fewer than `exit_below` of its rows still run; the rows whose
  step goes on continue in the next, smaller batch. `work` tallies how many of the
  decoded row-tokens were live.

  A beam selection (`reorder`) copies no cache row itself: the next `advance` takes each
  live row from the row it continues when it takes the live rows out anyway, and moves
  rows in place only when every row decodes (or a moved row is not live).
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
  # How a likelihood verifier reads (verifier.LIKELIHOOD_READINGS); "": a value head.
  likelihood: str = ""
  exit_below: float = 0.5
  work: Work = dataclasses.field(default_factory=Work, compare=False)

  def capacity(self, needed: int) -> int:
    """Cache slots for rows of up to `needed` tokens: whole blocks, at most the longest
    solution."""
    full = self.prompt_width + self.sampling.max_new_tokens
    return min(full, -(-needed // self.block) * self.block)

  def start(self, prompts, width):
    tokens, lengths = sampler.pad_prompts(prompts, self.pad_id, width=self.prompt_width)
    capacity = self.capacity(self.prompt_width + self.max_step_tokens)
    pol, ver = self.policy, self.verifier
    state = sampler.prefill(pol.graphdef, pol.params, tokens, lengths, capacity, pol.sharding)
    scored = verifier.score_prompts(ver.graphdef, ver.params, tokens, lengths, capacity,
                                    ver.sharding, self.likelihood)
    fan_out = np.repeat(np.arange(len(prompts)), width)
    rows = self._take(DecoderRows(state, scored.state), fan_out)
    return rows, np.asarray(scored.probs[:, 0])[fan_out]

  def advance(self, state, keys, live, greedy):
    pol, ver = self.policy, self.verifier
    n = len(live)
    source = np.arange(n) if state.source is None else state.source
    cache = state.policy.cache  # the verifier's rows hold the same tokens
    longest = int(np.max(np.where(live, np.asarray(cache.lengths)[source], 0)))
    capacity = self.capacity(longest + self.max_step_tokens)
    if capacity > cache.max_len:
      state = state._replace(policy=sampler.grow(state.policy, capacity, pol.sharding),
                             reader=sampler.grow(state.reader, capacity, ver.sharding))
    rows = np.flatnonzero(live)
    size = self._batch_size(len(rows), n)
    if size == n or np.any((source != np.arange(n)) & ~live):
      state, source = self._settled(state), np.arange(n)
    if size == n:
      return self._decode(state, keys, jnp.asarray(live), greedy)
    index = np.full(size, n, np.int32)  # past the last row: padding
    index[:len(rows)] = rows
    taken = np.minimum(index, n - 1)  # the padding decodes nothing
    part = self._take(state, source[taken])
    part, step = self._decode(part, sampler.take_rows(keys, taken),
                              jnp.asarray(index < n), greedy)
    # Every row a selection moved is live, so writing the live rows back carries it out.
    state = DecoderRows(sampler.put_rows(state.policy, part.policy, index, pol.sharding),
                        sampler.put_rows(state.reader, part.reader, index, ver.sharding))
    whole = Advanced(*(np.zeros((n,) + x.shape[1:], x.dtype) for x in step))
    for full, piece in zip(whole, step):
      full[rows] = piece[:len(rows)]
    return state, whole

  def _batch_size(self, live: int, rows: int) -> int:
    """Rows to decode `live` live rows of `rows` in: all of them when most are live, else
    the next power of two or 1.5 times one (a multiple of the row shards)."""
    if live > LIVE_BATCH_MAX * rows:
      return rows
    shards = self.policy.sharding.row_shards if self.policy.sharding else 1
    power = sampler.power_of_two_at_least(max(live, 2))
    size = 3 * power // 4 if 3 * power // 4 >= live else power
    return min(rows, -(-size // shards) * shards)

  def _decode(self, state, keys, live, greedy):
    """One decode call over the rows of `state` (no selection pending), the new tokens read
    by the verifier."""
    policy_state, reader, _ = state
    pol, ver = self.policy, self.verifier
    sampling = dataclasses.replace(self.sampling, temperature=0.0) if greedy else self.sampling
    policy_state, step = sampler.decode(
        pol.graphdef, pol.params, policy_state, keys, live, sampling,
        tuple(self.step_end_ids) + (self.eos_id,), self.max_step_tokens, pol.sharding,
        self.exit_below)
    lengths = np.asarray(step.lengths)
    # The verifier reads the tokens the call made, not max_step_tokens whatever the call
    # made (most calls return early): a power of two of them, at least half of
    # max_step_tokens. Each count is one more program per batch size and cache capacity,
    # and the smaller counts saved no time (see the README's search benchmark).
    made = max(int(lengths.max(initial=0)), self.max_step_tokens // 2, 2)
    width = min(self.max_step_tokens, sampler.power_of_two_at_least(made))
    tokens = step.tokens[:, :width]
    read_at = verifier.reading_positions(tokens, step.lengths, self.eos_id)
    scored = verifier.score_tokens(ver.graphdef, ver.params, reader, tokens, step.lengths,
                                   ver.sharding, self.likelihood, read_at)
    host = jax.device_get((tokens, step.lengths, step.stopped, step.capped,
                           scored.probs[:, 0]))
    self.work.add(Work.of_call(lengths))
    return DecoderRows(policy_state, scored.state), Advanced(*host)

  def reorder(self, state, rows):
    """Records the selection; `advance` carries it out (see the class docstring)."""
    rows = np.asarray(rows, np.int32)
    return state._replace(source=rows if state.source is None else state.source[rows])

  def _settled(self, state):
    """`state` with its pending selection carried out: the moved rows copied in place."""
    return state if state.source is None else self._take(state, state.source)

  def _take(self, state, rows):
    """Row i of both models' rows is row rows[i] of `state`'s (sampler.reorder: a gather
    into new buffers, or in-place moves that consume `state` when the row count stays)."""
    return DecoderRows(sampler.reorder(state.policy, rows, self.policy.sharding),
                       sampler.reorder(state.reader, rows, self.verifier.sharding))

  def fork(self, state):
    return state._replace(policy=jax.tree.map(jnp.copy, state.policy),
                          reader=jax.tree.map(jnp.copy, state.reader))


@functools.partial(jax.jit, static_argnames=("width",))
def round_keys(question_keys, round_index, width: int):
  """Key of slot s of question q in round r: fold_in(fold_in(key_q, r), s). Depends on
  the question's own key only, so a question draws the same tokens in any batch."""
  def per_question(key):
    key = jax.random.fold_in(key, round_index)
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(width))
  return jax.vmap(per_question)(question_keys).reshape(-1)


class WholeSteps(NamedTuple):
  """One whole step of every live row, gathered over as many decode calls as it took."""
  tokens: list[list[int]]
  readings: list[float | None]  # the verifier at the step's end (None: a bare eos)
  capped: np.ndarray  # bool[B]


def whole_steps(engine: Engine, state, keys, live: np.ndarray, greedy: bool,
                counts: list[Counts], width: int) -> tuple[object, WholeSteps]:
  """Advances every live row to the end of its step, calling the engine again for rows
  whose step was cut by its max_step_tokens. Every call's tokens count as work."""
  tokens = [[] for _ in range(len(live))]
  readings = [None] * len(live)
  capped = np.zeros_like(live)
  pending = live.copy()
  while pending.any():
    state, step = engine.advance(state, keys, pending, greedy)
    read = verifier.reading_positions(step.tokens, step.lengths, engine.eos_id) >= 0
    for i in np.flatnonzero(pending):
      n = int(step.lengths[i])
      tokens[i] += step.tokens[i, :n].tolist()
      if read[i]:  # the step's reading so far: at its last token that is not an eos
        readings[i] = float(step.readings[i])
      capped[i] = step.capped[i]
      pending[i] = not (step.stopped[i] or step.capped[i])
      counts[i // width].generated_tokens += n
      counts[i // width].verifier_tokens += n
  return state, WholeSteps(tokens, readings, capped)


def search(engine: Engine, prompts: list[list[int]], question_keys, shape: TreeShape,
           aggregation: str = "last", real: int | None = None) -> list[QuestionResult]:
  """Runs the tree search for a batch of questions; see the module docstring.
  aggregation: how step scores rank rows and candidates (verifier.STEP_AGGREGATIONS).
  real: only the first `real` questions are searched; the others only fill the batch's
  shape (their rows are never live, and their results empty)."""
  num_q, width = len(prompts), shape.width
  state, prompt_scores = engine.start(prompts, width)
  rows = [Candidate([], []) for _ in range(num_q * width)]
  live = np.arange(num_q * width) < (num_q if real is None else real) * width
  pools: list[list[Candidate]] = [[] for _ in range(num_q * shape.groups)]  # per subtree
  counts = [Counts(prompt_tokens=len(p), verifier_tokens=len(p)) for p in prompts]
  round_index = 0
  while live.any():
    keys = round_keys(question_keys, round_index, width)
    state, step = whole_steps(engine, state, keys, live, False, counts, width)
    ended = np.zeros_like(live)
    for i in np.flatnonzero(live):
      row = rows[i]
      row.tokens = row.tokens + step.tokens[i]
      if step.readings[i] is not None:
        row.step_scores = row.step_scores + [step.readings[i]]
      row.finished = bool(step.tokens[i]) and step.tokens[i][-1] == engine.eos_id
      row.slot, row.rounds = i % width, row.rounds + 1
      ended[i] = row.finished or bool(step.capped[i])
    for q in range(num_q):
      counts[q].rounds += bool(live[q * width:(q + 1) * width].any())
    open_rows = live & ~ended
    if shape.lookahead:
      rank = _lookahead_ranks(engine, state, keys, shape, open_rows, rows, aggregation,
                              counts)
    else:
      rank = np.asarray([verifier.aggregate(r.step_scores, aggregation) for r in rows])
    round_index += 1
    out_of_rounds = shape.max_rounds is not None and round_index >= shape.max_rounds
    source, next_live = _select(shape, rows, live, ended, rank, pools, out_of_rounds)
    if not next_live.any():
      break
    state = engine.reorder(state, source)
    rows = [Candidate(rows[s].tokens, rows[s].step_scores, rounds=rows[s].rounds)
            for s in source]
    live = next_live
  per_question = [pools[q * shape.groups:(q + 1) * shape.groups] for q in range(num_q)]
  return [QuestionResult([c for pool in mine for c in _final(pool, shape.subtree, aggregation)],
                         counts[q], float(prompt_scores[q * width]))
          for q, mine in enumerate(per_question)]


def _select(shape: TreeShape, rows, live, ended, rank, pools, out_of_rounds):
  """Moves ended rows into their subtree's pool and picks the rows of the next round:
  (source, next_live), where next-round row i continues row source[i]. A subtree is done
  (all its rows dead) once its pool holds its size, nothing is open, or rounds ran out; its
  open rows then join the pool unfinished."""
  size = shape.subtree
  source = np.arange(len(rows))
  next_live = np.zeros_like(live)
  for t, pool in enumerate(pools):
    mine = range(t * size, (t + 1) * size)
    pool += [rows[i] for i in mine if live[i] and ended[i]]
    open_rows = [i for i in mine if live[i] and not ended[i]]
    if len(pool) >= size or not open_rows or out_of_rounds:
      pool += [rows[i] for i in open_rows]
      continue
    kept = sorted(open_rows, key=lambda i: (-rank[i], i))[:shape.keep]
    source[mine.start:mine.stop] = fan_out(kept, size)
    next_live[mine.start:mine.stop] = True
  return source, next_live


def fan_out(parents: list[int], size: int) -> np.ndarray:
  """`size` rows continuing `parents` (best first), contiguous per parent: each gets
  size // len(parents) and the best size % len(parents) one more. With all `keep` parents
  open that is `children` each; with fewer, the best are duplicated so a budget of N keeps
  spending N rows."""
  share, spare = divmod(size, len(parents))
  return np.repeat(parents, [share + (j < spare) for j in range(len(parents))])


def _final(pool: list[Candidate], size: int, aggregation: str) -> list[Candidate]:
  """The subtree's `size` best finished candidates by aggregated score, unfinished ones
  filling in only when fewer finished exist; in the order they joined the pool."""
  score = lambda i: verifier.aggregate(pool[i].step_scores, aggregation)
  finished = [i for i, c in enumerate(pool) if c.finished]
  unfinished = [i for i, c in enumerate(pool) if not c.finished]
  by_score = lambda ids: sorted(ids, key=lambda i: (-score(i), i))
  keep = set((by_score(finished) + by_score(unfinished))[:size])
  return [c for i, c in enumerate(pool) if i in keep]


def _lookahead_ranks(engine, state, keys, shape, rolling, rows, aggregation, counts
                     ) -> np.ndarray:
  """Ranks rows with their last step score replaced by the verifier's reading after
  `shape.lookahead` more greedy steps (fewer if the solution ends first), as the paper's
  lookahead search does. The rollouts are counted as work, then dropped."""
  after = [r.step_scores[-1] if r.step_scores else None for r in rows]
  rolling = rolling.copy()
  state = engine.fork(state) if rolling.any() else state
  for _ in range(shape.lookahead):
    if not rolling.any():
      break
    state, step = whole_steps(engine, state, keys, rolling, True, counts, shape.width)
    for i in np.flatnonzero(rolling):
      if step.readings[i] is not None:
        after[i] = step.readings[i]
      ends = bool(step.tokens[i]) and step.tokens[i][-1] == engine.eos_id
      rolling[i] = not (ends or step.capped[i])
  return np.asarray([
      verifier.aggregate(r.step_scores[:-1] + [a] if a is not None else r.step_scores,
                         aggregation) for r, a in zip(rows, after)])
