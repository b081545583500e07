"""The jitted sampler: the policy evaluation (and every search later) stands on it."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tts.model import ModelConfig, Transformer
from tts.search import sampler
from tts.search.sampler import SamplingConfig, pad_prompts, sample

CFG = ModelConfig(vocab_size=16, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64)
STOP = 1


def _model():
  model = Transformer(CFG, nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  return model, graphdef, nnx.to_pure_dict(state)


def _prompts():
  rng = np.random.default_rng(0)
  return [rng.integers(2, 16, n).tolist() for n in (3, 7, 5)]


@pytest.mark.slow
def test_greedy_equals_argmax_of_full_forward():
  """Prefill + cached steps must pick what a from-scratch forward pass would pick."""
  model, graphdef, params = _model()
  prompts = _prompts()
  tokens, lengths = pad_prompts(prompts, pad_id=0)
  cfg = SamplingConfig(temperature=0.0, max_new_tokens=6)
  out = sample(graphdef, params, tokens, lengths, jax.random.split(jax.random.key(0), 3), cfg,
               (STOP,))
  width = max(map(len, prompts)) + cfg.max_new_tokens
  forward = jax.jit(lambda t: model(t).logits[0])  # causal: padding after a position is unseen
  for i, prompt in enumerate(prompts):
    seq = list(prompt)
    for _ in range(int(out.lengths[i])):
      padded = jnp.asarray([seq + [0] * (width - len(seq))])
      seq.append(int(jnp.argmax(forward(padded)[len(seq) - 1])))
      if seq[-1] == STOP:
        break
    assert out.tokens[i, :out.lengths[i]].tolist() == seq[len(prompt):]


@pytest.mark.slow
def test_rows_do_not_depend_on_their_batch():
  """Row b draws with keys[b] only: one row alone gives the same tokens as in a batch."""
  _, graphdef, params = _model()
  prompts = _prompts()
  keys = jax.random.split(jax.random.key(1), 3)
  cfg = SamplingConfig(temperature=1.0, top_k=8, top_p=0.9, max_new_tokens=8)
  tokens, lengths = pad_prompts(prompts, pad_id=0)
  batch = sample(graphdef, params, tokens, lengths, keys, cfg, (STOP,))
  for i, prompt in enumerate(prompts):
    t, n = pad_prompts([prompt], pad_id=0)
    alone = sample(graphdef, params, t, n, keys[i:i + 1], cfg, (STOP,))
    assert int(alone.lengths[0]) == int(batch.lengths[i])
    np.testing.assert_array_equal(alone.tokens[0], batch.tokens[i])
  assert len({tuple(row) for row in np.asarray(batch.tokens)}) > 1


@pytest.mark.slow
def test_stop_token_ends_a_row_and_log_probs_are_recorded():
  """A row stops at a stop id: nothing after it, its length counts the stop token."""
  _, graphdef, params = _model()
  tokens, lengths = pad_prompts(_prompts(), pad_id=0)
  cfg = SamplingConfig(temperature=1.0, max_new_tokens=12)
  stops = tuple(range(2, 16, 2))  # half the vocabulary: rows stop early
  out = sample(graphdef, params, tokens, lengths, jax.random.split(jax.random.key(2), 3), cfg,
               stops)
  for i in range(3):
    n = int(out.lengths[i])
    assert 1 <= n <= 12
    row = out.tokens[i].tolist()
    if n < 12:
      assert row[n - 1] in stops and all(t == 0 for t in row[n:])
    assert not any(t in stops for t in row[:n - 1])
    assert np.all(np.asarray(out.log_probs[i, :n]) < 0) and np.all(out.log_probs[i, n:] == 0)


def test_decode_to_end_on_live_rows_equals_one_call_over_all_rows(monkeypatch):
  """Rows that still run go on in smaller batches; every row's tokens and log-probs are
  those of one decode call over all the rows, and rows not live get nothing."""
  _, graphdef, params = _model()
  rng = np.random.default_rng(3)
  tokens, lengths = pad_prompts([rng.integers(2, 16, n).tolist() for n in rng.integers(2, 9, 40)],
                                pad_id=0)
  keys = jax.random.split(jax.random.key(4), 40)
  cfg = SamplingConfig(temperature=1.0, max_new_tokens=24)
  stops = (2, 3, 4, 5)  # rows stop after a few tokens each, at different times
  live = rng.random(40) < 0.9
  state = lambda: sampler.prefill(graphdef, params, tokens, lengths, tokens.shape[1] + 24)
  _, whole = sampler.decode(graphdef, params, state(), keys, jnp.asarray(live), cfg, stops, 24)
  batches = []
  decode = sampler.decode
  monkeypatch.setattr(sampler, "decode", lambda *a, **k: (batches.append(a[3].shape[0]),
                                                          decode(*a, **k))[1])
  out = sampler.decode_to_end(graphdef, params, state(), keys, live, cfg, stops, smallest=2)
  assert batches[0] == 40 and 1 < len(batches) and max(batches[1:]) <= 32  # compacted
  np.testing.assert_array_equal(out.lengths, np.asarray(whole.lengths))
  assert np.all(out.lengths[~live] == 0) and np.all(out.lengths[live] > 0)
  assert len(set(out.lengths[live].tolist())) > 3
  np.testing.assert_array_equal(out.tokens, np.asarray(whole.tokens))
  np.testing.assert_allclose(out.log_probs, np.asarray(whole.log_probs), atol=1e-6)


@pytest.mark.slow
def test_decode_to_end_on_a_mesh_shrinks_sharded_batches():
  """On 8 devices (rows over data x fsdp), the smaller batches stay multiples of the row
  shards and the tokens equal one call's over every row on the same mesh."""
  helper = os.path.join(os.path.dirname(__file__), "helpers", "decode_to_end_mesh.py")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, helper], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["batches"][0] == 40 and len(result["batches"]) > 1
  assert all(b % 4 == 0 and b < 40 for b in result["batches"][1:])
  assert result["same_tokens"] and result["same_lengths"] and result["distinct_lengths"] > 3
  assert result["max_log_prob_diff"] < 1e-5
