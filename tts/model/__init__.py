"""One model definition for policy, verifiers and revision model."""
from tts.model.config import ModelConfig
from tts.model.kv_cache import KVCache, gather_rows, init_cache, shard_cache
from tts.model.loaded import LoadedModel
from tts.model.transformer import Output, Transformer

__all__ = ["KVCache", "LoadedModel", "ModelConfig", "Output", "Transformer", "gather_rows", "init_cache",
           "shard_cache"]
