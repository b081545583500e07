"""The decoding cache: a plain pytree, one slab per layer, each row with its own length.

Layout: keys/values float[L, B, S, KV, Dh]; lengths int32[B] counts the valid positions of
each row. Rows are independent, so a search can reorder them with `gather_rows` after beam
selection instead of recomputing prefixes.
"""
import jax
import jax.numpy as jnp
from flax import struct

from tts.model.config import ModelConfig


@struct.dataclass
class KVCache:
  keys: jax.Array  # [L, B, S, KV, Dh]
  values: jax.Array  # [L, B, S, KV, Dh]
  lengths: jax.Array  # int32[B]

  @property
  def max_len(self) -> int:
    return self.keys.shape[2]


def init_cache(cfg: ModelConfig, batch: int, max_len: int) -> KVCache:
  shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
  dtype = jnp.dtype(cfg.dtype)
  return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))


def write_rows(slab, new, starts):
  """Writes new [B, T, ...] into slab [B, S, ...] at each row's own start offset."""
  def write_one(row, update, start):
    return jax.lax.dynamic_update_slice_in_dim(row, update.astype(row.dtype), start, axis=0)
  return jax.vmap(write_one)(slab, new, starts)


def gather_rows(cache: KVCache, rows) -> KVCache:
  """New cache whose row i is old row rows[i] (beam selection, candidate fan-out)."""
  return KVCache(cache.keys[:, rows], cache.values[:, rows], cache.lengths[rows])
