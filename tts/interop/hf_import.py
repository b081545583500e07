"""Import a local Hugging Face checkpoint (Llama or Qwen2 layout) into our Transformer.

A checkpoint directory holds config.json, tokenizer.json and either model.safetensors or
shards named by model.safetensors.index.json. Loading is sharded: each parameter is built
with `jax.make_array_from_callback` in the sharding the logical-axis rules give it, and the
callback reads, through `safe_open(...).get_slice`, only the rows its device needs; a host
touches only its own devices' slices, so a model larger than one host's memory can load.
Precision: a checkpoint stored in bfloat16 stays bfloat16 (ModelConfig.param_dtype, and
dtype for compute and the cache); float32 and float16 ones load as float32; a config's
param_dtype / dtype / cache_dtype, where set, override either.

Verifiers. A directory with `value_head.safetensors` (what `tts export` writes for a PRM or
ORM) imports with that value head. A causal-LM process reward model in the Math-Shepherd
convention imports with `prm_tokens=(good, bad)`: its step score is the probability of the
good token against the bad one as the next token after the step's last token,
softmax([l_good, l_bad])[0] = sigmoid((W_good - W_bad) . h), with h the final-normed hidden
state and W the LM head's rows (Llama/Qwen2 heads have no bias). That is exactly our value
head with weight W_good - W_bad and bias 0, and our search reads every verifier at a step's
last token (its newline), so such a PRM plugs into every search method unchanged. (Math-
Shepherd itself appends a step tag and reads the score there; a PRM trained that way is
read here at the newline instead, which is where its tag would follow.)
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from tts.atomic_files import make_dirs, read_json, write_bytes_atomic
from tts.data.errors import DataError
from tts.interop.hf_layout import (VALUE_HEAD_BIAS, VALUE_HEAD_FILE, VALUE_HEAD_WEIGHT,
                                   TensorMap, read_model_config, tensor_maps)
from tts.model import LoadedModel, ModelConfig, Transformer
from tts.model.config import DTYPE_FIELDS, LAYOUT_FIELDS
from tts.model.sharding import DecodeSharding, param_shardings
from tts.train.checkpoints import CheckpointMismatchError

SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
# Tensors some checkpoints carry that hold no weights of ours (recomputed buffers).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# What an imported model keeps beside its weights: its tokenizer (config.json names the eos
# and pad ids HFTokenizer reads) and generation defaults, so `tts export` needs no config.
CHECKPOINT_FILES = ("config.json", "generation_config.json", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def is_hf_checkpoint(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, "config.json")) and (
      os.path.isfile(os.path.join(directory, SINGLE_FILE))
      or os.path.isfile(os.path.join(directory, INDEX_FILE)))


def open_safetensors(path: str, framework: str):
  """safe_open; a damaged file (truncated, not safetensors) is a DataError naming it."""
  try:
    return safe_open(path, framework)
  except SafetensorError as e:
    raise DataError(f"{path} is not a readable safetensors file ({e}); it is damaged or "
                    "truncated: copy or export it again") from None


def keep_checkpoint_files(hf_dir: str, out: str) -> list[str]:
  """Copies the CHECKPOINT_FILES that `hf_dir` has into `out`; returns their names."""
  kept = [n for n in CHECKPOINT_FILES if os.path.isfile(os.path.join(hf_dir, n))]
  make_dirs(out)
  for name in kept:  # `out` may be in a bucket (a run's workdir)
    with open(os.path.join(hf_dir, name), "rb") as f:
      write_bytes_atomic(os.path.join(out, name), f.read())
  return kept


class SafetensorFiles:
  """The tensors of a checkpoint, by name, across its shard files; opened lazily."""

  def __init__(self, directory: str):
    self.directory = directory
    index = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index):
      weight_map = read_json(index)["weight_map"]
    elif os.path.isfile(os.path.join(directory, SINGLE_FILE)):
      with open_safetensors(os.path.join(directory, SINGLE_FILE), "numpy") as f:
        weight_map = {name: SINGLE_FILE for name in f.keys()}
    else:
      raise FileNotFoundError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}; it is "
                              "not a safetensors checkpoint")
    self.weight_map = weight_map
    self._open = {}

  def _file(self, name: str):
    filename = self.weight_map[name]
    if filename not in self._open:
      # "flax" reads bfloat16 too (numpy has no such dtype); slices come back as jax arrays.
      self._open[filename] = open_safetensors(os.path.join(self.directory, filename), "flax")
    return self._open[filename]

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._file(name).get_slice(name).get_shape())

  def stored_dtype(self, name: str) -> str:
    """The dtype tensor `name` is stored in, as safetensors names it (F32, BF16, F16)."""
    return self._file(name).get_slice(name).get_dtype()

  def read(self, name: str, index=(), dtype=np.float32) -> np.ndarray:
    """Block `index` (a tuple of slices) of tensor `name` as `dtype`; the whole tensor by
    default."""
    part = self._file(name).get_slice(name)
    return np.asarray(part[index] if index else part[:], dtype)


def check_tensors(files: SafetensorFiles, cfg: ModelConfig):
  """Names the first tensor that is missing, mis-shaped or unexpected, and the fix."""
  where = files.directory
  maps = tensor_maps(cfg)
  for m in maps:
    if m.hf_name not in files.weight_map:
      raise CheckpointMismatchError(
          f"{where}: tensor {m.hf_name} is missing from the checkpoint, but config.json needs it "
          "(num_hidden_layers, tie_word_embeddings, attention_bias); the files are incomplete "
          "or config.json belongs to another model")
    shape = files.shape(m.hf_name)
    if shape != m.hf_shape:
      raise CheckpointMismatchError(
          f"{where}: tensor {m.hf_name} has shape {shape} in the checkpoint but config.json "
          f"implies {m.hf_shape}; config.json does not match the weights")
  expected = {m.hf_name for m in maps}
  if cfg.tie_embeddings:
    expected.add("lm_head.weight")  # some tied checkpoints store the copy anyway
  extra = sorted(n for n in files.weight_map
                 if n not in expected and not n.endswith(IGNORED_SUFFIXES))
  if extra:
    raise CheckpointMismatchError(
        f"{where}: tensor {extra[0]} is in the checkpoint but not in a {cfg.num_layers}-layer "
        "Llama/Qwen2 model as config.json describes it; check config.json")


def _at(tree: dict, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _head_rows(files: SafetensorFiles, cfg: ModelConfig, ids: tuple[int, int]) -> np.ndarray:
  """Rows `ids` of the LM head (the embedding when tied): float32[2, d]."""
  name = "model.embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight"
  return np.stack([files.read(name, (slice(i, i + 1), slice(None)))[0] for i in ids])


def value_head_arrays(files: SafetensorFiles, cfg: ModelConfig, prm_token_ids=None):
  """(weight [d, 1], bias [1]) of the checkpoint's verifier head, or None for a plain LM."""
  path = os.path.join(files.directory, VALUE_HEAD_FILE)
  if os.path.isfile(path):
    with open_safetensors(path, "numpy") as f:
      names = set(f.keys())
      for name, shape in ((VALUE_HEAD_WEIGHT, (1, cfg.d_model)), (VALUE_HEAD_BIAS, (1,))):
        if name not in names or tuple(f.get_slice(name).get_shape()) != shape:
          raise CheckpointMismatchError(f"{path}: tensor {name} must exist with shape {shape}")
      return (np.asarray(f.get_tensor(VALUE_HEAD_WEIGHT), np.float32).T,
              np.asarray(f.get_tensor(VALUE_HEAD_BIAS), np.float32))
  if prm_token_ids is None:
    return None
  for i in prm_token_ids:
    if not 0 <= i < cfg.vocab_size:
      raise ValueError(f"{files.directory}: PRM token id {i} is outside the vocabulary "
                       f"(size {cfg.vocab_size})")
  good, bad = _head_rows(files, cfg, tuple(prm_token_ids))
  return (good - bad)[:, None], np.zeros((1,), np.float32)


