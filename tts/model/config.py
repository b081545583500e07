"""Model hyperparameters: one frozen dataclass shared by policy, verifiers and revision model."""
import dataclasses
from typing import ClassVar


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
  dtype: str = "float32"  # activations; params stay float32
  # Longest sequence the model is meant for: an imported checkpoint's max_position_embeddings;
  # 0 for ours (RoPE has no position table; `tts export --max_positions` sets the limit).
  max_positions: int = 0
  # Fields that must be >= 1 (checked by config_schema.build, which names the section).
  POSITIVE: ClassVar[tuple[str, ...]] = ("vocab_size", "num_layers", "d_model", "num_heads",
                                         "num_kv_heads", "d_ff")

  def __post_init__(self):
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
