"""Orbax checkpoints: the resumable train state, and final parameters with their model config.

A train checkpoint holds params, optimizer state, step and the RNG key; the data position
is the step (see `batches`). Orbax writes each step to a temporary directory and renames it
when complete, so a kill mid-save leaves the previous checkpoint intact.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from tts.atomic_files import absolute, exists, is_dir, read_json, write_json_atomic
from tts.model import LoadedModel, ModelConfig, Transformer, layer_layout
from tts.model.loaded import as_param_dtype
from tts.model.sharding import DecodeSharding, param_shardings


class CheckpointMismatchError(ValueError):
  """A stored checkpoint does not fit the model the config describes."""


class CheckpointDamagedError(ValueError):
  """Orbax could not read a stored checkpoint (its bytes are damaged or missing)."""


def _restore(restore, where: str, fix: str):
  """restore(); any failure to read the stored bytes (orbax raises plain Exception) is a
  CheckpointDamagedError naming `where` and the fix."""
  try:
    return restore()
  except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise bare Exception
    reason = str(e).split("\n")[0].split(". See full")[0]
    raise CheckpointDamagedError(f"{where}: the checkpoint cannot be read ({reason}); it is "
                                 f"damaged. {fix}") from None


def _path_name(path) -> str:
  # Orbax stores dict keys as strings: blocks/0/attn/q names the same tensor either way.
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _flat_shapes(tree) -> dict[str, tuple]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_path_name(path): tuple(leaf.shape) for path, leaf in flat}


def check_shapes(stored, expected, where: str):
  """Names the first tensor whose presence or shape differs, and the fix."""
  stored, expected = _flat_shapes(stored), _flat_shapes(expected)
  for name, shape in expected.items():
    if name not in stored:
      raise CheckpointMismatchError(
          f"{where}: tensor {name} is missing from the checkpoint; it was written for a "
          "different model config. Use the config it was trained with, or --force to retrain")
    if tuple(stored[name]) != shape:
      raise CheckpointMismatchError(
          f"{where}: tensor {name} has shape {tuple(stored[name])} in the checkpoint but "
          f"{shape} in the config. Use the config it was trained with, or --force to retrain")
  extra = sorted(set(stored) - set(expected))
  if extra:
    raise CheckpointMismatchError(
        f"{where}: checkpoint has tensor {extra[0]} that the config's model lacks; "
        "use the config it was trained with, or --force to retrain")


class TrainCheckpoints:
  """Keep-last-N, async train-state checkpoints under `directory`."""

  def __init__(self, directory: str, keep: int):
    self.directory = absolute(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict):
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, abstract_state):
    """abstract_state: ShapeDtypeStructs carrying the target shardings; a state saved in
    the other layer layout (ModelConfig.scan_layers) is converted to this one."""
    stored = self.manager.item_metadata(step)["state"]
    where = f"{self.directory}/{step}"
    as_stored = in_stored_layout(stored["params"], abstract_state)
    check_shapes(stored["params"], as_stored["params"], where)
    restored = _restore(lambda: self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(as_stored), meta=ocp.args.JsonRestore())), where,
        f"Delete {where} to resume from the checkpoint before it, or rerun with --force")
    state = to_layout_of(restored["state"], abstract_state)
    check_finite(state["params"], where)
    return state, restored["meta"]

  def reached_preemption(self, step: int) -> bool:
    """All processes agreed to stop at `step` on a preemption notice (multi-process runs;
    every process asks at every step)."""
    return self.manager.reached_preemption(step)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def save_params(directory: str, params, model_cfg: ModelConfig):
  """Final weights, stored as model_cfg.param_dtype, plus `model.json`: the unit later
  stages and `tts export` load."""
  directory = absolute(directory)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(directory, "params"), as_param_dtype(params, model_cfg), force=True)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(directory, "model.json"), dataclasses.asdict(model_cfg))


def is_saved_model(directory: str) -> bool:
  """One of our saved models (model.json; an imported one may keep the checkpoint's
  config.json beside it), or anything but a Hugging Face checkpoint directory (config.json
  alone), whose loading then names what is missing."""
  return (exists(os.path.join(directory, "model.json"))
          or not exists(os.path.join(directory, "config.json")))


def load_model_config(directory: str) -> ModelConfig:
  path = os.path.join(directory, "model.json")
  if not exists(path):
    raise FileNotFoundError(f"{path} not found: {directory} is not a saved model; run the stage "
                            "that trains it first")
  fields = read_json(path)
  try:
    return ModelConfig(**fields)
  except (TypeError, ValueError) as e:
    raise CheckpointMismatchError(f"{path} is not a model config ({e}); rerun the stage that "
                                  "wrote it with --force") from None


def check_finite(params, where: str):
  """Restored weights hold no NaN or infinity (what a damaged checkpoint block gives)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for path, leaf in flat:
    if not bool(jnp.isfinite(leaf).all()):
      raise FloatingPointError(
          f"{where}: tensor {_path_name(path)} holds NaN or infinite values; the checkpoint is "
          "damaged. Rerun the stage that wrote it with --force")


def in_stored_layout(stored_params, abstract):
  """abstract (params or a train state) in the layer layout of the stored params (their
  metadata tree): what orbax restores into."""
  return layer_layout.convert(abstract, layer_layout.is_stacked(stored_params))


def to_layout_of(restored, abstract):
  """Restored values in abstract's layer layout and shardings (a no-op when they match)."""
  target = abstract.get("params", abstract)
  if layer_layout.is_stacked(restored.get("params", restored)) == layer_layout.is_stacked(target):
    return restored
  return jax.jit(lambda tree: layer_layout.convert(tree, layer_layout.is_stacked(target)),
                 out_shardings=jax.tree.map(lambda x: x.sharding, abstract))(restored)


def load_params(directory: str, abstract_params):
  """Restores params into the shardings of `abstract_params` (from either layer layout),
  checking every tensor's shape and that every value is finite."""
  path = os.path.join(absolute(directory), "params")
  if not is_dir(path):
    raise FileNotFoundError(f"{path} not found: the weights of the saved model in {directory} "
                            "are missing; rerun the stage that wrote it with --force")
  with ocp.StandardCheckpointer() as ckpt:
    stored = ckpt.metadata(path).item_metadata.tree
    as_stored = in_stored_layout(stored, abstract_params)
    check_shapes(stored, as_stored, path)
    params = to_layout_of(_restore(lambda: ckpt.restore(path, as_stored), path,
                                   "Rerun the stage that wrote it with --force"),
                          abstract_params)
  check_finite(params, path)
  return params


def load_model(directory: str, sharding: DecodeSharding | None = None) -> LoadedModel:
  """A saved model (see save_params) for decoding: restored straight into the shardings the
  logical-axis rules give on the decode mesh, or onto this process's first device."""
  cfg = load_model_config(directory)
  state = nnx.state(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  if sharding is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, nnx.to_pure_dict(state))
  else:
    shardings = param_shardings(state, sharding.mesh, sharding.rules,
                                replicate_indivisible=True)
  abstract = jax.tree.map(lambda x, where: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where),
                          nnx.to_pure_dict(state), shardings)
  return LoadedModel.create(cfg, load_params(directory, abstract), sharding)
