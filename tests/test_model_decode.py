"""The transformer's cached decoding against its own teacher-forced forward pass.

Every sampler, beam search and verifier in the project reads logits through the KV cache;
none of them would notice a cache that is subtly wrong (a position off by one, a padded
prefill leaking into attention, beams reordered into the wrong rows). These tests pin the
cache path to the plain forward pass, row by row, on tiny random models.

Speed (compiling dominates): parameters are drawn with numpy into an `nnx.eval_shape`
model (compiling the threefry initialisers costs seconds per shape on CPU), calls go
through one jitted `_apply` compiled at LLVM optimisation level 0 (half the compile time,
same logic), and most tests share the shapes B=3, T=10, cache length 12, prefill width 4.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tts.model import ModelConfig, Transformer, gather_rows, init_cache

# Float32 on CPU: cached and uncached paths differ only in summation order (observed
# max |diff| ~2e-6); a wrong position, mask or row moves logits by O(0.1 .. 1).
ATOL = 1e-4

TINY = ModelConfig(vocab_size=32, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64)
B, T, MAX_LEN, PREFIX = 3, 10, 12, 4


def _model(cfg=TINY, seed=0):
  """A Transformer with every parameter random (biases and value head included)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  def draw(path, x):
    if path[-1].key == "scale":  # RMSNorm gains around 1
      return jnp.asarray(1.0 + rng.normal(0, 0.1, x.shape), jnp.float32)
    return jnp.asarray(rng.normal(0, 0.2, x.shape), jnp.float32)
  nnx.replace_by_pure_dict(
      state, jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state)))
  return nnx.merge(graphdef, state)


def _tokens(shape, seed=1):
  """int32 numpy tokens (writable, unlike np.asarray of a jax array)."""
  return np.random.default_rng(seed).integers(0, TINY.vocab_size, shape).astype(np.int32)


@functools.partial(jax.jit, static_argnums=0,
                   compiler_options={"xla_backend_optimization_level": 0})
def _apply(graphdef, state, tokens, cache, num_new):
  return nnx.merge(graphdef, state)(tokens, cache=cache, num_new=num_new)


def _run(model, tokens, cache=None, num_new=None):
  """model(tokens, cache, num_new) under jit: eager dispatch is several times slower here."""
  graphdef, state = nnx.split(model)
  num_new = None if num_new is None else jnp.asarray(num_new, jnp.int32)
  return _apply(graphdef, state, jnp.asarray(tokens, jnp.int32), cache, num_new)


def _decode_matches_forward(model, tokens, prefix=PREFIX):
  """Prefill `prefix` tokens, then feed one token at a time; compare with the full forward."""
  b, t = tokens.shape
  full = _run(model, tokens)
  out = _run(model, tokens[:, :prefix], cache=init_cache(model.cfg, b, MAX_LEN))
  np.testing.assert_allclose(out.logits, full.logits[:, :prefix], atol=ATOL)
  np.testing.assert_array_equal(out.cache.lengths, [prefix] * b)
  cache = out.cache
  for i in range(prefix, t):
    out = _run(model, tokens[:, i:i + 1], cache=cache)
    np.testing.assert_allclose(out.logits[:, 0], full.logits[:, i], atol=ATOL,
                               err_msg=f"decode step at position {i}")
    if full.values is not None:
      np.testing.assert_allclose(out.values[:, 0], full.values[:, i], atol=ATOL)
    cache = out.cache
  np.testing.assert_array_equal(cache.lengths, [t] * b)


@pytest.mark.slow
def test_prefill_then_decode_matches_forward():
  """The prefill -> one-token decode hand-off: nothing else catches a cache written at the
  wrong offset or rotary positions restarting at 0 after the prompt."""
  _decode_matches_forward(_model(), _tokens((B, T)))


def test_single_token_prefill_matches_forward():
  """Decoding from a one-token prompt: the first cached step has only itself to attend to."""
  _decode_matches_forward(_model(seed=3), _tokens((B, T), seed=5), prefix=1)


