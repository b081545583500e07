"""`tts plan`: what each model's train and decode steps need per device, before launch.

The real jitted steps (the trainer's train step, the sampler's decode, the verifier's
scoring) are lowered with abstract inputs (ShapeDtypeStructs that carry their shardings:
no weight is allocated) on the config's meshes over fake host devices, and compiled; XLA's
memory analysis of the compiled per-device program gives every size. Parameters,
optimizer state and KV cache are the per-device shards of those inputs; `temp` is XLA's
scratch (activations, gradients, logits); the total is inputs + outputs - aliased
(donated) + temp, where inputs count every argument's shard, also those the program does
not read (XLA prunes them from its own count; the caller holds them anyway). The analysis is XLA:CPU's buffer assignment: a TPU compile fuses, tiles
and pads differently, so read the totals as an estimate of the same program.

Row lengths are bounds from the config: policy rows are data.max_len tokens; a verifier
row a prompt plus label.max_new_tokens; a revision row a prompt plus
revision_data.max_in_context earlier answers and its own; prompts are `prompt_tokens`
(default data.max_len). Decode caches hold a prompt plus the whole solution.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from tts import config_schema
from tts.data.tasks import make_task
from tts.interop.hf_layout import read_model_config
from tts.model import ModelConfig, Transformer, init_cache
from tts.model.config import DTYPE_FIELDS, LAYOUT_FIELDS
from tts.model.sharding import DecodeSharding, make_mesh, param_shardings
from tts.search import sampler, verifier
from tts.search.tree import LIVE_BATCH_MAX
from tts.stages.policy import MODEL_NAMES, model_config
from tts.train import batches
from tts.train.config import TrainConfig
from tts.train.objectives import PACKING_FIELDS, NextTokenLoss, ValueLoss
from tts.train.trainer import Trainer

GIB = 1 << 30
# Every model the plan covers: name -> (shape: a `models` section, or None for the one
# verifiers.base names; trains with: a config section, objective). The revision model and
# its ORM start from the small policy.
TRAINED = {
    "policy.small": ("small", "policy.small", NextTokenLoss),
    "policy.large": ("large", "policy.large", NextTokenLoss),
    "prm": (None, "prm", ValueLoss),
    "orm": (None, "orm", ValueLoss),
    "revision": ("small", "revision", NextTokenLoss),
    "revision_orm": ("small", "revision_orm", ValueLoss),
}
STEP_KINDS = ("train", "decode")  # decode: the test-time stages' decode and scoring steps
INT_FIELDS = ("tokens",) + PACKING_FIELDS  # batch fields of token ids; the rest are float32


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """One compiled step's per-device bytes (XLA's memory analysis)."""
  model: str
  step: str  # train, decode (policy) or score (verifier)
  rows: int
  tokens: int  # row length (train) or cache capacity (decode)
  params: int
  optimizer: int
  kv_cache: int
  inputs: int  # every input's shard: all are held on the device while the step runs
  arguments: int  # XLA's: the inputs the program reads (unused ones are pruned)
  outputs: int
  aliased: int
  temp: int

  @property
  def other_inputs(self) -> int:
    """Inputs besides weights, optimizer state and cache: the batch, tokens, logits."""
    return self.inputs - self.params - self.optimizer - self.kv_cache

  @property
  def total(self) -> int:
    return self.inputs + self.outputs - self.aliased + self.temp


def per_device_bytes(tree) -> int:
  """Bytes of one device's shard of every abstract array in `tree`."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def measure(model: str, step: str, rows: int, tokens: int, compiled, inputs, params,
            optimizer=(), cache=()) -> StepMemory:
  """`inputs`: every abstract argument of the compiled step; params, optimizer and cache:
  the parts of it the table names."""
  stats = compiled.memory_analysis()
  return StepMemory(model, step, rows, tokens, per_device_bytes(params),
                    per_device_bytes(optimizer), per_device_bytes(cache),
                    per_device_bytes(inputs), stats.argument_size_in_bytes,
                    stats.output_size_in_bytes, stats.alias_size_in_bytes,
                    stats.temp_size_in_bytes)


def train_step(name: str, model_cfg: ModelConfig, train_cfg: TrainConfig, objective, mesh,
               rules, tokens: int, packed: bool) -> StepMemory:
  """The trainer's own train step at the config's batch of `tokens`-token rows."""
  trainer = Trainer(model_cfg, train_cfg, objective, mesh, rules)
  rows = train_cfg.batch_size
  batches.check_split(rows, train_cfg.grad_accum, trainer.batch_sharding, name)
  fields = objective.batch_fields + (objective.optional_fields if packed else ())
  batch = {k: jax.ShapeDtypeStruct((rows, tokens), jnp.int32 if k in INT_FIELDS else jnp.float32,
                                   sharding=trainer.batch_sharding) for k in fields}
  state = trainer.abstract_state
  return measure(name, "train", rows, tokens, trainer.compile_train_step(batch),
                 (state, batch), state["params"], state["opt_state"])


