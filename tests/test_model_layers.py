"""Scanned layers, remat and fused attention against the unrolled model they replace.

`scan_layers` stacks the blocks' weights [L, ...] and runs them under lax.scan, `remat`
recomputes activations in the backward pass, and full-sequence attention goes through
jax.nn.dot_product_attention. None of these may change what the model computes, and a
model saved in one layer layout must load into the other (a run that changes
scan_layers resumes its checkpoints; a stacked model exports the same HF tensors). These
tests pin each to the unrolled float32 model: forward, gradients under dropout with
packed rows, cached decoding, checkpoints, export.

Tolerances: float32 on CPU; scan and remat change only fusion and summation order
(observed max |diff| ~2e-6 on logits, ~6e-5 on gradients of a summed loss of magnitude
~1e2); a layer applied twice, skipped or given another layer's weights or dropout key
moves them by O(0.1 .. 1).
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tts.interop.hf_export import hf_tensors
from tts.model import LoadedModel, ModelConfig, Transformer, init_cache, layer_layout
from tts.model.sharding import make_mesh
from tts.model.transformer import full_attention
from tts.train import checkpoints
from tts.train.config import TrainConfig
from tts.train.objectives import NextTokenLoss
from tts.train.trainer import Trainer

UNROLLED = ModelConfig(vocab_size=32, num_layers=3, d_model=32, num_heads=4, num_kv_heads=2,
                       d_ff=64, dropout=0.1)
STACKED = dataclasses.replace(UNROLLED, scan_layers=True)
B, T = 2, 12


def _params(cfg, seed=0):
  return nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(seed))))


def _packed_batch():
  """Tokens with two segments per row; positions restart in each segment."""
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, UNROLLED.vocab_size, (B, T)), jnp.int32)
  segment_ids = jnp.asarray([[1] * 5 + [2] * 7, [1] * 8 + [2] * 4], jnp.int32)
  positions = jnp.asarray([list(range(5)) + list(range(7)), list(range(8)) + list(range(4))],
                          jnp.int32)
  return tokens, positions, segment_ids


def _loss_and_grads(cfg, params):
  """The logits' weighted sum and its gradient, with dropout, on packed rows."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  tokens, positions, segment_ids = _packed_batch()
  weights = jax.random.normal(jax.random.key(2), (B, T, cfg.vocab_size))
  def loss(params):
    out = nnx.merge(graphdef, params)(tokens, dropout_key=jax.random.key(3),
                                      positions=positions, segment_ids=segment_ids)
    return jnp.sum(out.logits * weights)
  return jax.jit(jax.value_and_grad(loss))(params)


def _assert_trees_close(a, b, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                       atol=atol, rtol=0), a, b)


def test_stacked_weights_are_the_unrolled_weights():
  """The same seed gives the same random model in both layouts (layer i of the stack is
  block i), so switching scan_layers on changes no initial weight; the stacked weights
  carry the `layers` logical axis first (replicated by rules that do not name it)."""
  stacked = _params(STACKED)
  _assert_trees_close(layer_layout.convert(_params(UNROLLED), True), stacked, atol=0)
  _assert_trees_close(layer_layout.convert(stacked, False), _params(UNROLLED), atol=0)
  q = nnx.state(nnx.eval_shape(lambda: Transformer(STACKED, nnx.Rngs(0))))["blocks"]["attn"]["q"]
  assert q.get_metadata()["logical_axes"] == ("layers", "embed", "heads", "head_dim")
  assert q.shape == (3, 32, 4, 8)


@pytest.mark.parametrize("remat", ["none", "full", "dots_no_batch"])
def test_scanned_layers_equal_unrolled(remat):
  """Loss and every gradient of the scanned model (each remat policy) equal the unrolled
  model's, with dropout on and packed rows."""
  params = _params(UNROLLED)
  loss, grads = _loss_and_grads(UNROLLED, params)
  scanned = dataclasses.replace(STACKED, remat=remat)
  scan_loss, scan_grads = _loss_and_grads(scanned, layer_layout.convert(params, True))
  np.testing.assert_allclose(scan_loss, loss, rtol=1e-5)
  _assert_trees_close(layer_layout.convert(scan_grads, False), grads, atol=1e-3)
  assert float(jnp.abs(grads["blocks"][2]["mlp"]["down"]).max()) > 1.0  # not vacuous


def test_stacked_model_decodes_like_unrolled():
  """Decoding a stacked model (a cache per layer, layer i's weights sliced from the stack)
  gives the unrolled model's logits and cache, prefill and a step after it."""
  params = _params(UNROLLED)
  tokens = jnp.asarray(np.random.default_rng(4).integers(0, 32, (B, 6)), jnp.int32)
  outs = []
  for cfg, p in ((UNROLLED, params), (STACKED, layer_layout.convert(params, True))):
    graphdef = nnx.graphdef(nnx.eval_shape(lambda cfg=cfg: Transformer(cfg, nnx.Rngs(0))))
    @jax.jit
    def decode(p, tokens, graphdef=graphdef, cfg=cfg):
      model = nnx.merge(graphdef, p)
      first = model(tokens[:, :5], cache=init_cache(cfg, B, 8))
      second = model(tokens[:, 5:], cache=first.cache)
      return first.logits, second.logits, second.cache
    outs.append(decode(p, tokens))
  _assert_trees_close(outs[1], outs[0], atol=1e-5)