def test_batched_forward_equals_per_row_forward():
  """The references below batch several rows in one forward; rows must not interact."""
  model, tokens = _model(), _tokens((B, T))
  batched = _run(model, tokens).logits
  for i in range(B):
    np.testing.assert_allclose(batched[i], _run(model, tokens[i:i + 1]).logits[0], atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("num_kv_heads", [4, 1])
def test_gqa_decode_matches_forward(num_kv_heads):
  """Multi-head (KV == H) and multi-query (KV == 1) attention go through the same grouped
  reshape as the default KV < H; each must agree with its own forward pass when cached."""
  cfg = dataclasses.replace(TINY, num_kv_heads=num_kv_heads)
  _decode_matches_forward(_model(cfg), _tokens((B, T)))


@pytest.mark.parametrize("num_kv_heads", [2, 1])
def test_gqa_equals_mha_with_repeated_kv_heads(num_kv_heads):
  """Query head h must read KV head h // (H / KV) (Hugging Face's `repeat_kv`). A model
  that grouped heads differently would still decode consistently, so compare against an
  MHA model whose K/V weights repeat each KV head; converted checkpoints rely on this."""
  gqa = _model(dataclasses.replace(TINY, num_kv_heads=num_kv_heads))
  mha = _model(dataclasses.replace(TINY, num_kv_heads=TINY.num_heads))
  groups = TINY.num_heads // num_kv_heads
  state = nnx.to_pure_dict(nnx.state(gqa))
  for block in state["blocks"].values():
    for name in ("k", "v"):
      block["attn"][name] = jnp.repeat(block["attn"][name], groups, axis=1)  # [D, KV, Dh]
  nnx.update(mha, state)
  tokens = _tokens((B, T))
  np.testing.assert_allclose(_run(mha, tokens).logits, _run(gqa, tokens).logits, atol=ATOL)


def test_ragged_prefill_then_per_row_decode():
  """Batched prompts of different lengths, right-padded, prefilled with num_new=lengths:
  padding must not leak into any row, and each row must keep decoding from its own length
  (what best-of-N and beam search do after a batched prefill)."""
  model = _model()
  lengths = np.array([4, 2, 1])
  seqs = _tokens((B, T), seed=3)
  prompts = _tokens((B, PREFIX), seed=4)  # random padding, not zeros: a leak shows
  for i, n in enumerate(lengths):
    prompts[i, :n] = seqs[i, :n]
  out = _run(model, prompts, cache=init_cache(TINY, B, MAX_LEN), num_new=lengths)
  np.testing.assert_array_equal(out.cache.lengths, lengths)
  own = [_run(model, seqs[i:i + 1]).logits[0] for i in range(B)]  # each row alone
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(out.logits[i, :n], own[i][:n], atol=ATOL,
                               err_msg=f"prefill of row {i} (length {n})")
  cache, steps = out.cache, T - int(lengths.max())
  for j in range(steps):
    out = _run(model, seqs[np.arange(B), lengths + j][:, None], cache=cache)
    for i, n in enumerate(lengths):
      np.testing.assert_allclose(out.logits[i, 0], own[i][n + j], atol=ATOL,
                                 err_msg=f"row {i} (prompt length {n}), decode step {j}")
    cache = out.cache
  np.testing.assert_array_equal(cache.lengths, lengths + steps)


def test_ragged_chunk_near_cache_end():
  """Appending a ragged chunk (T tokens, num_new[i] real) to rows of different lengths
  must only need cache room for each row's real tokens. Row 1 here has 9 cached tokens and
  1 new one in a 12-slot cache; its padded chunk of 4 would run past the end."""
  model = _model()
  seqs = _tokens((B, T), seed=6)
  lengths, new = np.array([2, 9, 5]), np.array([4, 1, 3])
  cache = _run(model, seqs, cache=init_cache(TINY, B, MAX_LEN), num_new=lengths).cache
  chunk = _tokens((B, PREFIX), seed=7)
  for i in range(B):
    chunk[i, :new[i]] = seqs[i, lengths[i]:lengths[i] + new[i]]
  out = _run(model, chunk, cache=cache, num_new=new)
  full = _run(model, seqs).logits
  for i in range(B):
    np.testing.assert_allclose(out.logits[i, :new[i]], full[i, lengths[i]:lengths[i] + new[i]],
                               atol=ATOL, err_msg=f"row {i}")


def test_gather_rows_then_decode_matches_recompute():
  """Beam search reorders (and duplicates) cache rows with `gather_rows` instead of
  recomputing prefixes; the next step from the gathered cache must equal running the
  selected prefixes from scratch. Rows have different lengths, so a gather that moved
  K/V but not `lengths` (or the reverse) would show."""
  model = _model()
  lengths = np.array([4, 2, 3])
  seqs = _tokens((B, T), seed=7)
  cache = _run(model, seqs[:, :PREFIX], cache=init_cache(TINY, B, MAX_LEN), num_new=lengths).cache
  rows = np.array([2, 0, 2])
  gathered = gather_rows(cache, jnp.asarray(rows))
  np.testing.assert_array_equal(gathered.lengths, lengths[rows])
  nxt = _tokens((B,), seed=8)
  out = _run(model, nxt[:, None], cache=gathered)
  for i, r in enumerate(rows):
    n = lengths[r]
    recompute = np.concatenate([seqs[r, :n], nxt[i:i + 1], seqs[r, n:T - 1]])[None]
    np.testing.assert_allclose(out.logits[i, 0], _run(model, recompute).logits[0, n],
                               atol=ATOL, err_msg=f"beam {i} <- row {r}")


@pytest.mark.slow
def test_value_head_shape_and_cached_values():
  """Verifiers read one value per position: values are float32[B, T], depend on the
  input, and the cached path returns the same values as the forward pass."""
  cfg = dataclasses.replace(TINY, value_head=True)
  model, tokens = _model(cfg), _tokens((B, T))
  out = _run(model, tokens)
  assert out.values.shape == (B, T) and out.values.dtype == jnp.float32
  assert out.logits.shape == (B, T, cfg.vocab_size)
  assert float(jnp.std(out.values)) > 1e-3, "value head output does not depend on the input"
  assert _run(_model(), tokens).values is None
  _decode_matches_forward(model, tokens)


@pytest.mark.slow
def test_attention_bias_is_used_and_decodes():
  """Qwen2-style q/k/v biases: each of the three must change the output (each is applied)
  and cached decoding must still match the forward pass (k bias added before rotary)."""
  model, tokens = _model(dataclasses.replace(TINY, attention_bias=True)), _tokens((B, T))
  with_bias = _run(model, tokens).logits
  _decode_matches_forward(model, tokens)
  for name in ("q_bias", "k_bias", "v_bias"):
    for block in model.blocks:
      bias = getattr(block.attn, name)
      bias[...] = jnp.zeros_like(bias[...])
    without = _run(model, tokens).logits
    assert float(jnp.max(jnp.abs(without - with_bias))) > 1e-2, f"{name} has no effect"
    with_bias = without


@pytest.mark.parametrize("overrides", [
    {},
    dict(tie_embeddings=False),
    dict(value_head=True),
    dict(tie_embeddings=False, value_head=True, attention_bias=True),
    dict(head_dim=12, num_kv_heads=1, num_layers=3),
])
def test_num_params_counts_real_parameters(overrides):
  """FLOPs-matched comparisons multiply by `ModelConfig.num_params`; it must equal the
  parameters the module really creates, for every optional part."""
  cfg = dataclasses.replace(TINY, **overrides)
  model = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  real = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model)))
  assert cfg.num_params == real
  embed = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
  assert cfg.num_non_embedding_params == real - embed


def test_kv_heads_must_divide_heads():
  """num_heads not a multiple of num_kv_heads fails at construction, naming the field,
  instead of a reshape error deep inside attention."""
  with pytest.raises(ValueError, match="num_kv_heads"):
    dataclasses.replace(TINY, num_kv_heads=3)
