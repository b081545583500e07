"""The one jitted sampler: batched rows, each with its own prompt length, key and stop.

Three pieces, each compiled once per shape: `prefill` runs the prompts through the model
once (ragged rows right-padded); `decode` extends live rows by a `lax.while_loop` of
one-token steps against the KV cache until each stops (end of a step, end of the solution,
or a length cap); `reorder` gathers cache rows, so candidates share their prompt's prefill
and beams keep their prefix without recomputing it. `decode_to_end` calls decode until
every row stops, going on with the rows that still run in smaller batches; `sample` is
prefill + decode_to_end. Tree searches (search/tree.py) call decode once per step from a
Python loop.

Memory. Prefill computes logits only where they are read (each row's last prompt token),
never [B, T, vocab]. decode, grow and a same-size reorder consume the state they are given
(its buffers are donated to the result or deleted as they are replaced): the caller keeps
only what they return, and the cache is never held twice.
"""
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts.model import KVCache, gather_rows, init_cache, shard_cache
from tts.model.sharding import DecodeSharding, constrain


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  temperature: float = 1.0  # 0 is greedy
  top_k: int = 0  # 0: no top-k filter
  top_p: float = 1.0
  max_new_tokens: int = 96


class Samples(NamedTuple):
  tokens: jax.Array  # int32[B, max_new], pad after the stop token
  log_probs: jax.Array  # float32[B, max_new], under the unfiltered softmax at temperature 1
  lengths: jax.Array  # int32[B], tokens generated including the stop token


def _filter_logits(logits, cfg: SamplingConfig):
  """Temperature, top-k and top-p (nucleus) filtering of one row's logits [V]."""
  logits = logits / cfg.temperature
  if cfg.top_k:
    kth = jnp.sort(logits)[-cfg.top_k]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if cfg.top_p < 1.0:
    order = jnp.argsort(-logits)
    probs = jax.nn.softmax(logits[order])
    keep_sorted = jnp.cumsum(probs) - probs < cfg.top_p  # always keeps the top token
    keep = jnp.zeros_like(keep_sorted).at[order].set(keep_sorted)
    logits = jnp.where(keep, logits, -jnp.inf)
  return logits


def _choose(logits, keys, positions, cfg: SamplingConfig):
  """Next token per row. logits: [B, V]; keys: [B] typed keys; positions: int32[B]."""
  if cfg.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  def one(row_logits, key, position):
    return jax.random.categorical(jax.random.fold_in(key, position),
                                  _filter_logits(row_logits, cfg))
  return jax.vmap(one)(logits, keys, positions).astype(jnp.int32)


@dataclasses.dataclass
class Work:
  """What decode calls computed: row-tokens of live rows (the tokens they added) against
  every row-token decoded, rows that wait (stopped, dead or padding) included."""
  live_tokens: int = 0
  row_tokens: int = 0

  @property
  def live_fraction(self) -> float | None:
    return self.live_tokens / self.row_tokens if self.row_tokens else None

  def add(self, other: "Work"):
    self.live_tokens += other.live_tokens
    self.row_tokens += other.row_tokens

  @classmethod
  def of_call(cls, lengths: np.ndarray) -> "Work":
    """One decode call that added `lengths` tokens to its rows: every row takes part in
    each of the loop's steps, as many as the longest row added."""
    return cls(int(lengths.sum()), len(lengths) * int(lengths.max(initial=0)))


class DecodeState(NamedTuple):
  """Where every row stands: its cache, the logits for its next token, its prompt length."""
  cache: KVCache
  logits: jax.Array  # float32[B, V]
  prompt_lengths: jax.Array  # int32[B]


