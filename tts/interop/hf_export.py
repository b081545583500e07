"""Export one of our models as a Hugging Face directory that transformers loads as
`LlamaForCausalLM` and vLLM can serve: model.safetensors, config.json, tokenizer.json and
tokenizer_config.json. A verifier's value head goes to `value_head.safetensors` beside them
(`value_head.weight` [1, d_model], `value_head.bias` [1], applied to the final-normed hidden
state and read through a sigmoid); transformers and vLLM ignore that file, `tts import`
restores it. Import of the exported directory gives back the same parameters bit for bit.
"""
import json
import os
import shutil

import jax
import numpy as np
from safetensors.numpy import save_file

from tts.atomic_files import check_replaceable, write_json_atomic
from tts.data.hf_tokenizer import export_tokenizer
from tts.data.vocab import Tokenizer
from tts.interop.hf_import import SINGLE_FILE
from tts.interop.hf_layout import (VALUE_HEAD_BIAS, VALUE_HEAD_FILE, VALUE_HEAD_WEIGHT, hf_config,
                                   tensor_maps)
from tts.model import LoadedModel

EXPORT_MARKER = "tts_export.json"  # marks a directory this module wrote (and may replace)


def hf_tensors(model: LoadedModel) -> dict[str, np.ndarray]:
  """Our parameters under their HF names and layouts (float32, gathered to this host)."""
  out = {}
  for m in tensor_maps(model.cfg):
    value = model.params
    for key in m.ours:
      value = value[key]
    out[m.hf_name] = np.ascontiguousarray(m.to_hf(np.asarray(jax.device_get(value), np.float32)))
  return out


def export_hf(model: LoadedModel, vocab: Tokenizer, directory: str, max_positions: int = 4096):
  """Writes the HF directory via a temporary sibling that is renamed when complete, so a
  kill never leaves a half-written export. It replaces only an empty directory or an earlier
  export (marked by EXPORT_MARKER)."""
  if vocab.vocab_size > model.cfg.vocab_size:
    raise ValueError(f"the tokenizer has {vocab.vocab_size} tokens but the model only "
                     f"{model.cfg.vocab_size}; export the model with the tokenizer it was "
                     "trained with")
  directory = os.path.abspath(directory)
  check_replaceable(directory, EXPORT_MARKER, "--out")
  tmp = f"{directory}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  save_file(hf_tensors(model), os.path.join(tmp, SINGLE_FILE), metadata={"format": "pt"})
  if model.cfg.value_head:
    weight = np.asarray(jax.device_get(model.params["value_w"]), np.float32).T
    bias = np.asarray(jax.device_get(model.params["value_b"]), np.float32)
    save_file({VALUE_HEAD_WEIGHT: np.ascontiguousarray(weight), VALUE_HEAD_BIAS: bias},
              os.path.join(tmp, VALUE_HEAD_FILE), metadata={"format": "pt"})
  config = hf_config(model.cfg, eos_id=vocab.eos_id, pad_id=vocab.pad_id,
                     bos_id=getattr(vocab, "bos_id", None), max_positions=max_positions)
  with open(os.path.join(tmp, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  export_tokenizer(vocab, tmp)
  write_json_atomic(os.path.join(tmp, EXPORT_MARKER), {"written_by": "tts export"})
  if os.path.exists(directory):
    shutil.rmtree(directory)
  os.replace(tmp, directory)
  return directory