def _reference_attention(q, k, v, positions, segment_ids):
  """Softmax(q k^T / sqrt(Dh)) v under an explicit mask: key position <= query position
  within the query's segment. q: [B, T, H, Dh]; k, v: [B, T, KV, Dh]."""
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  scores = jnp.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5
  visible = ((positions[:, None, :] <= positions[:, :, None])
             & (segment_ids[:, None, :] == segment_ids[:, :, None]))
  scores = jnp.where(visible[:, None], scores, -jnp.inf)
  return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, axis=-1), v)


def test_full_attention_equals_explicit_masked_softmax():
  """jax.nn.dot_product_attention with is_causal and the segment mask computes the
  attention the model defined before it (causal by position, within a segment), grouped
  query heads included; a mask across segments or an off-by-one would move it by O(0.1)."""
  rng = np.random.default_rng(5)
  q = jnp.asarray(rng.normal(size=(B, T, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(B, T, 2, 8)), jnp.float32) for _ in range(2))
  _, positions, segment_ids = _packed_batch()
  expected = _reference_attention(q, k, v, positions, segment_ids)
  np.testing.assert_allclose(full_attention(q, k, v, segment_ids), expected, atol=1e-5)
  unpacked = _reference_attention(q, k, v, jnp.broadcast_to(jnp.arange(T), (B, T)),
                                  jnp.zeros((B, T), jnp.int32))
  np.testing.assert_allclose(full_attention(q, k, v), unpacked, atol=1e-5)
  assert float(jnp.abs(expected - unpacked).max()) > 0.1  # the segment mask matters here


def test_full_attention_in_bfloat16_keeps_float32_scores():
  """bfloat16 compute (the option cuDNN's kernel needs): scores and softmax stay float32,
  so the output is within bfloat16 rounding of the float32 attention: measured max |diff|
  0.011 on outputs up to 2.3 (inputs, probabilities and output each rounded to 8 bits)."""
  rng = np.random.default_rng(7)
  q = jnp.asarray(rng.normal(size=(B, T, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(B, T, 2, 8)), jnp.float32) for _ in range(2))
  _, _, segment_ids = _packed_batch()
  low = full_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), segment_ids)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), full_attention(q, k, v, segment_ids),
                             atol=3e-2)


@pytest.mark.parametrize("saved_cfg,loaded_cfg", [(UNROLLED, STACKED), (STACKED, UNROLLED)])
def test_saved_params_load_into_the_other_layout(tmp_path, saved_cfg, loaded_cfg):
  """Final weights saved by a model of one layout load into a model of the other."""
  params = _params(saved_cfg)
  checkpoints.save_params(str(tmp_path), params, saved_cfg)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          _params(loaded_cfg))
  loaded = checkpoints.load_params(str(tmp_path), abstract)
  _assert_trees_close(loaded, layer_layout.convert(params, loaded_cfg.scan_layers), atol=0)


def test_train_state_resumes_in_the_other_layout(tmp_path):
  """A train checkpoint (params and Adam's moments) written unrolled restores into a
  scanned trainer's state, every moment moved with its parameter."""
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  train_cfg = TrainConfig(steps=1, batch_size=2)
  rules = (("batch", ("data", "fsdp")),)
  unrolled = Trainer(UNROLLED, train_cfg, NextTokenLoss(), mesh, rules)
  stacked = Trainer(STACKED, train_cfg, NextTokenLoss(), mesh, rules)
  tokens = np.random.default_rng(6).integers(0, 32, (2, T)).astype(np.int32)
  batch = {"tokens": tokens, "loss_mask": np.ones((2, T), np.float32)}
  state, _ = unrolled._train_step(unrolled.new_state(), batch)  # Adam moments non-zero
  store = checkpoints.TrainCheckpoints(str(tmp_path / "checkpoints"), keep=1)
  store.save(1, state, {"step": 1})
  store.wait()
  restored, _ = store.restore(1, stacked.abstract_state)
  store.close()
  expected = layer_layout.convert(jax.device_get(state), True)
  _assert_trees_close(jax.device_get(restored), expected, atol=0)
  mu = restored["opt_state"][1][0].mu["blocks"]["mlp"]["gate"]
  assert mu.shape == (3, 32, 64) and float(jnp.abs(mu).max()) > 0


def test_stacked_model_exports_the_same_hf_tensors():
  """HF export unstacks: a stacked model's tensors equal the unrolled model's."""
  params = _params(UNROLLED)
  ours = hf_tensors(LoadedModel.create(UNROLLED, params))
  stacked = hf_tensors(LoadedModel.create(STACKED, layer_layout.convert(params, True)))
  assert sorted(stacked) == sorted(ours)
  for name, value in ours.items():
    np.testing.assert_array_equal(stacked[name], value)


def test_unknown_remat_policy_is_named():
  with pytest.raises(ValueError, match="remat='some'.*none, full, dots, dots_no_batch"):
    dataclasses.replace(UNROLLED, remat="some")