class Step(NamedTuple):
  """What one decode call added to each row."""
  tokens: jax.Array  # int32[B, T], pad after the row's last token
  log_probs: jax.Array  # float32[B, T], under the unfiltered softmax at temperature 1
  lengths: jax.Array  # int32[B], tokens added (0 for rows not live)
  stopped: jax.Array  # bool[B], the row's last token is a stop id (its step or solution ended)
  capped: jax.Array  # bool[B], a live row that holds cfg.max_new_tokens: it cannot go on,
  #                    whatever its last token (a stop id there ends it both ways)


def _shard_state(state, sharding: DecodeSharding | None):
  """Pins a row state's rows to the decode mesh (identity when not sharded). A row state is a
  DecodeState, or any NamedTuple whose `cache` is a KVCache and whose other fields are
  per-row arrays (a likelihood verifier's)."""
  if sharding is None:
    return state
  rows = {f: constrain(x, sharding.rows(x.shape)) for f, x in state._asdict().items()
          if f != "cache"}
  return state._replace(cache=shard_cache(state.cache, sharding), **rows)


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "sharding"))
def prefill(graphdef, params, prompts, prompt_lengths, capacity: int,
            sharding: DecodeSharding | None = None) -> DecodeState:
  """One forward pass over right-padded prompts [B, P] into a cache of `capacity` slots.
  sharding: the decode mesh its rows (and KV heads) are split over, if any."""
  model = nnx.merge(graphdef, params)
  cache = init_cache(model.cfg, prompts.shape[0], capacity, sharding)
  hidden, cache = model.hidden(prompts, cache, num_new=prompt_lengths)
  last = jnp.take_along_axis(hidden, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]
  return _shard_state(DecodeState(cache, model.logits(last), prompt_lengths), sharding)


def _cache_of(state: DecodeState | KVCache) -> KVCache:
  return state if isinstance(state, KVCache) else state.cache


def pin(state, sharding: DecodeSharding | None):
  """Pins a bare KVCache or a row state (see _shard_state) to the decode mesh."""
  return (shard_cache(state, sharding) if isinstance(state, KVCache)
          else _shard_state(state, sharding))


@functools.partial(jax.jit, static_argnames=("sharding",))
def _gather(state: DecodeState | KVCache, rows, sharding: DecodeSharding | None = None):
  """Row i of the result is row rows[i], in new buffers (any number of rows)."""
  if isinstance(state, KVCache):
    return shard_cache(gather_rows(state, rows), sharding)
  others = {f: x[rows] for f, x in state._asdict().items() if f != "cache"}
  return _shard_state(state._replace(cache=gather_rows(state.cache, rows), **others), sharding)


@functools.partial(jax.jit, static_argnames=("sharding",), donate_argnames=("state",))
def _move_rows(state: DecodeState | KVCache, dst, src, sharding: DecodeSharding | None = None):
  """Row dst[j] becomes row src[j], in place; a dst past the last row is dropped (padding)."""
  return pin(_put(state, jax.tree.map(lambda x: x[src], state), dst), sharding)


def _put(state, part, rows):
  """`state` with row rows[j] replaced by row j of `part`; rows past the last are dropped."""
  return jax.tree.map(lambda x, y: x.at[rows].set(y, mode="drop"), state, part)


def power_of_two_at_least(k: int) -> int:
  """The smallest power of two >= k (k >= 1): sizes padded to it compile few shapes."""
  return 1 << (k - 1).bit_length()


@jax.jit
def take_rows(x, rows):
  """x[rows] as one compiled gather (typed keys included)."""
  return x[rows]


def reorder(state: DecodeState | KVCache, rows, sharding: DecodeSharding | None = None):
  """Row i of the result is row rows[i]: fan a prompt out to its candidates, or keep the
  beams a search selected. Takes a DecodeState, a bare KVCache (a value-head verifier's) or
  another row state (a likelihood verifier's: see _shard_state).

  Keeping the row count, it consumes `state`: only the rows that move are copied, in place
  (none for best-of-N, whose rows never move: `state` itself comes back). The moved rows
  are padded to a power of two, so few shapes compile. A fan-out gathers into new buffers
  and leaves `state` to the caller."""
  rows = np.asarray(rows, np.int32)
  n = _cache_of(state).lengths.shape[0]
  if len(rows) != n:
    return _gather(state, rows, sharding)
  moved = np.flatnonzero(rows != np.arange(n))
  if not len(moved):
    return state
  width = min(n, power_of_two_at_least(len(moved)))
  dst, src = np.full(width, n, np.int32), np.zeros(width, np.int32)
  dst[:len(moved)], src[:len(moved)] = moved, rows[moved]
  return _move_rows(state, dst, src, sharding)


