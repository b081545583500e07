"""The one Flax NNX transformer behind the policy, the PRM/ORM and the revision model.

Llama style: RMSNorm, rotary positions, SwiGLU, grouped-query attention, optional tied
embeddings and an optional scalar value head. Every parameter carries `logical_axes`
metadata; `tts.model.sharding` maps those names to mesh axes with rules from the config.
Precision: weights are stored in cfg.param_dtype and cast to cfg.dtype for compute; norms,
rotary angles, softmax, attention scores and logits are float32 whatever the dtype.
Layers: a list of blocks run by a Python loop, or (cfg.scan_layers) one block whose weights
are stacked [L, ...] run by lax.scan; either form under cfg.remat (tts.model.layer_layout
converts weights between the two).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tts.model.config import ModelConfig
from tts.model.kv_cache import KVCache, write_rows
from tts.model.layer_layout import LAYERS_AXIS
from tts.model.sharding import constrain_activation

# Logical axes of the residual stream [B, T, D], constrained at every block boundary.
ACTIVATION_AXES = ("batch", "length", "activation_embed")
REMAT = {"full": jax.checkpoint_policies.nothing_saveable,
         "dots": jax.checkpoint_policies.checkpoint_dots,
         "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _param(cfg: ModelConfig, rngs: nnx.Rngs, init, shape, axes):
  """A weight stored in cfg.param_dtype (the one place parameters get their dtype)."""
  return nnx.Param(init(rngs.params(), shape, jnp.dtype(cfg.param_dtype)), logical_axes=axes)


def _dropout(x, rate: float, key):
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def rotary(x, positions, theta: float):
  """Rotates pairs (i, i + Dh/2) by position-dependent angles. x: [B, T, H, Dh], positions: [B, T]."""
  half = x.shape[-1] // 2
  freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[..., None].astype(jnp.float32) * freqs  # [B, T, half]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class RMSNorm(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.scale = _param(cfg, rngs, nnx.initializers.ones, (cfg.d_model,), ("norm",))
    self.eps = cfg.norm_eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...]).astype(x.dtype)


def at_positions(x, index):
  """Position index[b] of each row b: x [B, T, ...] -> [B, 1, ...]."""
  index = index.reshape((-1, 1) + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index.astype(jnp.int32), axis=1)


def full_attention(q, k, v, segment_ids=None):
  """Causal self-attention over a whole sequence (training, scoring without a cache):
  q: [B, T, H, Dh], k, v: [B, T, KV, Dh] -> [B, T, H, Dh]. jax.nn.dot_product_attention
  picks the platform's kernel (XLA on CPU and TPU, cuDNN's fused attention on GPU for
  bfloat16) and handles grouped-query heads; segment_ids: int32[B, T] (packed rows): a
  token sees only earlier tokens of its own segment (positions restart in each, so the
  causal order by index is the order by position)."""
  mask = None if segment_ids is None else (
      segment_ids[:, None, :, None] == segment_ids[:, None, None, :])  # [B, 1, T, T]
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)


class Attention(nnx.Module):
  """Grouped-query attention; with a cache, new keys are written at each row's own length."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, h, kv, dh = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nnx.initializers.normal(d ** -0.5)
    self.q = _param(cfg, rngs, init, (d, h, dh), ("embed", "heads", "head_dim"))
    self.k = _param(cfg, rngs, init, (d, kv, dh), ("embed", "kv_heads", "head_dim"))
    self.v = _param(cfg, rngs, init, (d, kv, dh), ("embed", "kv_heads", "head_dim"))
    self.o = _param(cfg, rngs, nnx.initializers.normal((h * dh) ** -0.5), (h, dh, d),
                    ("heads", "head_dim", "embed"))
    if cfg.attention_bias:
      zeros = nnx.initializers.zeros
      self.q_bias = _param(cfg, rngs, zeros, (h, dh), ("heads", "head_dim"))
      self.k_bias = _param(cfg, rngs, zeros, (kv, dh), ("kv_heads", "head_dim"))
      self.v_bias = _param(cfg, rngs, zeros, (kv, dh), ("kv_heads", "head_dim"))
    self.cfg = cfg

  def __call__(self, x, positions, layer_cache=None, segment_ids=None, query_at=None):
    """x: [B, T, D]; positions: int32[B, T]; layer_cache: (keys, values) [B, KV, S, Dh] or None;
    segment_ids: int32[B, T] (packed rows, no cache): tokens attend only within their segment;
    query_at: int32[B] (with a cache): only that position of each row queries, so the output
    is [B, 1, D]; every position's keys and values still go into the cache.

    Without a cache, `full_attention`. With one (decoding), projections run as 2-D matmuls
    and the query groups of each KV head are folded into the query axis, so attention is
    one batched matmul per (row, KV head): on CPU this is several times faster than the
    equivalent 5-D einsums.
    """
    cfg = self.cfg
    b, _, d = x.shape
    kv, dh, groups = cfg.num_kv_heads, cfg.head_dim, cfg.num_heads // cfg.num_kv_heads
    def project(inputs, w, bias, heads):
      t = inputs.shape[1]
      out = (inputs.reshape(b * t, d) @ w[...].reshape(d, heads * dh).astype(x.dtype))
      out = out.reshape(b, t, heads, dh)
      return out if bias is None else out + bias[...].astype(x.dtype)
    biased = cfg.attention_bias
    query_pos = positions if query_at is None else at_positions(positions, query_at)
    q = project(x if query_at is None else at_positions(x, query_at), self.q,
                self.q_bias if biased else None, cfg.num_heads)
    k = project(x, self.k, self.k_bias if biased else None, kv)
    v = project(x, self.v, self.v_bias if biased else None, kv)
    q, k = rotary(q, query_pos, cfg.rope_theta), rotary(k, positions, cfg.rope_theta)
    t = q.shape[1]
    out_proj = self.o[...].reshape(-1, d).astype(x.dtype)
    if layer_cache is None:
      out = full_attention(q, k, v, segment_ids).reshape(b * t, -1) @ out_proj
      return out.reshape(b, t, d), (k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3))
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, T, Dh]
    keys = write_rows(layer_cache[0], k, positions[:, 0])
    values = write_rows(layer_cache[1], v, positions[:, 0])
    key_pos = jnp.broadcast_to(jnp.arange(keys.shape[2]), (b, keys.shape[2]))
    # Query head h = kv_head * groups + g; fold g into the query axis: [B, KV, G*T, Dh].
    q = q.reshape(b, t, kv, groups, dh).transpose(0, 2, 3, 1, 4).reshape(b, kv, groups * t, dh)
    scores = jnp.einsum("bkqd,bksd->bkqs", q, keys,
                        preferred_element_type=jnp.float32) * dh ** -0.5
    query_pos = jnp.tile(query_pos, (1, groups))  # [B, G*T], matching the folded axis
    visible = key_pos[:, None, :] <= query_pos[:, :, None]  # [B, G*T, S]
    # An additive bias, not jnp.where on the scores: on CPU the select over [B, KV, G*T, S]
    # cost more than the attention matmuls themselves in batched decoding.
    scores = scores + jnp.where(visible, 0.0, -1e30)[:, None]
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, values)  # [B, KV, G*T, Dh]
    out = out.reshape(b, kv, groups, t, dh).transpose(0, 3, 1, 2, 4).reshape(b * t, -1)
    out = out @ out_proj
    return out.reshape(b, t, d), (keys, values)


