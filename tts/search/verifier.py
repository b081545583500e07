"""Verifiers: a value-head transformer read at the end of every step of every candidate.

A PRM is trained so its reading after a step estimates the chance that the solution so far
still reaches the right answer; an ORM is trained on final correctness only, so only its
reading after the last step means anything. Both are the same model with `value_head`, fed
incrementally: the verifier keeps its own KV cache per candidate row, takes each new step
once, and is reordered with the policy's rows when beams are selected.
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

KINDS = ("prm", "orm")
STEP_AGGREGATIONS = ("last", "min", "prod")


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
  """One `search.verifiers.<name>`: the model at `path` and its `kind`. It reads the policy's
  own tokens (prompt and steps) and is read after each step's last token. good_token and
  bad_token: a Hugging Face causal LM read as a PRM in the Math-Shepherd convention,
  P(good) against P(bad) as the next token (tts/interop/hf_import.py); configs/math_hf.py
  says which PRM input formats are not supported."""
  path: str = ""
  kind: str = "prm"
  good_token: str = ""
  bad_token: str = ""
  # A Hugging Face checkpoint's precision (ModelConfig's dtype fields); "": its own.
  param_dtype: str = ""
  dtype: str = ""
  cache_dtype: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind={self.kind!r}; use one of {KINDS}")


class Scores(NamedTuple):
  cache: KVCache
  probs: jax.Array  # float32[B, T]: sigmoid of the value head after each new token


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "sharding"))
def score_prompts(graphdef, params, prompts, prompt_lengths, capacity: int,
                  sharding: DecodeSharding | None = None) -> Scores:
  """Prefills the verifier's cache; probs[:, 0] is the reading after each whole prompt
  (the value head reads that position only; no logits are computed)."""
  model = nnx.merge(graphdef, params)
  cache = init_cache(model.cfg, prompts.shape[0], capacity, sharding)
  hidden, cache = model.hidden(prompts, cache, num_new=prompt_lengths)
  last = jnp.take_along_axis(hidden, (prompt_lengths - 1)[:, None, None], axis=1)
  return Scores(shard_cache(cache, sharding), jax.nn.sigmoid(model.values(last)))


@functools.partial(jax.jit, static_argnames=("graphdef", "sharding"),
                   donate_argnames=("cache",))
def score_tokens(graphdef, params, cache: KVCache, tokens, lengths,
                 sharding: DecodeSharding | None = None) -> Scores:
  """Appends each row's `lengths` new tokens to the verifier's cache and reads every one
  (the value head only: a step may end at any of them). Consumes `cache`."""
  model = nnx.merge(graphdef, params)
  hidden, cache = model.hidden(tokens, shard_cache(cache, sharding), num_new=lengths)
  return Scores(shard_cache(cache, sharding), jax.nn.sigmoid(model.values(hidden)))


def step_reading(probs, tokens, eos_id: int) -> float | None:
  """The reading at a step's last token, a trailing eos not counted (the verifier reads a
  step where its text ends); None for a step that is only an eos (no new text to read)."""
  n = len(tokens) - 1 if tokens and tokens[-1] == eos_id else len(tokens)
  return float(probs[n - 1]) if n > 0 else None


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
  a trailing eos not counted, as in `step_reading`: float32[len(sequences)]. Fixed-size
  batches, padded to a `multiple` of tokens (few shapes to compile)."""
  trimmed = [s[:-1] if len(s) > 1 and s[-1] == eos_id else s for s in sequences]
  out = []
  for chunk, _, real in sampler.fixed_batches(trimmed, None, batch_size):
    tokens, lengths = sampler.pad_prompts(chunk, pad_id, multiple)
    scored = score_prompts(model.graphdef, model.params, tokens, lengths, tokens.shape[1],
                           model.sharding)
    out.append(np.asarray(scored.probs[:real, 0]))
  return np.concatenate(out) if out else np.zeros(0, np.float32)