@functools.partial(jax.jit, static_argnames=("sharding",), donate_argnames=("state",))
def put_rows(state: DecodeState | KVCache, part, rows, sharding: DecodeSharding | None = None):
  """Writes the rows of `part` (a batch `reorder` took from `state`, decoded further) back
  over rows `rows` of `state`, in place (consumes `state`); a row past the last is dropped
  (padding)."""
  return pin(_put(state, part, rows), sharding)


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "sharding"))
def prefill_branches(graphdef, params, seqs, seq_lengths, rows, cuts, prompt_lengths,
                     capacity: int, sharding: DecodeSharding | None = None) -> DecodeState:
  """One forward pass over whole sequences [S, W]; row i of the result then continues
  sequence rows[i] after its first cuts[i] tokens. Every step prefix of a solution
  branches off that one cache: positions past a cut are hidden by the row's length and
  overwritten as it decodes. prompt_lengths: int32[S], for the length cap. sharding: the
  decode mesh both caches are split over, as prefill's."""
  model = nnx.merge(graphdef, params)
  hidden, cache = model.hidden(seqs, init_cache(model.cfg, seqs.shape[0], capacity, sharding),
                               num_new=seq_lengths)
  cache = gather_rows(cache, rows).replace(lengths=cuts)
  return _shard_state(DecodeState(cache, model.logits(hidden[rows, cuts - 1]),
                                  prompt_lengths[rows]), sharding)


@functools.partial(jax.jit, static_argnames=("capacity", "sharding"))
def _grow_slab(slab, capacity: int, sharding: DecodeSharding | None = None):
  grown = jnp.pad(slab, ((0, 0), (0, 0), (0, capacity - slab.shape[2]), (0, 0)))
  return grown if sharding is None else constrain(grown, sharding.cache(grown.shape))


def grow(state: DecodeState | KVCache, capacity: int, sharding: DecodeSharding | None = None):
  """The same state in a cache of `capacity` slots. Attention reads every slot each token,
  so searches start small and grow as their candidates lengthen.

  Consumes `state`: a larger slab cannot reuse the old one's buffer (no donation across
  shapes), so the slabs are grown one layer at a time, each old one deleted once its copy
  is made: growing needs one slab of headroom, not a second cache."""
  cache = _cache_of(state)
  def grown(slabs):
    out = []
    for slab in slabs:
      out.append(_grow_slab(slab, capacity, sharding))
      slab.delete()
    return tuple(out)
  cache = KVCache(grown(cache.keys), grown(cache.values), cache.lengths)
  return cache if isinstance(state, KVCache) else state._replace(cache=cache)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "stop_ids", "max_tokens",
                                             "sharding", "exit_below"),
                   donate_argnames=("state",))
