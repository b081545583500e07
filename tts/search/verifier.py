"""Verifiers: a transformer read at the end of every step of every candidate.

A PRM is trained so its reading after a step estimates the chance that the solution so far
still reaches the right answer; an ORM is trained on final correctness only, so only its
reading after the last step means anything. Both are the same model with `value_head`.

A likelihood verifier is a plain causal LM (a generative verifier): its reading after a
step is the probability it gives the solution's tokens so far (teacher-forced, temperature
1), as the least likely token's or their geometric mean (LIKELIHOOD_READINGS). It needs no
training of its own, and where a trained value head cannot learn to check a step (a small
model's value head learns a question's difficulty, not which of its answers is right), an
LM's next-token probabilities still separate right from wrong answers.

Every kind is fed incrementally: the verifier keeps its own row state (KV cache, and for a
likelihood verifier its next-token logits and running log-probability) per candidate row,
takes each new step once, and is reordered with the policy's rows when beams are selected.
"""
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts.model import KVCache, init_cache, shard_cache
from tts.model.sharding import DecodeSharding
from tts.search import sampler

KINDS = ("prm", "orm", "likelihood")
LIKELIHOOD_READINGS = ("min", "mean")
STEP_AGGREGATIONS = ("last", "min", "prod")


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
  """One `search.verifiers.<name>`: the model at `path` and its `kind` (KINDS: a value-head
  PRM or ORM, or any causal LM read by its likelihood, e.g. a policy stage's final/). It
  reads the policy's own tokens (prompt and steps) and is read after each step's last
  token. good_token and bad_token: a Hugging Face causal LM read as a PRM in the
  Math-Shepherd convention, P(good) against P(bad) as the next token
  (tts/interop/hf_import.py); configs/math_hf.py says which PRM input formats are not
  supported."""
  path: str = ""
  kind: str = "prm"
  good_token: str = ""
  bad_token: str = ""
  # A likelihood verifier's reading (LIKELIHOOD_READINGS): min or mean token probability.
  likelihood_reading: str = "mean"
  # A Hugging Face checkpoint's precision (ModelConfig's dtype fields); "": its own.
  param_dtype: str = ""
  dtype: str = ""
  cache_dtype: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind={self.kind!r}; use one of {KINDS}")
    if self.likelihood_reading not in LIKELIHOOD_READINGS:
      raise ValueError(f"likelihood_reading={self.likelihood_reading!r}; use one of "
                       f"{LIKELIHOOD_READINGS}")

  @property
  def reads_likelihood(self) -> str:
    """score_prompts' `likelihood` argument: "" for a value head."""
    return self.likelihood_reading if self.kind == "likelihood" else ""


class LikelihoodState(NamedTuple):
  """A likelihood verifier's rows: what it needs to read the probability of the next token."""
  cache: KVCache
  logits: jax.Array  # float32[B, V]: its next-token logits
  log_prob: jax.Array  # float32[B]: summed log-probability of the tokens read after the prompt
  tokens: jax.Array  # int32[B]: how many tokens that sums
  lowest: jax.Array  # float32[B]: the lowest log-probability among them (0 before any)


def likelihood_reading(log_prob, tokens, lowest, how: str) -> jax.Array:
  """A likelihood verifier's reading from LikelihoodState's running fields (any shape), in
  [0, 1]: `min`, the probability of the least likely token so far (one wrong
  token sinks it: for tasks where every token follows from what came before, as arithmetic
  steps); `mean`, the geometric mean of the tokens' probabilities (length-normalised: for
  free text, where many right tokens are unlikely)."""
  if how == "min":
    return jnp.exp(lowest)
  if how == "mean":
    return jnp.exp(log_prob / jnp.maximum(tokens, 1))
  raise ValueError(f"likelihood reading {how!r}; use one of {LIKELIHOOD_READINGS}")


class Scores(NamedTuple):
  state: KVCache | LikelihoodState  # the verifier's rows (a value-head verifier: its cache)
  probs: jax.Array  # float32[B, T]: the reading after each new token ([B, 1]: at read_at)


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "sharding", "likelihood"))
def score_prompts(graphdef, params, prompts, prompt_lengths, capacity: int,
                  sharding: DecodeSharding | None = None, likelihood: str = "") -> Scores:
  """Prefills the verifier's rows; probs[:, 0] is the reading after each whole prompt (a value
  head reads that position only; a likelihood verifier has read no solution token yet: 1).
  likelihood: "" for a value head, else how a likelihood verifier reads (LIKELIHOOD_READINGS)."""
  model = nnx.merge(graphdef, params)
  cache = init_cache(model.cfg, prompts.shape[0], capacity, sharding)
  # The last layer runs at each prompt's last token only.
  last, cache = model.hidden(prompts, cache, num_new=prompt_lengths, read_at=prompt_lengths - 1)
  if not likelihood:
    return Scores(shard_cache(cache, sharding), jax.nn.sigmoid(model.values(last)))
  zeros = jnp.zeros((prompts.shape[0],), jnp.float32)
  state = LikelihoodState(cache, model.logits(last[:, 0]), log_prob=zeros,
                          tokens=zeros.astype(jnp.int32), lowest=zeros)
  reading = likelihood_reading(state.log_prob, state.tokens, state.lowest, likelihood)
  return Scores(sampler.pin(state, sharding), reading[:, None])


