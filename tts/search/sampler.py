"""The one jitted sampler: batched rows, each with its own prompt length, key and stop.

Decoding is prefill (all prompt tokens through the model once, ragged rows right-padded)
then a `lax.while_loop` of one-token steps against the KV cache, ending when every row has
stopped. Row b's t-th token is drawn with fold_in(keys[b], t), so a row's tokens do not
depend on which other rows share its batch.
"""
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tts.model import init_cache


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


def _choose(logits, keys, t, cfg: SamplingConfig):
  """Next token per row. logits: [B, V]; keys: [B] typed keys."""
  if cfg.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  def one(row_logits, key):
    return jax.random.categorical(jax.random.fold_in(key, t), _filter_logits(row_logits, cfg))
  return jax.vmap(one)(logits, keys).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "stop_ids"))
def sample(graphdef, params, prompts, prompt_lengths, keys, cfg: SamplingConfig,
           stop_ids: tuple[int, ...]) -> Samples:
  """prompts: int32[B, P] right-padded; prompt_lengths: int32[B]; keys: [B] typed keys.

  A row stops after emitting any of `stop_ids` (end of solution, or end of step for
  step-wise search) or after cfg.max_new_tokens tokens.
  """
  model = nnx.merge(graphdef, params)
  b, p = prompts.shape
  cache = init_cache(model.cfg, b, p + cfg.max_new_tokens)
  out = model(prompts, cache, num_new=prompt_lengths)
  last = jnp.take_along_axis(out.logits, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]
  stop_ids = jnp.asarray(stop_ids, jnp.int32)

  def cond(carry):
    t, _, _, _, _, done = carry
    return (t < cfg.max_new_tokens) & ~jnp.all(done)

  def body(carry):
    t, logits, cache, tokens, log_probs, done = carry
    token = jnp.where(done, 0, _choose(logits, keys, t, cfg))
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]
    tokens = tokens.at[:, t].set(token)
    log_probs = log_probs.at[:, t].set(jnp.where(done, 0.0, log_prob))
    step = model(token[:, None], cache, num_new=(~done).astype(jnp.int32))
    done = done | jnp.isin(token, stop_ids)
    return t + 1, step.logits[:, 0], step.cache, tokens, log_probs, done

  init = (jnp.int32(0), last, out.cache, jnp.zeros((b, cfg.max_new_tokens), jnp.int32),
          jnp.zeros((b, cfg.max_new_tokens), jnp.float32), jnp.zeros((b,), bool))
  _, _, cache, tokens, log_probs, _ = jax.lax.while_loop(cond, body, init)
  return Samples(tokens, log_probs, cache.lengths - prompt_lengths)


def pad_prompts(prompt_ids: list[list[int]], pad_id: int, multiple: int = 16):
  """Right-pads to a length rounded up to `multiple` (fewer distinct shapes to compile)."""
  longest = max(len(p) for p in prompt_ids)
  width = -(-longest // multiple) * multiple
  out = np.full((len(prompt_ids), width), pad_id, np.int32)
  for i, p in enumerate(prompt_ids):
    out[i, :len(p)] = p
  return out, np.asarray([len(p) for p in prompt_ids], np.int32)


def sample_all(graphdef, params, prompt_ids: list[list[int]], keys, cfg: SamplingConfig,
               stop_ids: tuple[int, ...], pad_id: int, batch_size: int) -> list[list[int]]:
  """Samples every prompt in fixed-size batches (the last one padded: one compile).

  keys: typed keys [len(prompt_ids)]. Returns each row's tokens up to and including its stop.
  """
  results = []
  for start in range(0, len(prompt_ids), batch_size):
    chunk = prompt_ids[start:start + batch_size]
    chunk_keys = keys[start:start + batch_size]
    fill = batch_size - len(chunk)
    if fill:
      chunk = chunk + [chunk[0]] * fill
      chunk_keys = jnp.concatenate([chunk_keys, jnp.broadcast_to(chunk_keys[:1], (fill,))])
    prompts, lengths = pad_prompts(chunk, pad_id)
    out = jax.device_get(sample(graphdef, params, prompts, lengths, chunk_keys, cfg,
                                tuple(stop_ids)))
    for i in range(len(chunk) - fill):
      results.append(out.tokens[i, :out.lengths[i]].tolist())
  return results