def decode(graphdef, params, state: DecodeState, keys, live, cfg: SamplingConfig,
           stop_ids: tuple[int, ...], max_tokens: int,
           sharding: DecodeSharding | None = None,
           exit_below: float = 0.0) -> tuple[DecodeState, Step]:
  """Extends every live row until it emits one of `stop_ids` (a step end or the end of the
  solution), has added `max_tokens` tokens, or holds cfg.max_new_tokens in all. Consumes
  `state`: its buffers become the returned state's. exit_below: the call also returns once
  fewer than this fraction of the rows it started still run, so a caller can go on with
  those in a smaller batch rather than decode a batch of mostly finished rows.

  The token at absolute position p of row b is drawn with fold_in(keys[b], p): a row's
  tokens depend on its key and prefix only, not on its batch or on how decoding was split
  into calls. keys: [B] typed keys; live: bool[B], rows that take part.
  """
  model = nnx.merge(graphdef, params)
  b = live.shape[0]
  limit = state.prompt_lengths + cfg.max_new_tokens
  stop_ids = jnp.asarray(stop_ids, jnp.int32)
  done = ~live | (state.cache.lengths >= limit)
  enough = jnp.maximum(jnp.ceil(exit_below * jnp.sum(~done)), 1)  # rows running, to go on

  def cond(carry):
    t, _, _, _, _, done = carry
    return (t < max_tokens) & (jnp.sum(~done) >= enough)

  def body(carry):
    t, logits, cache, tokens, log_probs, done = carry
    token = jnp.where(done, 0, _choose(logits, keys, cache.lengths, cfg))
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]
    tokens = tokens.at[:, t].set(token)
    log_probs = log_probs.at[:, t].set(jnp.where(done, 0.0, log_prob))
    hidden, cache = model.hidden(token[:, None], cache, num_new=(~done).astype(jnp.int32))
    logits = jnp.where(done[:, None], logits, model.logits(hidden[:, 0]))
    done = done | jnp.isin(token, stop_ids) | (cache.lengths >= limit)
    return t + 1, logits, shard_cache(cache, sharding), tokens, log_probs, done

  state = _shard_state(state, sharding)
  start = state.cache.lengths
  init = (jnp.int32(0), state.logits, state.cache, jnp.zeros((b, max_tokens), jnp.int32),
          jnp.zeros((b, max_tokens), jnp.float32), done)
  _, logits, cache, tokens, log_probs, _ = jax.lax.while_loop(cond, body, init)
  lengths = cache.lengths - start
  last = jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
  stopped = (lengths > 0) & jnp.isin(last, stop_ids)
  capped = live & (cache.lengths >= limit)
  return (DecodeState(cache, logits, state.prompt_lengths),
          Step(tokens, log_probs, lengths, stopped, capped))


