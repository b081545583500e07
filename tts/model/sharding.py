"""Sharding as data: logical axis names on parameters, rules from the config, one mesh.

The t5x/MaxText convention without t5x: each parameter names its dimensions
(`embed`, `mlp`, `heads`, `kv_heads`, `head_dim`, `vocab`, `norm`), the config maps each
name to a mesh axis (or None), and `param_shardings` turns that into NamedShardings.
"""
import contextlib
import contextvars
import dataclasses
import math
from typing import Sequence

import jax
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None,
              field: str = "mesh") -> Mesh:
  """mesh_cfg has one size per axis in MESH_AXES; one size may be -1 (all remaining devices).
  field: the config section it came from, for the error.

  Devices are laid out by `jax.make_mesh` (on TPU and GPU, onto the chips' physical
  topology); over several TPU slices the data axis spans the slices (only data parallelism
  crosses the slower links between them).
  """
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
  auto = (AxisType.Auto,) * len(MESH_AXES)  # shardings come from the rules, not the types
  num_slices = len({getattr(d, "slice_index", 0) for d in devices})
  if num_slices == 1:
    return jax.make_mesh(sizes, MESH_AXES, axis_types=auto, devices=devices)
  ici, dcn = slice_shapes(sizes, num_slices, field)
  return Mesh(mesh_utils.create_hybrid_device_mesh(ici, dcn, devices), MESH_AXES,
              axis_types=auto)


def slice_shapes(sizes: Sequence[int], num_slices: int, field: str = "mesh"):
  """(within-slice shape, across-slices shape) of a mesh over `num_slices` slices: the data
  axis is split across them, fsdp and tensor stay within each."""
  data = sizes[MESH_AXES.index("data")]
  if data % num_slices:
    raise ValueError(f"{field}.data={data} must be a multiple of the {num_slices} TPU slices "
                     "(only data parallelism spans slices)")
  across = [num_slices if name == "data" else 1 for name in MESH_AXES]
  return [s // a for s, a in zip(sizes, across)], across


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


def param_shardings(abstract_state, mesh: Mesh, rules, replicate_indivisible=False):
  """NamedSharding per parameter of an (abstract) nnx.State, as a pure dict.

  A dimension whose rule names mesh axes that do not divide it is an error naming the
  parameter, the dimension and the axes (training: replicating it silently would run out of
  memory later). Decoding passes replicate_indivisible=True: any model runs on any decode
  mesh, an odd vocabulary or head count whole on each device.
  """
  def one(path, var):
    axes = var.get_metadata().get("logical_axes", (None,) * len(var.shape))
    if replicate_indivisible:
      return NamedSharding(mesh, logical_to_spec(axes, rules, var.shape, mesh))
    spec = logical_to_spec(axes, rules)
    for dim, (name, target) in enumerate(zip(axes, spec)):
      names = (target,) if isinstance(target, str) else tuple(target or ())
      size = math.prod(mesh.shape[n] for n in names)
      if var.shape[dim] % size:
        where = jax.tree_util.keystr(path, simple=True, separator="/")
        raise ValueError(
            f"logical_axis_rules: parameter {where} dimension {dim} ('{name}', size "
            f"{var.shape[dim]}) does not divide over mesh "
            f"axis {' x '.join(names)} (size {size}); map '{name}' to None in "
            f"logical_axis_rules or pick a mesh whose {' x '.join(names)} size divides "
            f"{var.shape[dim]}")
    return NamedSharding(mesh, spec)
  return nnx.to_pure_dict(jax.tree_util.tree_map_with_path(one, abstract_state,
                                                           is_leaf=_is_variable))


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


# The mesh and rules that activations are constrained to while a sharded step is traced.
_ACTIVATION_SHARDING = contextvars.ContextVar("activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules):
  """Within this block, `constrain_activation` pins activations to `mesh` by `rules` (the
  trainer traces its steps inside it; MaxText's logical constraints)."""
  token = _ACTIVATION_SHARDING.set((mesh, tuple(rules)))
  try:
    yield
  finally:
    _ACTIVATION_SHARDING.reset(token)


def constrain_activation(x, axes: Sequence[str | None]):
  """x laid out by the logical `axes` (e.g. batch, length, activation_embed) under the
  enclosing `activation_sharding`; the identity outside one (one device, decoding). Without
  it XLA's partitioner may follow the weights' layout (embed over fsdp) and reshuffle
  activations between the rows split and the feature split at every matmul."""
  current = _ACTIVATION_SHARDING.get()
  if current is None:
    return x
  mesh, rules = current
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(mesh, logical_to_spec(axes, rules, x.shape, mesh)))
