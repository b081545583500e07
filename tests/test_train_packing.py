"""Packing: several examples per row must train exactly as if each had a row of its own."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tts.model import ModelConfig, Transformer
from tts.train.packing import pack


def _sequences(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.integers(3, 32, n).tolist(), [0.0] * 2 + [1.0] * (n - 2)) for n in lengths]


def test_every_sequence_placed_once_and_rows_fit():
  """Nothing else checks that packing neither drops nor duplicates training data."""
  seqs = _sequences([5, 9, 3, 12, 7, 7, 2, 16, 4])
  out = pack(seqs, 16, pad_id=0)
  found = []
  for r in range(out["tokens"].shape[0]):
    for s in range(1, out["segment_ids"][r].max() + 1):
      where = out["segment_ids"][r] == s
      found.append(out["tokens"][r][where].tolist())
      assert out["positions"][r][where].tolist() == list(range(where.sum()))
  assert sorted(found) == sorted(t for t, _ in seqs)
  assert out["loss_mask"].sum() == sum(sum(w) for _, w in seqs)
  assert out["tokens"].shape[0] == 5  # 65 tokens: best-fit decreasing needs 5 rows of 16
  again = pack(seqs, 16, pad_id=0)
  assert all(np.array_equal(out[k], again[k]) for k in out)


@pytest.mark.slow
def test_packed_logits_equal_unpacked():
  """The block-diagonal mask and restarted positions make each segment see only itself."""
  cfg = ModelConfig(vocab_size=32, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                    d_ff=64)
  model = Transformer(cfg, nnx.Rngs(0))
  seqs = _sequences([6, 9, 4, 11])
  out = pack(seqs, 16, pad_id=0)
  packed = model(jnp.asarray(out["tokens"]), positions=jnp.asarray(out["positions"]),
                 segment_ids=jnp.asarray(out["segment_ids"])).logits
  for r in range(out["tokens"].shape[0]):
    for s in range(1, out["segment_ids"][r].max() + 1):
      where = np.flatnonzero(out["segment_ids"][r] == s)
      alone = model(jnp.asarray(out["tokens"][r, where])[None]).logits[0]
      np.testing.assert_allclose(packed[r, where], alone, atol=2e-5, rtol=1e-5)


@pytest.mark.slow
def test_rows_attending_across_examples_are_one_stream():
  """attend_across: a row trains as the concatenation of its examples read as one sequence
  (each example sees those before it, positions run on), with the same placement and loss
  mask as isolated packing."""
  cfg = ModelConfig(vocab_size=32, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                    d_ff=64)
  model = Transformer(cfg, nnx.Rngs(0))
  seqs = _sequences([6, 9, 4, 11])
  isolated, out = pack(seqs, 16, pad_id=0), pack(seqs, 16, pad_id=0, attend_across=True)
  for key in ("tokens", "loss_mask"):
    np.testing.assert_array_equal(out[key], isolated[key])
  np.testing.assert_array_equal(out["segment_ids"], isolated["segment_ids"] > 0)
  packed = model(jnp.asarray(out["tokens"]), positions=jnp.asarray(out["positions"]),
                 segment_ids=jnp.asarray(out["segment_ids"])).logits
  for r in range(out["tokens"].shape[0]):
    used = int((out["segment_ids"][r] > 0).sum())
    np.testing.assert_array_equal(out["positions"][r, :used], np.arange(used))
    stream = model(jnp.asarray(out["tokens"][r, :used])[None]).logits[0]
    np.testing.assert_allclose(packed[r, :used], stream, atol=2e-5, rtol=1e-5)
    assert out["segment_ids"][r].max() == 1
  assert any(isolated["segment_ids"][r].max() > 1 for r in range(len(out["tokens"]))), \
      "no row holds two examples: the test would not see attention across them"
