"""Where each of our parameters lives in a Hugging Face Llama / Qwen2 checkpoint, and how.

One table serves import and export. Our tensors keep heads as their own axes
(q: [d, heads, head_dim]); Hugging Face stores 2-D `nn.Linear` weights as [out, in]
(q_proj.weight: [heads * head_dim, d]). A `TensorMap` says how to view the HF tensor
(each HF dimension split into groups, e.g. heads * head_dim -> (heads, head_dim)) and
which view axes, in which order, make our tensor. Rotary pairs are (i, i + Dh/2) in both,
so no permutation of head_dim is needed.
"""
import dataclasses
import math
import os

import numpy as np

from tts.atomic_files import read_json
from tts.model.config import ModelConfig

# Hugging Face names of the config.json fields we read and write.
LLAMA_ARCHITECTURE, QWEN2_ARCHITECTURE = "LlamaForCausalLM", "Qwen2ForCausalLM"
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
# Classes whose weights are the causal-LM layout read here (a config may omit the list).
SUPPORTED_ARCHITECTURES = (LLAMA_ARCHITECTURE, "Qwen2ForCausalLM")
# The value head of a verifier: its own file beside the HF checkpoint (transformers ignores
# it); weight [1, d_model] and bias [1] read the final-normed hidden state, as ours does.
VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_WEIGHT, VALUE_HEAD_BIAS = "value_head.weight", "value_head.bias"


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """Our tensor = HF tensor reshaped to `flat(view)`, axes permuted by `perm`.

  view: one tuple per HF dimension, its sizes outer to inner (their product is that
  dimension). perm: for each of our axes, its index among the flattened view axes.
  """
  ours: tuple  # path in our params dict, e.g. ("blocks", 0, "attn", "q")
  hf_name: str
  view: tuple[tuple[int, ...], ...]
  perm: tuple[int, ...]

  @property
  def hf_shape(self) -> tuple[int, ...]:
    return tuple(math.prod(group) for group in self.view)

  @property
  def flat_view(self) -> tuple[int, ...]:
    return tuple(size for group in self.view for size in group)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.flat_view[i] for i in self.perm)

  def to_ours(self, hf_array: np.ndarray) -> np.ndarray:
    return np.transpose(np.reshape(hf_array, self.flat_view), self.perm)

  def to_hf(self, array: np.ndarray) -> np.ndarray:
    return np.reshape(np.transpose(array, np.argsort(self.perm)), self.hf_shape)

  def read(self, get_rows, index: tuple[slice, ...]) -> np.ndarray:
    """Our tensor's block `index` (slices of our axes), reading from the HF tensor only the
    ranges of the outermost view axis of each HF dimension that the block needs.
    get_rows(hf_slices) -> np.ndarray reads a rectangular block of the HF tensor."""
    view_index = [slice(None)] * len(self.flat_view)
    for ours_axis, view_axis in enumerate(self.perm):
      view_index[view_axis] = index[ours_axis]
    hf_slices, in_memory, sizes, first = [], [], [], 0
    for group in self.view:
      inner = math.prod(group[1:])
      outer = range(*view_index[first].indices(group[0]))
      hf_slices.append(slice(outer.start * inner, outer.stop * inner))
      sizes += [len(outer), *group[1:]]
      in_memory += [slice(None), *view_index[first + 1:first + len(group)]]
      first += len(group)
    block = np.reshape(np.asarray(get_rows(tuple(hf_slices))), sizes)[tuple(in_memory)]
    return np.transpose(block, self.perm)


def tensor_maps(cfg: ModelConfig) -> list[TensorMap]:
  """Every parameter of a `Transformer(cfg)` (value head excepted) and its HF tensor."""
  d, h, kv, dh, ff, v = (cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff,
                         cfg.vocab_size)
  maps = [TensorMap(("embed",), "model.embed_tokens.weight", ((v,), (d,)), (0, 1))]
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}.", ("blocks", i)
    attn = hf + "self_attn."
    maps += [
        TensorMap(ours + ("attn_norm", "scale"), hf + "input_layernorm.weight", ((d,),), (0,)),
        TensorMap(ours + ("attn", "q"), attn + "q_proj.weight", ((h, dh), (d,)), (2, 0, 1)),
        TensorMap(ours + ("attn", "k"), attn + "k_proj.weight", ((kv, dh), (d,)), (2, 0, 1)),
        TensorMap(ours + ("attn", "v"), attn + "v_proj.weight", ((kv, dh), (d,)), (2, 0, 1)),
        TensorMap(ours + ("attn", "o"), attn + "o_proj.weight", ((d,), (h, dh)), (1, 2, 0)),
        TensorMap(ours + ("mlp_norm", "scale"), hf + "post_attention_layernorm.weight", ((d,),),
                  (0,)),
        TensorMap(ours + ("mlp", "gate"), hf + "mlp.gate_proj.weight", ((ff,), (d,)), (1, 0)),
        TensorMap(ours + ("mlp", "up"), hf + "mlp.up_proj.weight", ((ff,), (d,)), (1, 0)),
        TensorMap(ours + ("mlp", "down"), hf + "mlp.down_proj.weight", ((d,), (ff,)), (1, 0)),
    ]
    if cfg.attention_bias:
      maps += [
          TensorMap(ours + ("attn", "q_bias"), attn + "q_proj.bias", ((h, dh),), (0, 1)),
          TensorMap(ours + ("attn", "k_bias"), attn + "k_proj.bias", ((kv, dh),), (0, 1)),
          TensorMap(ours + ("attn", "v_bias"), attn + "v_proj.bias", ((kv, dh),), (0, 1)),
      ]
  maps.append(TensorMap(("final_norm", "scale"), "model.norm.weight", ((d,),), (0,)))
  if not cfg.tie_embeddings:
    maps.append(TensorMap(("lm_head",), "lm_head.weight", ((v,), (d,)), (1, 0)))
  return maps


