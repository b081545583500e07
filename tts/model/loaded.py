"""A model ready for the jitted decode functions: static graphdef, params pytree, config."""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from tts.model.config import ModelConfig
from tts.model.sharding import DecodeSharding
from tts.model.transformer import Transformer


def as_param_dtype(params, cfg: ModelConfig):
  """params (a trainer's float32 masters, say) stored as cfg.param_dtype."""
  dtype = jnp.dtype(cfg.param_dtype)
  return jax.tree.map(lambda p: p if p.dtype == dtype else p.astype(dtype), params)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  graphdef: nnx.GraphDef
  params: dict  # in cfg.param_dtype
  cfg: ModelConfig
  sharding: DecodeSharding | None = None  # the mesh its params and caches live on

  @classmethod
  def create(cls, cfg: ModelConfig, params,
             sharding: DecodeSharding | None = None) -> "LoadedModel":
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
    return cls(graphdef, as_param_dtype(params, cfg), cfg, sharding)
