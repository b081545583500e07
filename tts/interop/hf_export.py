"""Export one of our models as a Hugging Face directory that transformers and vLLM load:
config.json (`Qwen2ForCausalLM` when the model has q/k/v biases, else `LlamaForCausalLM`),
generation_config.json (eos, pad), the weights in float32 or bfloat16 as model.safetensors,
or as shards with model.safetensors.index.json past `max_shard_bytes`, and the tokenizer
(tokenizer.json, tokenizer_config.json). A verifier's value head goes to
`value_head.safetensors` beside them (`value_head.weight` [1, d_model], `value_head.bias`
[1], float32, applied to the final-normed hidden state and read through a sigmoid);
transformers and vLLM ignore that file, `tts import` restores it. Import of a float32
export gives back the same parameters bit for bit.
"""
import json
import os
import shutil

import jax
import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from tts.atomic_files import check_replaceable, write_json_atomic
from tts.data.hf_tokenizer import export_tokenizer
from tts.data.vocab import Tokenizer
from tts.interop.hf_import import INDEX_FILE, SINGLE_FILE
from tts.interop.hf_layout import (VALUE_HEAD_BIAS, VALUE_HEAD_FILE, VALUE_HEAD_WEIGHT, hf_config,
                                   tensor_maps)
from tts.model import LoadedModel, layer_layout

EXPORT_MARKER = "tts_export.json"  # marks a directory this module wrote (and may replace)
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
MAX_SHARD_BYTES = 5 * 2**30  # transformers' default shard size
DEFAULT_MAX_POSITIONS = 4096  # for our models, which record none (see ModelConfig)
GENERATION_FILE = "generation_config.json"


def hf_tensors(model: LoadedModel, dtype: str = "") -> dict[str, np.ndarray]:
  """Our parameters under their HF names and layouts (gathered to this host), as `dtype`
  (default: the model's param_dtype)."""
  dtype = dtype or model.cfg.param_dtype
  if dtype not in DTYPES:
    raise ValueError(f"export dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
  out, params = {}, layer_layout.convert(model.params, stacked=False)
  for m in tensor_maps(model.cfg):
    value = params
    for key in m.ours:
      value = value[key]
    value = m.to_hf(np.asarray(jax.device_get(value), np.float32))
    out[m.hf_name] = np.ascontiguousarray(value.astype(DTYPES[dtype]))
  return out


def shards(tensors: dict[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
  """Tensors in order, a new shard started when the next would pass `max_bytes` (a tensor
  larger than that gets a shard of its own)."""
  out, size = [{}], 0
  for name, value in tensors.items():
    if out[-1] and size + value.nbytes > max_bytes:
      out.append({})
      size = 0
    out[-1][name] = value
    size += value.nbytes
  return out


def save_weights(tensors: dict[str, np.ndarray], directory: str, max_shard_bytes: int):
  """model.safetensors, or model-0000i-of-0000n.safetensors and their index."""
  parts = shards(tensors, max_shard_bytes)
  if len(parts) == 1:
    save_file(tensors, os.path.join(directory, SINGLE_FILE), metadata={"format": "pt"})
    return
  weight_map = {}
  for i, part in enumerate(parts, start=1):
    filename = f"model-{i:05d}-of-{len(parts):05d}.safetensors"
    save_file(part, os.path.join(directory, filename), metadata={"format": "pt"})
    weight_map.update({name: filename for name in part})
  index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
           "weight_map": weight_map}
  with open(os.path.join(directory, INDEX_FILE), "w") as f:
    json.dump(index, f, indent=2, sort_keys=True)


def export_hf(model: LoadedModel, vocab: Tokenizer, directory: str, dtype: str = "",
              max_positions: int = 0, max_shard_bytes: int = MAX_SHARD_BYTES,
              generation: dict | None = None) -> str:
  """Writes the HF directory via a temporary sibling that is renamed when complete, so a
  kill never leaves a half-written export. It replaces only an empty directory or an earlier
  export (marked by EXPORT_MARKER).

  dtype: of the weights, default the model's param_dtype (what it decodes in).
  max_positions: the model's own (an imported checkpoint's), else this, else
  DEFAULT_MAX_POSITIONS. generation: an imported checkpoint's generation_config.json, whose
  fields are kept (eos and pad are filled in where it has none)."""
  if vocab.vocab_size > model.cfg.vocab_size:
    raise ValueError(f"the tokenizer has {vocab.vocab_size} tokens but the model only "
                     f"{model.cfg.vocab_size}; export the model with the tokenizer it was "
                     "trained with")
  dtype = dtype or model.cfg.param_dtype
  tensors = hf_tensors(model, dtype)
  directory = os.path.abspath(directory)
  check_replaceable(directory, EXPORT_MARKER, "--out")
  tmp = f"{directory}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    save_weights(tensors, tmp, max_shard_bytes)
    if model.cfg.value_head:
      weight = np.asarray(jax.device_get(model.params["value_w"]), np.float32).T
      bias = np.asarray(jax.device_get(model.params["value_b"]), np.float32)
      save_file({VALUE_HEAD_WEIGHT: np.ascontiguousarray(weight), VALUE_HEAD_BIAS: bias},
                os.path.join(tmp, VALUE_HEAD_FILE), metadata={"format": "pt"})
    bos_id = getattr(vocab, "bos_id", None)
    config = hf_config(model.cfg, eos_id=vocab.eos_id, pad_id=vocab.pad_id, bos_id=bos_id,
                       max_positions=model.cfg.max_positions or max_positions
                       or DEFAULT_MAX_POSITIONS, dtype=dtype)
    generation = {"eos_token_id": vocab.eos_id, "pad_token_id": vocab.pad_id,
                  **({"bos_token_id": bos_id} if bos_id is not None else {}),
                  **{k: v for k, v in (generation or {}).items() if v is not None}}
    for name, value in (("config.json", config), (GENERATION_FILE, generation)):
      with open(os.path.join(tmp, name), "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    export_tokenizer(vocab, tmp)
    write_json_atomic(os.path.join(tmp, EXPORT_MARKER), {"written_by": "tts export"})
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)  # ours: never leave a half-written export behind
    raise
  if os.path.exists(directory):
    shutil.rmtree(directory)
  os.replace(tmp, directory)
  return directory
