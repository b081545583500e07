"""The mesh and the parameter shardings the logical-axis rules give on it.

A rule whose mesh axes do not divide a parameter's dimension used to replicate that
dimension silently: the run compiled, then ran out of memory (or just used more of it) on
the real model. Training now stops with the parameter, the dimension and the axis named;
decoding keeps replicating (any model runs on any decode mesh).
"""
import jax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from tts.model import ModelConfig, Transformer
from tts.model.sharding import MESH_AXES, make_mesh, param_shardings, slice_shapes

RULES = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
         ("kv_heads", "tensor"), ("vocab", "tensor"), ("head_dim", None), ("norm", None))


def _state(vocab_size):
  cfg = ModelConfig(vocab_size=vocab_size, num_layers=1, d_model=32, num_heads=4,
                    num_kv_heads=2, d_ff=64)
  return nnx.state(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))


MESH = AbstractMesh((2, 2, 2), MESH_AXES)


def test_indivisible_rule_names_parameter_dimension_and_axis():
  with pytest.raises(ValueError, match=r"parameter embed dimension 0 \('vocab', size 25\) does "
                                       r"not divide over mesh axis tensor \(size 2\); map "
                                       r"'vocab' to None"):
    param_shardings(_state(25), MESH, RULES)


def test_divisible_rules_shard_and_decoding_replicates_what_does_not_divide():
  assert param_shardings(_state(32), MESH, RULES)["embed"].spec == PartitionSpec("tensor", "fsdp")
  assert param_shardings(_state(25), MESH, RULES, replicate_indivisible=True)[
      "embed"].spec == PartitionSpec(None, "fsdp")


def test_mesh_axes_take_their_shardings_from_the_rules():
  """jax.make_mesh alone makes Explicit axes on newer jax (shardings then enter the types
  of every array); the rules need Auto ones."""
  mesh = make_mesh(dict(data=-1, fsdp=1, tensor=1))
  assert mesh.axis_names == MESH_AXES and mesh.devices.size == jax.device_count()
  assert set(mesh.axis_types) == {AxisType.Auto}


def test_data_axis_spans_slices():
  assert slice_shapes([8, 2, 4], 2) == ([4, 2, 4], [2, 1, 1])
  with pytest.raises(ValueError, match=r"mesh.data=3 must be a multiple of the 2 TPU slices"):
    slice_shapes([3, 1, 1], 2)
