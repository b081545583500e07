"""The batch order: a pure function of (seed, step) that visits each example once per epoch.

Resumption saves no data-loader state, only the step (`tts.train.batches`); that is only
correct if `global_batch_indices` is deterministic, and training is only unbiased if every
epoch is a permutation, including epochs that start or end in the middle of a batch.
"""
import numpy as np
import pytest

from tts.train import batches
from tts.train.batches import global_batch_indices


def _stream(num_examples, batch_size, steps, seed):
  return np.concatenate([global_batch_indices(num_examples, batch_size, s, seed)
                         for s in range(steps)])


def test_deterministic_in_seed_and_step():
  """Same (seed, step) -> same rows, in any call order (a resumed run asks for step 7
  first); rows are int indices of the right count."""
  first = [global_batch_indices(10, 4, s, seed=3) for s in range(6)]
  again = [global_batch_indices(10, 4, s, seed=3) for s in reversed(range(6))][::-1]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4,) and np.issubdtype(a.dtype, np.integer)


@pytest.mark.parametrize("num_examples,batch_size", [(12, 4), (10, 4), (5, 8), (7, 7)])
def test_each_epoch_is_a_permutation(num_examples, batch_size):
  """Concatenated batches split into consecutive epochs of num_examples rows, each a
  permutation of range(num_examples): no example skipped or repeated, even when batches
  straddle epoch boundaries (10 % 4 != 0) or a batch spans more than one epoch (5 < 8)."""
  epochs = 4
  steps = -(-epochs * num_examples // batch_size)
  stream = _stream(num_examples, batch_size, steps, seed=0)
  for e in range(epochs):
    epoch = stream[e * num_examples:(e + 1) * num_examples]
    np.testing.assert_array_equal(np.sort(epoch), np.arange(num_examples), err_msg=f"epoch {e}")


def test_seeds_and_epochs_reorder():
  """Different seeds give different orders, and successive epochs are reshuffled (a fixed
  order would correlate batches across epochs)."""
  a = _stream(32, 8, 8, seed=0)
  b = _stream(32, 8, 8, seed=1)
  assert not np.array_equal(a[:32], b[:32])
  assert not np.array_equal(a[:32], a[32:64])
  assert np.array_equal(np.sort(a[:32]), np.sort(b[:32]))


def test_micro_batches_that_do_not_split_over_the_mesh_name_the_field():
  """grad_accum keeps each micro-batch sharded, so each must split over the batch shards."""
  from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec
  sharding = NamedSharding(AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor")),
                           PartitionSpec(("data", "fsdp")))
  batches.check_split(16, 4, sharding, "prm")
  with pytest.raises(ValueError, match=r"^prm.batch_size=16 does not split over the mesh's 4 "
                                       r"batch shards in 8 micro-batches; pick a multiple of "
                                       r"32$"):
    batches.check_split(16, 8, sharding, "prm")
