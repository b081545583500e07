"""A model ready for the jitted decode functions: static graphdef, params pytree, config."""
import dataclasses

from flax import nnx

from tts.model.config import ModelConfig
from tts.model.sharding import DecodeSharding
from tts.model.transformer import Transformer


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  graphdef: nnx.GraphDef
  params: dict
  cfg: ModelConfig
  sharding: DecodeSharding | None = None  # the mesh its params and caches live on

  @classmethod
  def create(cls, cfg: ModelConfig, params,
             sharding: DecodeSharding | None = None) -> "LoadedModel":
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
    return cls(graphdef, params, cfg, sharding)
