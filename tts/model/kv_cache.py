"""The decoding cache: a plain pytree, one slab per layer, each row with its own length.

Layout: keys/values are tuples of L arrays [B, KV, S, Dh] in cfg.kv_dtype (head-major,
so attention reads each head's keys contiguously); lengths int32[B] counts the valid
positions of each row. Separate slabs per layer, not one stacked array: a decode step then updates each
slab in place, where restacking would copy the whole cache every token. Rows are
independent, so a search can reorder them with `gather_rows` after beam selection instead
of recomputing prefixes.
"""
import jax
import jax.numpy as jnp
from flax import struct

from tts.model.config import ModelConfig
from tts.model.sharding import DecodeSharding, constrain


@struct.dataclass
class KVCache:
  keys: tuple[jax.Array, ...]  # L x [B, KV, S, Dh]
  values: tuple[jax.Array, ...]  # L x [B, KV, S, Dh]
  lengths: jax.Array  # int32[B]

  @property
  def max_len(self) -> int:
    return self.keys[0].shape[2]


def init_cache(cfg: ModelConfig, batch: int, max_len: int,
               sharding: DecodeSharding | None = None) -> KVCache:
  shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
  zeros = lambda: tuple(jnp.zeros(shape, jnp.dtype(cfg.kv_dtype))
                        for _ in range(cfg.num_layers))
  return shard_cache(KVCache(zeros(), zeros(), jnp.zeros((batch,), jnp.int32)), sharding)


def shard_cache(cache: KVCache, sharding: DecodeSharding | None) -> KVCache:
  """Pins every slab to the decode mesh (rows over the batch axes, KV heads over tensor),
  inside a jitted function; the identity when decoding is not sharded."""
  if sharding is None:
    return cache
  pin = lambda slabs: tuple(constrain(x, sharding.cache(x.shape)) for x in slabs)
  return KVCache(pin(cache.keys), pin(cache.values),
                 constrain(cache.lengths, sharding.rows(cache.lengths.shape)))


def write_rows(slab, new, starts):
  """Writes new [B, KV, T, Dh] into slab [B, KV, S, Dh] at each row's own start offset.

  A scatter, not dynamic_update_slice: that would shift a chunk overhanging the end back
  over valid entries; here positions past the end (padding of a ragged chunk) are dropped.
  """
  b, kv, t, _ = new.shape
  rows = jnp.arange(b)[:, None, None]
  heads = jnp.arange(kv)[None, :, None]
  slots = (starts[:, None] + jnp.arange(t)[None, :])[:, None, :]
  return slab.at[rows, heads, slots].set(new.astype(slab.dtype), mode="drop")


def gather_rows(cache: KVCache, rows) -> KVCache:
  """New cache whose row i is old row rows[i] (beam selection, candidate fan-out)."""
  return KVCache(tuple(k[rows] for k in cache.keys), tuple(v[rows] for v in cache.values),
                 cache.lengths[rows])