def load_hf_model(directory: str, mesh=None, rules=(), prm_token_ids=None, precision=None,
                  field: str = "") -> LoadedModel:
  """The checkpoint in `directory` as a LoadedModel, each parameter sharded over `mesh` by
  `rules` (default: this process's first device). prm_token_ids: (good, bad) ids for a
  Math-Shepherd-style PRM (see the module docstring). precision: a config section whose
  param_dtype / dtype / cache_dtype, where set, replace the checkpoint's own (a bfloat16
  checkpoint stays bfloat16 otherwise), and whose scan_layers / remat set the layer layout
  (stacked weights are read layer by layer into their [L, ...] shards); field names that
  section, for the error."""
  files = SafetensorFiles(directory)
  cfg = read_model_config(directory)
  check_tensors(files, cfg)
  # bfloat16 weights are decoded in bfloat16 (weights, compute, cache); others in float32.
  if files.stored_dtype("model.embed_tokens.weight") == "BF16":
    cfg = dataclasses.replace(cfg, param_dtype="bfloat16", dtype="bfloat16")
  if precision:
    cfg = cfg.with_precision(precision, field, DTYPE_FIELDS + LAYOUT_FIELDS)
  head = value_head_arrays(files, cfg, prm_token_ids)
  if head is not None:
    cfg = dataclasses.replace(cfg, value_head=True)
  abstract = nnx.state(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, nnx.to_pure_dict(abstract))
  else:
    shardings = param_shardings(abstract, mesh, rules, replicate_indivisible=True)
  params, dtype = {}, jnp.dtype(cfg.param_dtype)
  def read(m: TensorMap, index):
    return m.read(lambda rows: files.read(m.hf_name, rows, dtype), index)
  stacked = {}  # scan_layers: path in the stacked block -> that tensor's map in each layer
  for m in tensor_maps(cfg):
    if cfg.scan_layers and m.ours[0] == "blocks":
      stacked.setdefault(("blocks",) + m.ours[2:], []).append(m)
    else:
      _set(params, m.ours, jax.make_array_from_callback(
          m.shape, _at(shardings, m.ours), lambda index, m=m: read(m, index)))
  for path, layers in stacked.items():  # block [layers, ...] reads each layer's rows
    _set(params, path, jax.make_array_from_callback(
        (len(layers),) + layers[0].shape, _at(shardings, path),
        lambda index, layers=layers: np.stack([read(m, index[1:]) for m in layers[index[0]]])))
  if head is not None:
    for name, value in zip(("value_w", "value_b"), head):
      params[name] = jax.make_array_from_callback(
          value.shape, shardings[name], lambda index, v=value.astype(dtype): v[index])
  return LoadedModel.create(cfg, params,
                            None if mesh is None else DecodeSharding.create(mesh, rules))