def model_config_from_hf(hf: dict, where: str) -> ModelConfig:
  """Our ModelConfig from a config.json dict (Llama or Qwen2). Qwen2 always has q/k/v
  biases; Llama has them when `attention_bias` is true."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"{where}: model_type={model_type!r} is not supported; import a "
                     f"checkpoint of type {' or '.join(SUPPORTED_MODEL_TYPES)}")
  other = [a for a in hf.get("architectures") or [] if a not in SUPPORTED_ARCHITECTURES]
  if other:
    raise ValueError(f"{where}: architectures={hf['architectures']!r} is not supported; import "
                     f"a checkpoint of class {' or '.join(SUPPORTED_ARCHITECTURES)}")
  rope = hf.get("rope_parameters") or {}
  if hf.get("rope_scaling") or rope.get("rope_type", "default") != "default":
    raise ValueError(f"{where}: rope_scaling={hf.get('rope_scaling') or rope!r} is not "
                     "supported (plain RoPE only); use a checkpoint without RoPE scaling")
  if hf.get("use_sliding_window"):
    raise ValueError(f"{where}: use_sliding_window=true is not supported (full attention only)")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"{where}: hidden_act={hf['hidden_act']!r}; only silu (SwiGLU) is supported")
  if model_type == "llama" and hf.get("mlp_bias"):
    raise ValueError(f"{where}: mlp_bias=true is not supported; our MLP has no biases")
  missing = [k for k in ("vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads",
                         "intermediate_size") if k not in hf]
  if missing:
    raise ValueError(f"{where}: field {missing[0]!r} is missing; it is not a Llama/Qwen2 "
                     "config.json")
  rope_theta = hf.get("rope_theta", rope.get("rope_theta", 10_000.0))
  return ModelConfig(
      vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"], d_model=hf["hidden_size"],
      num_heads=hf["num_attention_heads"],
      num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
      d_ff=hf["intermediate_size"], head_dim=hf.get("head_dim") or 0,
      rope_theta=float(rope_theta), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      attention_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
      max_positions=int(hf.get("max_position_embeddings") or 0))


def read_model_config(path: str) -> ModelConfig:
  """The ModelConfig the importer builds from a checkpoint directory's config.json, or from
  a config.json file on its own (`tts plan --hf-config`: a shape without weights)."""
  file = os.path.join(path, "config.json") if os.path.isdir(path) else path
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file} not found: {path} is neither a Hugging Face checkpoint "
                            "directory (config.json, model.safetensors, tokenizer.json) nor a "
                            "config.json file")
  return model_config_from_hf(read_json(file), file)


def hf_config(cfg: ModelConfig, eos_id: int, pad_id: int, bos_id: int | None,
              max_positions: int, dtype: str = "float32") -> dict:
  """config.json for `cfg`: a Qwen2ForCausalLM when it has q/k/v biases (Llama's
  `attention_bias` would also expect an o_proj bias, which we do not have), else a
  LlamaForCausalLM."""
  config = {
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim, "hidden_act": "silu", "max_position_embeddings": max_positions,
      "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
      "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
      "attention_dropout": 0.0, "tie_word_embeddings": cfg.tie_embeddings,
      "torch_dtype": dtype, "dtype": dtype,
      "eos_token_id": eos_id, "pad_token_id": pad_id, "bos_token_id": bos_id,
      "initializer_range": 0.02, "use_cache": True,
  }
  if cfg.attention_bias:
    return {"architectures": [QWEN2_ARCHITECTURE], "model_type": "qwen2", **config,
            "use_sliding_window": False, "sliding_window": None,
            "max_window_layers": cfg.num_layers}
  return {"architectures": [LLAMA_ARCHITECTURE], "model_type": "llama", **config,
          "attention_bias": False, "mlp_bias": False}