class MLP(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    init = nnx.initializers.normal(cfg.d_model ** -0.5)
    self.gate = _param(cfg, rngs, init, (cfg.d_model, cfg.d_ff), ("embed", "mlp"))
    self.up = _param(cfg, rngs, init, (cfg.d_model, cfg.d_ff), ("embed", "mlp"))
    self.down = _param(cfg, rngs, nnx.initializers.normal(cfg.d_ff ** -0.5),
                       (cfg.d_ff, cfg.d_model), ("mlp", "embed"))

  def __call__(self, x):
    shape = x.shape
    x = x.reshape(-1, shape[-1])  # 2-D matmuls: their gradients are much faster on CPU
    gate = jax.nn.silu(x @ self.gate[...].astype(x.dtype))
    out = (gate * (x @ self.up[...].astype(x.dtype))) @ self.down[...].astype(x.dtype)
    return out.reshape(shape)


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg, rngs)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg, rngs)
    self.mlp = MLP(cfg, rngs)
    self.dropout = cfg.dropout

  def __call__(self, x, positions, layer_cache, dropout_key, segment_ids=None, query_at=None):
    """x: [B, T, D] -> [B, T, D] ([B, 1, D] with query_at: those positions only, as
    Attention) and the layer's grown (keys, values)."""
    keys = (None, None) if dropout_key is None else jax.random.split(dropout_key)
    attn_out, layer_cache = self.attn(self.attn_norm(x), positions, layer_cache, segment_ids,
                                      query_at)
    if query_at is not None:
      x = at_positions(x, query_at)
    x = x + _dropout(attn_out, self.dropout, keys[0])
    x = x + _dropout(self.mlp(self.mlp_norm(x)), self.dropout, keys[1])
    return constrain_activation(x, ACTIVATION_AXES), layer_cache


