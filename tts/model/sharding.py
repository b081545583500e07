"""Sharding as data: logical axis names on parameters, rules from the config, one mesh.

The t5x/MaxText convention without t5x: each parameter names its dimensions
(`embed`, `mlp`, `heads`, `kv_heads`, `head_dim`, `vocab`, `norm`), the config maps each
name to a mesh axis (or None), and `param_shardings` turns that into NamedShardings.
"""
import dataclasses
import math
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None,
              field: str = "mesh") -> Mesh:
  """mesh_cfg has one size per axis in MESH_AXES; one size may be -1 (all remaining devices).
  field: the config section it came from, for the error."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(mesh_cfg[name]) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"{field}: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  given = dict(zip(MESH_AXES, sizes))
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"{field} {given}: every axis needs a size >= 1 (or -1: all remaining)")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices) or 0 in sizes:
    hint = (f"the axes other than the -1 one multiply to {known}, which must divide "
            f"{len(devices)}" if -1 in given.values()
            else f"set --config.{field}.data=-1 to use all of them")
    raise ValueError(f"{field} {given} does not fit the {len(devices)} visible devices; {hint}")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], rules, shape=None, mesh: Mesh | None = None):
  """Maps logical names to a PartitionSpec. A dimension the mesh axes do not divide is
  replicated instead (tiny vocabularies, odd head counts), so any config runs on any mesh."""
  table = {name: mesh_axes for name, mesh_axes in rules}
  spec = []
  for i, name in enumerate(axes):
    target = table.get(name) if name is not None else None
    if target is not None and shape is not None and mesh is not None:
      names = (target,) if isinstance(target, str) else tuple(target)
      if shape[i] % math.prod(mesh.shape[n] for n in names):
        target = None
    spec.append(target)
  return PartitionSpec(*spec)


def _is_variable(x):
  return isinstance(x, nnx.Variable)


def param_shardings(abstract_state, mesh: Mesh, rules):
  """NamedSharding per parameter of an (abstract) nnx.State, as a pure dict."""
  def one(var):
    axes = var.get_metadata().get("logical_axes", (None,) * len(var.shape))
    return NamedSharding(mesh, logical_to_spec(axes, rules, var.shape, mesh))
  return nnx.to_pure_dict(jax.tree.map(one, abstract_state, is_leaf=_is_variable))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Rows of a batch split over the axes the rules give for `batch`; other dims replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",), rules))


# Logical axes of a KV-cache slab [B, KV, S, Dh]: rows over the batch axes, KV heads over
# the tensor axis (the rules decide), positions and head dims whole on each device.
CACHE_AXES = ("batch", "kv_heads", None, "head_dim")


@dataclasses.dataclass(frozen=True)
class DecodeSharding:
  """Where test-time compute lives: a mesh of this host's devices and the logical-axis
  rules. Hashable, so jitted decode functions take it as a static argument and pin their
  caches and row arrays to it; each host decodes its own share of the questions."""
  mesh: Mesh
  rules: tuple

  @classmethod
  def create(cls, mesh: Mesh, rules) -> "DecodeSharding":
    """Rules as nested tuples (a config may hold lists), so the object hashes."""
    as_tuple = lambda axes: tuple(axes) if isinstance(axes, (list, tuple)) else axes
    return cls(mesh, tuple((name, as_tuple(axes)) for name, axes in rules))

  def cache(self, shape) -> NamedSharding:
    return NamedSharding(self.mesh, logical_to_spec(CACHE_AXES, self.rules, shape, self.mesh))

  @property
  def row_shards(self) -> int:
    """How many ways rows are split: a batch of a multiple of this many is split evenly."""
    names = dict(self.rules).get("batch") or ()
    names = (names,) if isinstance(names, str) else names
    return math.prod(self.mesh.shape[n] for n in names)

  def rows(self, shape) -> NamedSharding:
    """An array whose first dimension is rows (tokens, logits, lengths)."""
    axes = ("batch",) + (None,) * (len(shape) - 1)
    return NamedSharding(self.mesh, logical_to_spec(axes, self.rules, shape, self.mesh))


def decode_sharding(mesh_cfg, rules) -> DecodeSharding:
  """The config's mesh over this host's devices (jax.local_devices()), for decoding."""
  try:
    mesh = make_mesh(mesh_cfg, jax.local_devices(), "decode_mesh")
  except ValueError as e:
    raise ValueError(f"{e} (test-time stages use this host's {jax.local_device_count()} "
                     "devices; hosts split the questions)") from None
  return DecodeSharding.create(mesh, rules)


def constrain(x, sharding: NamedSharding | None):
  """with_sharding_constraint when decoding is sharded; identity on one device."""
  return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)