def decode_to_end(graphdef, params, state: DecodeState, keys, live: np.ndarray,
                  cfg: SamplingConfig, stop_ids: tuple[int, ...],
                  sharding: DecodeSharding | None = None, exit_below: float = 0.25,
                  smallest: int = 256, work: Work | None = None) -> Samples:
  """Extends every live row until it emits a stop id or holds cfg.max_new_tokens, decoding
  only rows that still run: a call returns once fewer than `exit_below` of its rows run,
  and those go on in a batch of the next power of two, of at least `smallest` rows (each
  size is one more program to compile). Consumes `state` (the caches are dropped). Returns
  host arrays over all rows (zeros for rows not live), the same as one decode call over
  every row: a token's key depends on its row and position only. work: tallies the
  row-tokens decoded."""
  n, width = len(live), cfg.max_new_tokens
  out = Samples(np.zeros((n, width), np.int32), np.zeros((n, width), np.float32),
                np.zeros(n, np.int32))
  rows = np.arange(n)  # state row j continues row rows[j]; -1: padding
  running = np.asarray(live, bool).copy()
  shards = sharding.row_shards if sharding else 1
  while running.any():
    mine = (rows >= 0) & running[np.maximum(rows, 0)]
    size = -(-max(smallest, power_of_two_at_least(int(mine.sum()))) // shards) * shards
    if size < len(rows):
      index = np.zeros(size, np.int32)  # padding repeats state row 0 and decodes nothing
      index[:mine.sum()] = np.flatnonzero(mine)
      rows = np.where(np.arange(size) < mine.sum(), rows[index], -1)
      state, keys = reorder(state, index, sharding), take_rows(keys, index)
      mine = rows >= 0
    state, step = decode(graphdef, params, state, keys, jnp.asarray(mine), cfg,
                         tuple(stop_ids), width, sharding, exit_below)
    tokens, log_probs, lengths, stopped, capped = jax.device_get(step)
    if work is not None:
      work.add(Work.of_call(lengths))
    for j in np.flatnonzero(mine):
      r, start, k = rows[j], out.lengths[rows[j]], lengths[j]
      out.tokens[r, start:start + k] = tokens[j, :k]
      out.log_probs[r, start:start + k] = log_probs[j, :k]
      out.lengths[r] += k
      running[r] = not (stopped[j] or capped[j])
  return out


def sample(graphdef, params, prompts, prompt_lengths, keys, cfg: SamplingConfig,
           stop_ids: tuple[int, ...], sharding: DecodeSharding | None = None,
           real: int | None = None) -> Samples:
  """Whole completions: prefill, then decode_to_end. Host arrays.

  prompts: int32[B, P] right-padded; prompt_lengths: int32[B]; keys: [B] typed keys.
  real: only the first `real` rows are decoded (the others fill a batch's shape).
  """
  state = prefill(graphdef, params, prompts, prompt_lengths,
                  prompts.shape[1] + cfg.max_new_tokens, sharding)
  live = np.arange(prompts.shape[0]) < (prompts.shape[0] if real is None else real)
  return decode_to_end(graphdef, params, state, keys, live, cfg, stop_ids, sharding)


def pad_prompts(prompt_ids: list[list[int]], pad_id: int, multiple: int = 16,
                width: int | None = None):
  """Right-pads to `width`, or to the longest prompt rounded up to `multiple` (fewer
  distinct shapes to compile). Returns (int32[B, width], int32[B] lengths)."""
  longest = max(len(p) for p in prompt_ids)
  if width is None:
    width = -(-longest // multiple) * multiple
  elif longest > width:
    raise ValueError(f"a prompt has {longest} tokens, more than the padded width {width}")
  out = np.full((len(prompt_ids), width), pad_id, np.int32)
  for i, p in enumerate(prompt_ids):
    out[i, :len(p)] = p
  return out, np.asarray([len(p) for p in prompt_ids], np.int32)


def fixed_batches(items: list, keys, size: int):
  """Yields (items, keys, n) in batches of exactly `size`: the last one is filled up with
  copies of its first item and key, n counts the real ones. One shape, one compile.
  keys may be None (batches that draw nothing, such as verifier readings)."""
  for start in range(0, len(items), size):
    chunk = items[start:start + size]
    chunk_keys = None if keys is None else keys[start:start + size]
    fill = size - len(chunk)
    if fill:
      chunk = chunk + [chunk[0]] * fill
      if keys is not None:
        chunk_keys = jnp.concatenate([chunk_keys, jnp.broadcast_to(chunk_keys[:1], (fill,))])
    yield chunk, chunk_keys, size - fill


def sample_all(graphdef, params, prompt_ids: list[list[int]], keys, cfg: SamplingConfig,
               stop_ids: tuple[int, ...], pad_id: int, batch_size: int,
               multiple: int = 16, progress=None,
               sharding: DecodeSharding | None = None) -> list[list[int]]:
  """Samples every prompt in fixed-size batches, each padded to a `multiple` of tokens
  (prompts of very different lengths: a larger multiple means fewer shapes to compile).

  keys: typed keys [len(prompt_ids)]. progress: called with the rows of each finished
  batch (a progress bar's update). Returns each row's tokens up to and including its stop.
  """
  results = []
  for chunk, chunk_keys, real in fixed_batches(prompt_ids, keys, batch_size):
    prompts, lengths = pad_prompts(chunk, pad_id, multiple)
    out = sample(graphdef, params, prompts, lengths, chunk_keys, cfg, tuple(stop_ids),
                 sharding, real)
    results += [out.tokens[i, :out.lengths[i]].tolist() for i in range(real)]
    if progress is not None:
      progress(real)
  return results