def reading_positions(tokens, lengths, eos_id: int):
  """Where a verifier reads each row's new tokens (int32[B]): at the last one that is not a
  trailing eos (it reads a step where its text ends); -1 where the row has none (no tokens,
  or an eos alone: no new text to read).
  tokens: int32[B, T], lengths: int32[B] (numpy or jax arrays)."""
  xp = jnp if isinstance(tokens, jax.Array) else np
  last = xp.take_along_axis(tokens, xp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
  return (lengths - 1 - ((lengths > 0) & (last == eos_id))).astype(xp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "sharding", "likelihood"),
                   donate_argnames=("state",))
def score_tokens(graphdef, params, state: KVCache | LikelihoodState, tokens, lengths,
                 sharding: DecodeSharding | None = None, likelihood: str = "",
                 read_at=None) -> Scores:
  """Appends each row's `lengths` new tokens to the verifier's rows and reads every one (a
  step may end at any of them), or only position `read_at` of each row (int32[B], clipped
  to 0; `reading_positions`): a value head's last layer then runs there alone, which
  saves most of that layer. Consumes `state`. likelihood: as in score_prompts."""
  model = nnx.merge(graphdef, params)
  at = None if read_at is None else jnp.maximum(read_at, 0)
  if not likelihood:
    hidden, cache = model.hidden(tokens, shard_cache(state, sharding), num_new=lengths,
                                 read_at=at)
    return Scores(shard_cache(cache, sharding), jax.nn.sigmoid(model.values(hidden)))
  state = sampler.pin(state, sharding)
  hidden, cache = model.hidden(tokens, state.cache, num_new=lengths)
  # Token t is predicted from the position before it: the carried logits for the first.
  logits = jnp.concatenate([state.logits[:, None], model.logits(hidden)], axis=1)
  token_log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[..., None],
                                        axis=-1)[..., 0]
  read = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
  # After each new token: the running sum, count and minimum ([B, T]).
  log_prob = state.log_prob[:, None] + jnp.cumsum(jnp.where(read, token_log_probs, 0.0), axis=1)
  count = state.tokens[:, None] + jnp.cumsum(read, axis=1)
  lowest = jnp.minimum(state.lowest[:, None],
                       jax.lax.cummin(jnp.where(read, token_log_probs, 0.0), axis=1))
  probs = likelihood_reading(log_prob, count, lowest, likelihood)
  last = jnp.take_along_axis(logits, lengths[:, None, None], axis=1)[:, 0]
  state = LikelihoodState(cache, last, log_prob[:, -1], count[:, -1], lowest[:, -1])
  if at is not None:
    probs = jnp.take_along_axis(probs, at[:, None], axis=1)
  return Scores(sampler.pin(state, sharding), probs)


def check_finite_readings(scores, where: str, field: str):
  """Stops on a NaN or infinite verifier reading: damaged or diverged weights must not turn
  into rankings. scores: float array [items, ...]; where(index) names the item; field names
  the verifier's config field."""
  bad = np.argwhere(~np.isfinite(np.asarray(scores, np.float64)))
  if len(bad):
    raise FloatingPointError(
        f"the verifier {field} read {where(tuple(bad[0]))} as a non-finite number ({len(bad)} "
        "such readings); its weights are damaged or diverged: redo the stage that trained it "
        "with --force")


def aggregate(step_scores: list[float], how: str) -> float:
  """One score per solution from its step scores. The paper finds `last` best."""
  if not step_scores:
    return 0.0
  if how == "last":
    return step_scores[-1]
  if how == "min":
    return min(step_scores)
  if how == "prod":
    return float(np.prod(step_scores))
  raise ValueError(f"step aggregation {how!r} is unknown; use one of {STEP_AGGREGATIONS}")


def final_readings(model, sequences: list[list[int]], eos_id: int, pad_id: int,
                   batch_size: int, multiple: int = 64) -> np.ndarray:
  """The verifier's reading after the last token of each whole sequence (prompt + answer),
  a trailing eos not counted, as in `reading_positions`: float32[len(sequences)]. Fixed-size
  batches, padded to a `multiple` of tokens (few shapes to compile)."""
  trimmed = [s[:-1] if len(s) > 1 and s[-1] == eos_id else s for s in sequences]
  out = []
  for chunk, _, real in sampler.fixed_batches(trimmed, None, batch_size):
    tokens, lengths = sampler.pad_prompts(chunk, pad_id, multiple)
    scored = score_prompts(model.graphdef, model.params, tokens, lengths, tokens.shape[1],
                           model.sharding)
    out.append(np.asarray(scored.probs[:real, 0]))
  return np.concatenate(out) if out else np.zeros(0, np.float32)
