"""Model hyperparameters: one frozen dataclass shared by policy, verifiers and revision model."""
import dataclasses
from typing import ClassVar

DTYPES = ("float32", "bfloat16")
DTYPE_FIELDS = ("param_dtype", "dtype", "cache_dtype")
# What a rematerialised block keeps for the backward pass (jax.checkpoint_policies); the
# rest is recomputed. "none": keep everything (no remat); "full": keep only the block's
# input; "dots": also every matmul output; "dots_no_batch": matmuls without batch
# dimensions (the projections and MLP, not attention's score matmuls).
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
LAYOUT_FIELDS = ("scan_layers", "remat")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A Llama-style decoder. Verifiers set `value_head`; Qwen2 layouts set `attention_bias`."""
  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  d_ff: int
  head_dim: int = 0  # 0: d_model // num_heads
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  attention_bias: bool = False
  value_head: bool = False
  dropout: float = 0.0
  # Precision. param_dtype: the weights as decoded, saved and loaded (training keeps float32
  # master weights whatever it says); dtype: compute (activations, matmul inputs; logits and
  # softmax stay float32); cache_dtype: the KV cache, "" = dtype. bfloat16 halves weights and
  # cache (TPU); greedy tokens then differ from float32 in places (tests/test_model_decode.py).
  param_dtype: str = "float32"
  dtype: str = "float32"
  cache_dtype: str = ""
  # Longest sequence the model is meant for: an imported checkpoint's max_position_embeddings;
  # 0 for ours (RoPE has no position table; `tts export --max_positions` sets the limit).
  max_positions: int = 0
  # Layout and memory. scan_layers: the blocks' weights stacked [L, ...] under a "layers"
  # axis and run by one lax.scan (the compiled graph stops growing with depth; on CPU the
  # unrolled loop is faster, see README); remat: one of REMAT_POLICIES, applied per block.
  scan_layers: bool = False
  remat: str = "none"
  # Fields that must be >= 1 (checked by config_schema.build, which names the section).
  POSITIVE: ClassVar[tuple[str, ...]] = ("vocab_size", "num_layers", "d_model", "num_heads",
                                         "num_kv_heads", "d_ff")

  def __post_init__(self):
    for name in DTYPE_FIELDS:
      value = getattr(self, name)
      if value not in DTYPES and not (name == "cache_dtype" and value == ""):
        raise ValueError(f"model {name}={value!r} is not a supported dtype; use one of "
                         f"{', '.join(DTYPES)}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"model remat={self.remat!r} is not a remat policy; use one of "
                       f"{', '.join(REMAT_POLICIES)}")
    if not self.head_dim:
      object.__setattr__(self, "head_dim", self.d_model // self.num_heads)
    if self.head_dim % 2:
      raise ValueError(
          f"model head_dim={self.head_dim} (d_model / num_heads) is odd; rotary embeddings "
          "rotate pairs of dimensions: pick num_heads so d_model / num_heads is even")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"model.num_heads={self.num_heads} is not a multiple of "
          f"model.num_kv_heads={self.num_kv_heads}; pick num_kv_heads dividing num_heads")

  @property
  def kv_dtype(self) -> str:
    """The KV cache's dtype: cache_dtype, or the compute dtype when that is empty."""
    return self.cache_dtype or self.dtype

  def with_precision(self, overrides, field: str, names=DTYPE_FIELDS) -> "ModelConfig":
    """This config with the fields `names` (DTYPE_FIELDS; LAYOUT_FIELDS too for a plan)
    that `overrides` (a config section) sets to a non-empty value; field names the
    section, for the error."""
    given = {k: overrides[k] for k in names if overrides.get(k)}
    try:
      return dataclasses.replace(self, **given)
    except ValueError as e:
      raise ValueError(f"{field}: {e}") from None

  @property
  def num_params(self) -> int:
    """Parameters, counted analytically (what FLOPs accounting multiplies by)."""
    d, h = self.d_model, self.head_dim
    attn = d * h * (self.num_heads * 2 + self.num_kv_heads * 2)
    if self.attention_bias:
      attn += h * (self.num_heads + 2 * self.num_kv_heads)
    layer = attn + 3 * d * self.d_ff + 2 * d
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * layer + embed + d + (d + 1 if self.value_head else 0)

  @property
  def num_non_embedding_params(self) -> int:
    return self.num_params - self.vocab_size * self.d_model * (1 if self.tie_embeddings else 2)
