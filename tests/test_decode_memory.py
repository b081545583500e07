"""Decoding memory: logits only where they are read, no second copy of a cache.

At pod scale the [B, T, vocab] logits of a prefill (100 prompts x 400 tokens x a 152k
vocabulary: about 24 GB in float32) and a second copy of the KV cache per call are what
run out of memory; on CPU the same programs show it in their jaxprs and buffer aliasing.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from search_models import loaded, make_decoder, PROMPTS, keys
from tts.model import LoadedModel, ModelConfig, Transformer
from tts.search import methods, sampler, tree, verifier
from tts.search.methods import MethodConfig

# Sizes that no other array of these programs has, so a [B, P, V] one is recognised.
B, P, V, CAPACITY = 3, 11, 37, 16
CFG = ModelConfig(vocab_size=V, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64)


def _model(value_head=False) -> LoadedModel:
  cfg = CFG if not value_head else ModelConfig(**{**CFG.__dict__, "value_head": True})
  return LoadedModel.create(cfg, nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(0)))))


def _prompts():
  lengths = np.asarray([11, 4, 7], np.int32)
  return np.arange(B * P, dtype=np.int32).reshape(B, P) % V, lengths


def _shapes(jaxpr) -> set[tuple]:
  """Every array shape a jaxpr (and the jaxprs inside its calls, loops, branches) makes."""
  out = set()
  for eqn in jaxpr.eqns:
    out |= {tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")}
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out |= _shapes(inner)
  return out


def test_prefills_compute_logits_only_where_read():
  pol, ver = _model(), _model(value_head=True)
  prompts, lengths = _prompts()
  made = {
      "prefill": jax.make_jaxpr(lambda p, t, n: sampler.prefill(
          pol.graphdef, p, t, n, CAPACITY))(pol.params, prompts, lengths),
      "score_prompts": jax.make_jaxpr(lambda p, t, n: verifier.score_prompts(
          ver.graphdef, p, t, n, CAPACITY))(ver.params, prompts, lengths),
      "prefill_branches": jax.make_jaxpr(lambda p, t, n: sampler.prefill_branches(
          pol.graphdef, p, t, n, np.asarray([0, 0, 2, 1]), np.asarray([3, 5, 2, 4]), n,
          CAPACITY))(pol.params, prompts, lengths),
  }
  for name, closed in made.items():
    shapes = _shapes(closed.jaxpr)
    assert (B, P, V) not in shapes and (B * P, V) not in shapes, name
  assert (B, V) in _shapes(made["prefill"].jaxpr)  # the logits it keeps


def _aliased(jitted, *args, **kwargs) -> bool:
  return "input_output_alias" in jitted.lower(*args, **kwargs).compile().as_text()


def test_decode_score_and_reorder_reuse_the_buffers_they_replace():
  """Each call donates the state it replaces: the compiled program aliases its buffers to
  the result, the caller's copy is gone after the call, and nothing warns."""
  pol, ver = _model(), _model(value_head=True)
  prompts, lengths = _prompts()
  cfg = sampler.SamplingConfig(temperature=0.0, max_new_tokens=4)
  live = jnp.ones(B, bool)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # "Some donated buffers were not usable" included
    state = sampler.prefill(pol.graphdef, pol.params, prompts, lengths, CAPACITY)
    args = (pol.graphdef, pol.params, state, keys(B), live, cfg, (1,), 4)
    assert _aliased(sampler.decode, *args)
    new, step = sampler.decode(*args)
    assert all(x.is_deleted() for x in jax.tree.leaves(state))
    moved = sampler.reorder(new, np.asarray([2, 1, 1]))
    assert all(x.is_deleted() for x in jax.tree.leaves(new))
    assert np.asarray(moved.cache.lengths).tolist() == [int(lengths[2] + step.lengths[2])] + [
        int(lengths[1] + step.lengths[1])] * 2
    scored = verifier.score_prompts(ver.graphdef, ver.params, prompts, lengths, CAPACITY)
    args = (ver.graphdef, ver.params, scored.state, step.tokens, step.lengths)
    assert _aliased(verifier.score_tokens, *args)
    verifier.score_tokens(*args)
    assert all(x.is_deleted() for x in jax.tree.leaves(scored.state))
    grown = sampler.grow(moved, 2 * CAPACITY)
    assert grown.cache.max_len == 2 * CAPACITY
    assert all(x.is_deleted() for x in moved.cache.keys + moved.cache.values)


def _count_row_copies(monkeypatch) -> dict:
  calls = {"gather": 0, "move": 0, "put": 0}
  for name, key in (("_gather", "gather"), ("_move_rows", "move"), ("put_rows", "put")):
    original = getattr(sampler, name)
    def counted(*args, original=original, key=key, **kwargs):
      calls[key] += 1
      return original(*args, **kwargs)
    monkeypatch.setattr(sampler, name, counted)
  return calls


@pytest.mark.parametrize("kind, moves", [("best_of_n", False), ("beam", True)])
def test_rows_that_do_not_move_are_not_copied(monkeypatch, kind, moves):
  """Best-of-N rows never move: after the fan-out of the prompts (one gather for the
  policy, one for the verifier) a row is copied only into a batch of the live rows, and
  written back after (a gather per put). Beam search moves rows every round."""
  calls = _count_row_copies(monkeypatch)
  shape = methods.tree_shape(MethodConfig(kind), 4)  # beam: M = sqrt(4) = 2
  results = tree.search(make_decoder(), PROMPTS, keys(len(PROMPTS)), shape)
  assert all(r.candidates for r in results)
  assert calls["gather"] == 2 + calls["put"] and calls["put"] > 0
  assert (calls["move"] > 0) == moves
