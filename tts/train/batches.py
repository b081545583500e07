"""Deterministic batches from in-memory arrays, split across hosts.

The batch of step s is a pure function of (seed, s): the data position of a resumed run is
its step, nothing else to save. Each process builds only its own rows and hands them to
`jax.make_array_from_process_local_data`, so the same code runs on one host or a pod.
"""
import math

import jax
import numpy as np
from jax.sharding import NamedSharding


def global_batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Rows of the global batch at `step`: consecutive slices of per-epoch permutations."""
  start = step * batch_size
  rows = []
  while len(rows) < batch_size:
    epoch, offset = divmod(start + len(rows), num_examples)
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    rows.extend(perm[offset:offset + batch_size - len(rows)])
  return np.asarray(rows)


def process_rows(sharding: NamedSharding, batch_size: int) -> slice:
  """The contiguous block of global rows that this process's devices hold."""
  index_map = sharding.addressable_devices_indices_map((batch_size,))
  starts = [idx[0].start or 0 for idx in index_map.values()]
  stops = [batch_size if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
  return slice(min(starts), max(stops))


def make_global_batch(arrays: dict[str, np.ndarray], rows: np.ndarray,
                      sharding: NamedSharding) -> dict[str, jax.Array]:
  """Global jax arrays for `rows` (global indices); this process reads only its share."""
  local = rows[process_rows(sharding, len(rows))]
  return {name: jax.make_array_from_process_local_data(
              sharding, np.ascontiguousarray(value[local]), (len(rows),) + value.shape[1:])
          for name, value in arrays.items()}


def check_split(batch_size: int, grad_accum: int, sharding: NamedSharding, section: str):
  """Every micro-batch splits evenly over the devices that share the batch's rows (the
  trainer keeps each one sharded); otherwise an error naming `section`.batch_size."""
  shards = math.prod(sharding.mesh.shape[a] for a in jax.tree.leaves(tuple(sharding.spec)))
  if batch_size % (grad_accum * shards):
    micro = f" in {grad_accum} micro-batches" if grad_accum > 1 else ""
    raise ValueError(f"{section}.batch_size={batch_size} does not split over the mesh's "
                     f"{shards} batch shards{micro}; pick a multiple of {grad_accum * shards}")