def stack_blocks(blocks: list[Block]) -> Block:
  """One Block whose weights are the given blocks' stacked [L, ...], logical axes led by
  LAYERS_AXIS (the same random weights as the unrolled list, layer by layer)."""
  splits = [nnx.split(block) for block in blocks]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(state for _, state in splits))
  for _, var in nnx.to_flat_state(stacked):
    var.set_metadata("logical_axes", (LAYERS_AXIS,) + tuple(var.get_metadata()["logical_axes"]))
  return nnx.merge(splits[0][0], stacked)


def run_block(graphdef: nnx.GraphDef, remat: str):
  """(layer_state, x, positions, layer_cache, key, segment_ids, query_at) -> Block output, a
  pure function of one layer's weights, rematerialised under the REMAT policy `remat`."""
  def run(state, x, positions, layer_cache, key, segment_ids, query_at=None):
    return nnx.merge(graphdef, state)(x, positions, layer_cache, key, segment_ids, query_at)
  return run if remat == "none" else jax.checkpoint(run, policy=REMAT[remat])


class Output(NamedTuple):
  logits: jax.Array  # float32[B, T, V]
  values: jax.Array | None  # float32[B, T] value-head logits, verifiers only
  cache: KVCache | None


class Transformer(nnx.Module):
  """Decoder-only LM. Without a cache it runs a causal forward over [B, T]; with one it
  appends the T new tokens at each row's `cache.lengths` and attends to everything before."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = _param(cfg, rngs, nnx.initializers.normal(cfg.d_model ** -0.5),
                        (cfg.vocab_size, cfg.d_model), ("vocab", "embed"))
    blocks = [Block(cfg, rngs) for _ in range(cfg.num_layers)]
    self.blocks = stack_blocks(blocks) if cfg.scan_layers else nnx.List(blocks)
    self.final_norm = RMSNorm(cfg, rngs)
    if not cfg.tie_embeddings:
      self.lm_head = _param(cfg, rngs, nnx.initializers.normal(cfg.d_model ** -0.5),
                            (cfg.d_model, cfg.vocab_size), ("embed", "vocab"))
    if cfg.value_head:
      self.value_w = _param(cfg, rngs, nnx.initializers.zeros, (cfg.d_model, 1),
                            ("embed", None))
      self.value_b = _param(cfg, rngs, nnx.initializers.zeros, (1,), (None,))

  def __call__(self, tokens, cache: KVCache | None = None, num_new=None, dropout_key=None,
               positions=None, segment_ids=None) -> Output:
    """Logits (and value-head readings) at every one of the T positions: training. Decoding
    reads a few positions of [B, T, vocab], so it calls `hidden` and reads those itself."""
    hidden, cache = self.hidden(tokens, cache, num_new, dropout_key, positions, segment_ids)
    values = self.values(hidden) if self.cfg.value_head else None
    return Output(self.logits(hidden), values, cache)

  def hidden(self, tokens, cache: KVCache | None = None, num_new=None, dropout_key=None,
             positions=None, segment_ids=None, read_at=None) -> tuple[jax.Array, KVCache | None]:
    """The final-normed hidden states [B, T, D] and the grown cache (None without one).

    tokens: int32[B, T]; num_new: int32[B], how many of the T tokens are real per row
    (right padding during a ragged prefill), default T; dropout_key: None for inference.
    positions / segment_ids: int32[B, T] for packed training rows (several sequences per
    row, positions restarting at 0 in each); only without a cache. read_at: int32[B], with a
    cache: the one position of each row to read (a verifier reads where a step ends); the
    last layer then runs there only (its keys and values still fill the cache), and the
    hidden states are [B, 1, D]."""
    cfg = self.cfg
    b, t = tokens.shape
    if positions is None:
      start = jnp.zeros((b,), jnp.int32) if cache is None else cache.lengths
      positions = start[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
    elif cache is not None:
      raise ValueError("positions are given by the cache when decoding; pass one or the other")
    if read_at is not None and cache is None:
      raise ValueError("read_at needs a cache (decoding)")
    # The table whole along embed for the lookup (FSDP gathers this weight), so the rows
    # come out split like the batch; from a table split along embed they would be the
    # gathered tokens' embed shards, then reshuffled (an all-to-all of activations).
    table = constrain_activation(self.embed[...], ("vocab", None))
    x = constrain_activation(table[tokens].astype(jnp.dtype(cfg.dtype)), ACTIVATION_AXES)
    layer_keys = None if dropout_key is None else jax.vmap(
        jax.random.fold_in, (None, 0))(dropout_key, jnp.arange(cfg.num_layers))
    if cfg.scan_layers and cache is None:
      graphdef, stacked = nnx.split(self.blocks)
      run = run_block(graphdef, cfg.remat)
      def layer(x, inputs):
        state, key = inputs
        return run(state, x, positions, None, key, segment_ids)[0], None
      x, _ = jax.lax.scan(layer, x, (stacked, layer_keys))
      return self.final_norm(x), None
    new_keys, new_values = [], []
    for i in range(cfg.num_layers):
      graphdef, state = nnx.split(self.blocks if cfg.scan_layers else self.blocks[i])
      if cfg.scan_layers:  # decoding a stacked model: layer i's slice of every weight
        state = jax.tree.map(lambda w: w[i], state)
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      key = None if layer_keys is None else layer_keys[i]
      query_at = read_at if i == cfg.num_layers - 1 else None
      x, (k, v) = run_block(graphdef, cfg.remat)(state, x, positions, layer_cache, key,
                                                 segment_ids, query_at)
      new_keys.append(k)
      new_values.append(v)
    if cache is not None:
      grown = t if num_new is None else num_new
      cache = KVCache(tuple(new_keys), tuple(new_values), cache.lengths + grown)
    return self.final_norm(x), cache

  def logits(self, hidden):
    """float32[..., V] next-token logits from hidden states [..., D]."""
    head = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    flat = hidden.reshape(-1, hidden.shape[-1])
    return jnp.matmul(flat, head.astype(hidden.dtype), preferred_element_type=jnp.float32).reshape(
        *hidden.shape[:-1], -1)

  def values(self, hidden):
    """float32[...] value-head logits from hidden states [..., D] (verifiers only)."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    out = jnp.matmul(flat, self.value_w[...].astype(hidden.dtype),
                     preferred_element_type=jnp.float32)[:, 0]
    return out.reshape(hidden.shape[:-1]) + self.value_b[...][0].astype(jnp.float32)
