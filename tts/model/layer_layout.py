"""The two layouts of a model's layer weights, and the conversion between them.

Unrolled (ModelConfig.scan_layers=False): params["blocks"] = {0: block, 1: block, ...}, one
dict of arrays per layer. Stacked (scan_layers=True): params["blocks"] = one block dict
whose arrays carry a leading [L] axis, the logical axis LAYERS_AXIS. Layer i of the
stacked form is exactly block i of the unrolled one, so a checkpoint of either form loads
into a model of the other (tts.train.checkpoints) and exports to the same HF tensors.
"""
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

LAYERS_AXIS = "layers"


def is_stacked(params) -> bool:
  """params["blocks"] is one stacked block: its keys name modules, not layer numbers
  (orbax's metadata spells layer numbers as strings)."""
  return not all(str(k).isdigit() for k in params["blocks"])


def _is_params(node) -> bool:
  return isinstance(node, dict) and "blocks" in node and "embed" in node


def _with_spec(sharding, edit):
  if not isinstance(sharding, NamedSharding):
    return sharding  # one device: the same either way
  return NamedSharding(sharding.mesh, PartitionSpec(*edit(tuple(sharding.spec))))


def _stack(*layers):
  first = layers[0]
  if isinstance(first, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(layers),) + first.shape, first.dtype,
                                sharding=_with_spec(first.sharding, lambda s: (None,) + s))
  return jnp.stack(layers)


def _layer(stacked, i: int):
  if isinstance(stacked, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(stacked.shape[1:], stacked.dtype,
                                sharding=_with_spec(stacked.sharding, lambda s: s[1:]))
  return stacked[i]


def convert(tree, stacked: bool):
  """Every params dict in `tree` (params themselves, or a train state holding them and
  their optimizer moments) in the stacked or the unrolled layout. Leaves are arrays, or
  ShapeDtypeStructs whose NamedShardings gain or lose the leading layers dimension."""
  def one(node):
    if not _is_params(node) or is_stacked(node) == stacked:
      return node
    blocks = node["blocks"]
    if stacked:
      new = jax.tree.map(_stack, *(blocks[k] for k in sorted(blocks, key=int)))
    else:
      num_layers = jax.tree.leaves(blocks)[0].shape[0]
      new = {i: jax.tree.map(lambda x, i=i: _layer(x, i), blocks) for i in range(num_layers)}
    return {**node, "blocks": new}
  return jax.tree.map(one, tree, is_leaf=_is_params)