def abstract_model(cfg: ModelConfig, sharding: DecodeSharding):
  """(graphdef, params as ShapeDtypeStructs in the decode mesh's shardings)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        nnx.to_pure_dict(state), param_shardings(
                            state, sharding.mesh, sharding.rules, replicate_indivisible=True))
  return graphdef, params


def abstract_cache(cfg: ModelConfig, rows: int, capacity: int, sharding: DecodeSharding):
  cache = jax.eval_shape(lambda: init_cache(cfg, rows, capacity))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=sharding.cache(x.shape) if x.ndim == 4 else
      sharding.rows(x.shape)), cache)


def abstract_rows(shape, dtype, sharding: DecodeSharding):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.rows(shape))


def decode_step(name: str, cfg: ModelConfig, sharding: DecodeSharding, rows: int,
                capacity: int, sampling: sampler.SamplingConfig, max_tokens: int) -> StepMemory:
  """sampler.decode: `rows` rows extended by up to max_tokens tokens in a full cache."""
  graphdef, params = abstract_model(cfg, sharding)
  cache = abstract_cache(cfg, rows, capacity, sharding)
  state = sampler.DecodeState(cache, abstract_rows((rows, cfg.vocab_size), jnp.float32, sharding),
                              abstract_rows((rows,), jnp.int32, sharding))
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), rows))
  keys = abstract_rows(keys.shape, keys.dtype, sharding)
  live = abstract_rows((rows,), jnp.bool_, sharding)
  stop_ids = (0,)  # static: which ids stop a row changes no buffer
  compiled = sampler.decode.lower(graphdef, params, state, keys, live, sampling, stop_ids,
                                  max_tokens, sharding).compile()
  return measure(name, "decode", rows, capacity, compiled, (params, state, keys, live),
                 params, cache=cache)


def score_step(name: str, cfg: ModelConfig, sharding: DecodeSharding, rows: int,
               capacity: int, new_tokens: int) -> StepMemory:
  """verifier.score_tokens: a verifier reads `new_tokens` more tokens per row of its cache."""
  graphdef, params = abstract_model(cfg, sharding)
  cache = abstract_cache(cfg, rows, capacity, sharding)
  row_ints = lambda: abstract_rows((rows,), jnp.int32, sharding)
  inputs = (params, cache, abstract_rows((rows, new_tokens), jnp.int32, sharding), row_ints())
  read_at = row_ints()  # one reading per row, where its step ends, as the search reads
  compiled = verifier.score_tokens.lower(graphdef, *inputs, sharding, "", read_at).compile()
  return measure(name, "score", rows, capacity, compiled, inputs + (read_at,), params,
                 cache=cache)


@dataclasses.dataclass(frozen=True)
class PlanRequest:
  """What to plan on jax's devices: one host's share of them, and per-model shapes."""
  host_devices: int  # devices of one host, where the test-time stages decode
  shapes: dict  # `models` section name -> ModelConfig
  models: tuple[str, ...]  # keys of TRAINED to plan
  prompt_tokens: int
  steps: tuple[str, ...] = STEP_KINDS  # which of STEP_KINDS to compile


def model_for(config, request: PlanRequest, name: str) -> ModelConfig:
  """The ModelConfig `name` (a key of TRAINED) trains and decodes with: its `models` shape
  (verifiers.base's for the PRM and ORM), with a value head if it is a verifier."""
  shape, _, objective = TRAINED[name]
  cfg = request.shapes[shape or config.get("verifiers", {}).get("base", "small")]
  return dataclasses.replace(cfg, value_head=True) if objective is ValueLoss else cfg


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def plan(config, request: PlanRequest) -> list[StepMemory]:
  """Train steps of the requested models, then the decode steps of the test-time stages."""
  devices = jax.devices()
  rules = config.logical_axis_rules
  mesh = make_mesh(config.mesh, devices)
  decoding = DecodeSharding.create(
      make_mesh(config.decode_mesh, devices[:request.host_devices], "decode_mesh"), rules)
  prompt, rev = request.prompt_tokens, config.revision_data
  revision_row = round_up(prompt + (rev.max_in_context + 1) * rev.max_new_tokens, 64)
  row_tokens = {"policy.small": config.data.max_len, "policy.large": config.data.max_len,
                "prm": round_up(prompt + config.label.max_new_tokens, 16),
                "orm": round_up(prompt + config.label.max_new_tokens, 16),
                "revision": revision_row, "revision_orm": revision_row}
  out = []
  for name in request.models if "train" in request.steps else ():
    _, section, objective = TRAINED[name]
    node = config
    for part in section.split("."):
      node = node[part]
    train_cfg = config_schema.build(TrainConfig, node, section)
    packed = objective is NextTokenLoss and (name == "revision" or config.data.pack)
    out.append(train_step(name, model_for(config, request, name), train_cfg, objective(),
                          mesh, rules, row_tokens[name], packed))
  if "decode" not in request.steps:
    return out
  s = config.search
  search_cache = prompt + s.max_new_tokens
  sampling = sampler.SamplingConfig(s.temperature, s.top_k, s.top_p, s.max_new_tokens)
  if "policy.small" in request.models:
    out.append(decode_step("policy.small", model_for(config, request, "policy.small"),
                           decoding, s.rows_per_batch, search_cache, sampling,
                           s.max_step_tokens))
  if "prm" in request.models:
    out.append(score_step("prm", model_for(config, request, "prm"), decoding, s.rows_per_batch,
                          search_cache, s.max_step_tokens))
  if "revision" in request.models:
    r = config.revision_sampling
    revision_cache = prompt + (r.window + 1) * r.max_new_tokens
    out.append(decode_step("revision", model_for(config, request, "revision"), decoding,
                           r.rows_per_batch, revision_cache,
                           sampler.SamplingConfig(r.temperature, max_new_tokens=r.max_new_tokens),
                           r.max_new_tokens))
  return out


def search_total(steps: list[StepMemory]) -> int | None:
  """A search keeps the policy and its verifier on the same devices: while one steps, the
  other's weights and cache stay resident; when few rows are live, they decode in a batch
  of their own (at most LIVE_BATCH_MAX of the rows: that share of both caches more). The
  larger of the two sums plus that batch (None without both)."""
  decode = next((m for m in steps if m.step == "decode" and m.model == "policy.small"), None)
  score = next((m for m in steps if m.step == "score"), None)
  if decode is None or score is None:
    return None
  live_batch = math.ceil(LIVE_BATCH_MAX * (decode.kv_cache + score.kv_cache))
  return max(decode.total + score.params + score.kv_cache,
             score.total + decode.params + decode.kv_cache) + live_batch


def format_bytes(n: int) -> str:
  """Four significant digits in binary units (B, KiB, MiB, GiB)."""
  for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if abs(n) >= size:
      return f"{n / size:.4g} {unit}"
  return f"{n} B"


COLUMNS = ("model", "step", "rows x tokens", "params", "optimizer", "KV cache", "other in",
           "outputs", "aliased", "temp", "total", "fits")


def table(steps: list[StepMemory], hbm_gib: float) -> str:
  """One line per step, per device; `fits`: total <= hbm_gib."""
  lines = [COLUMNS]
  for m in steps:
    lines.append((m.model, m.step, f"{m.rows} x {m.tokens}",
                  *map(format_bytes, (m.params, m.optimizer, m.kv_cache, m.other_inputs,
                                      m.outputs, m.aliased, m.temp, m.total)),
                  "fits" if m.total <= hbm_gib * GIB else "does not fit"))
  widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
  text = "\n".join("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
                   for line in lines)
  both = search_total(steps)
  if both is not None:
    fits = "fits" if both <= hbm_gib * GIB else "does not fit"
    text += (f"\nsearch, policy.small and prm on the same devices (one steps, the other's "
             f"params and KV cache stay; live rows in a batch of their own): "
             f"{format_bytes(both)}, {fits}")
  return text


def model_shapes(config, hf_configs: dict[str, str]) -> dict[str, ModelConfig]:
  """Each `models` section's ModelConfig as a run builds it: from a config.json the way the
  importer reads it (`hf_configs[name]`, else policy.<name>.hf_path) in the dtypes and
  layer layout that `models.<name>` sets (a config.json holds no tensors to read them
  from), else the section with the task's vocabulary."""
  unknown = sorted(set(hf_configs) - set(MODEL_NAMES))
  if unknown:
    raise ValueError(f"--hf-config {unknown[0]}=...: no such model; name one of "
                     f"{', '.join(MODEL_NAMES)} (NAME=PATH; a bare PATH is the small policy)")
  shapes = {}
  for name in MODEL_NAMES:
    path = hf_configs.get(name) or config.policy[name].get("hf_path")
    if path:
      shapes[name] = read_model_config(path).with_precision(
          config.get("models", {}).get(name, {}), f"models.{name}", DTYPE_FIELDS + LAYOUT_FIELDS)
    else:
      shapes[name] = model_config(config, name, make_task(config.task).vocab.vocab_size)
  return shapes
