"""One generic sharded trainer: every model in the project trains through `Trainer.fit`.

Objectives differ only in their loss and batch fields (`objectives.py`). The train step is
one `jax.jit` with explicit in/out shardings over the mesh; parameters are sharded by their
logical axis names and the config's rules; the optimizer state follows its parameters.
"""
import dataclasses
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from tts.atomic_files import (append_lines, exists, read_json, read_jsonl, read_text,
                              remove_tree, to_json, write_json_atomic, write_lines_atomic)
from tts.model import ModelConfig, Transformer, layer_layout
from tts.model.sharding import activation_sharding, batch_sharding, param_shardings
from tts.train import batches, checkpoints
from tts.train.checkpoints import TrainCheckpoints
from tts.train.config import TrainConfig
from tts.train.objectives import Objective
from tts.train.preemption import Preempted, PreemptionNotice
from tts.train.summaries import ScalarSummaries

log = logging.getLogger("tts.train")


def make_optimizer(cfg: TrainConfig, decay_mask=None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup then cosine decay, after global-norm clipping; weight decay
  on the parameters `decay_mask` marks True (None: all of them)."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=max(cfg.warmup_steps, 1),
      decay_steps=max(cfg.steps, cfg.warmup_steps + 1), end_value=cfg.lr * cfg.end_lr_fraction)
  tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                   optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                               mask=decay_mask))
  return tx, schedule


def matmul_weights(abstract_state) -> dict:
  """True for the weights that multiply the model dimension (logical axes holding `embed`),
  as a pure dict: attention, MLP, output and value-head matrices. False for norm scales,
  biases and the embedding table (`vocab` first: a lookup, tied or not), which weight decay
  would only pull towards zero (big_vision, MaxText and GPT-2's recipe exclude them)."""
  def is_matmul(var):
    axes = var.get_metadata().get("logical_axes", ())
    return "embed" in axes and axes[0] != "vocab"
  return nnx.to_pure_dict(jax.tree.map(is_matmul, abstract_state,
                                       is_leaf=lambda x: isinstance(x, nnx.Variable)))


def init_params(model_cfg: ModelConfig, seed: int, shardings):
  """Random parameters created directly in their shards (never whole on one device)."""
  def create():
    return nnx.to_pure_dict(nnx.state(Transformer(model_cfg, nnx.Rngs(seed))))
  return jax.jit(create, out_shardings=shardings)()


class Trainer:
  """Holds the compiled train/eval steps for one model, objective and mesh."""

  def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, objective: Objective, mesh,
               rules):
    # float32 master weights whatever model_cfg.param_dtype says (that is the decoding
    # precision, applied when the trained model is loaded: LoadedModel.create).
    self.model_cfg = dataclasses.replace(model_cfg, dropout=cfg.dropout, param_dtype="float32")
    self.cfg, self.objective, self.mesh, self.rules = cfg, objective, mesh, rules
    abstract_model = nnx.eval_shape(lambda: Transformer(self.model_cfg, nnx.Rngs(0)))
    self.graphdef, abstract_state = nnx.split(abstract_model)
    self.param_shardings = param_shardings(abstract_state, mesh, rules)
    self.abstract_params = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        nnx.to_pure_dict(abstract_state), self.param_shardings)
    self.tx, self.schedule = make_optimizer(
        cfg, None if cfg.decay_all_params else matmul_weights(abstract_state))
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(self.tx.init, self.abstract_params)
    opt_shardings = optax.tree_map_params(
        self.tx, lambda _, s: s, abstract_opt, self.param_shardings,
        transform_non_params=lambda _: replicated)
    self.state_shardings = {"params": self.param_shardings, "opt_state": opt_shardings,
                            "step": replicated, "rng": replicated}
    rng = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    self.abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        {"params": self.abstract_params, "opt_state": abstract_opt,
         "step": jax.ShapeDtypeStruct((), jnp.int32), "rng": rng}, self.state_shardings)
    self.batch_sharding = batch_sharding(mesh, rules)
    self._train_step = jax.jit(
        self._step, in_shardings=(self.state_shardings, self.batch_sharding),
        out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
    self._eval_step = jax.jit(
        self._eval, in_shardings=(self.param_shardings, self.batch_sharding),
        out_shardings=replicated)

  def compile_train_step(self, abstract_batch):
    """The train step compiled for these batch shapes without running it or allocating
    the state (`tts plan` reads its memory analysis)."""
    return self._train_step.lower(self.abstract_state, abstract_batch).compile()

  # ---- pure functions, jitted above ----

  def _loss(self, params, batch, key):
    with activation_sharding(self.mesh, self.rules):
      out = self.objective(nnx.merge(self.graphdef, params), batch, key)
    return out.total, out

  def _micro_batches(self, x):
    """[B, ...] -> [grad_accum, B / grad_accum, ...], micro-batch i = rows i, i + grad_accum,
    ...: each device's block of rows splits into its share of every micro-batch, so the
    micro-batches stay sharded like the batch (contiguous slices would gather the batch
    onto the devices that hold each slice)."""
    x = x.reshape((-1, self.cfg.grad_accum) + x.shape[1:]).swapaxes(0, 1)
    spec = PartitionSpec(None, *self.batch_sharding.spec)
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

  def _step(self, state, batch):
    """One optimizer update; grad_accum micro-batches summed exactly before it."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    micro = jax.tree.map(self._micro_batches, batch)
    grad_fn = jax.grad(self._loss, has_aux=True)

    def accumulate(carry, inputs):
      i, micro_batch = inputs
      grads, out = grad_fn(state["params"], micro_batch, jax.random.fold_in(key, i))
      return jax.tree.map(jnp.add, carry, (grads, out)), None

    zero_grads = jax.tree.map(jnp.zeros_like, state["params"])
    zero_out = jax.eval_shape(lambda: grad_fn(state["params"], jax.tree.map(
        lambda x: x[0], micro), key)[1])
    zero_out = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero_out)
    (grads, out), _ = jax.lax.scan(
        accumulate, (zero_grads, zero_out), (jnp.arange(self.cfg.grad_accum), micro))
    weight = jnp.maximum(out.weight, 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
    new_state = {"params": optax.apply_updates(state["params"], updates),
                 "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}
    metrics = {"loss": out.total / weight, "grad_norm": optax.tree.norm(grads),
               "lr": self.schedule(state["step"]), "weight": out.weight,
               **{k: v / weight for k, v in out.metrics.items()}}
    return new_state, metrics

  def _eval(self, params, batch):
    with activation_sharding(self.mesh, self.rules):
      out = self.objective(nnx.merge(self.graphdef, params), batch, None)
    return {"total": out.total, "weight": out.weight, **out.metrics}

  # ---- the loop: side effects live here ----

  def _fields(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays the objective reads: all required ones, and optional ones present."""
    missing = [k for k in self.objective.batch_fields if k not in data]
    if missing:
      raise KeyError(f"{type(self.objective).__name__} needs batch fields {missing}; "
                     f"the data has {sorted(data)}")
    names = self.objective.batch_fields + tuple(
        k for k in self.objective.optional_fields if k in data)
    return {k: data[k] for k in names}

  def new_state(self, params=None):
    """Fresh train state; `params` (e.g. the policy's, for a verifier; either layer
    layout) or random ones."""
    if params is None:
      params = init_params(self.model_cfg, self.cfg.seed, self.param_shardings)
    else:
      params = layer_layout.convert(params, self.model_cfg.scan_layers)
      params = jax.tree.map(lambda p, s: jax.device_put(p, s).astype(jnp.float32), params,
                            self.param_shardings)
    rng = jax.random.key_data(jax.random.key(self.cfg.seed))
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings["opt_state"])(params)
    return {"params": params, "opt_state": opt_state,
            **jax.device_put({"step": jnp.zeros((), jnp.int32), "rng": rng},
                             {k: self.state_shardings[k] for k in ("step", "rng")})}

  def evaluate(self, params, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean loss and metrics over the first eval_batches batches of `data`, in order.

    Batches keep the training shape (one compile); a last partial batch wraps around to the
    first rows, which then count twice.
    """
    n, size = len(next(iter(data.values()))), self.cfg.batch_size
    sums = {}
    for b in range(min(self.cfg.eval_batches, -(-n // size))):
      rows = np.arange(b * size, (b + 1) * size) % n
      out = self._eval_step(params, batches.make_global_batch(
          self._fields(data), rows, self.batch_sharding))
      for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + float(v)
    weight = max(sums.pop("weight"), 1.0)
    return {"loss" if k == "total" else k: v / weight for k, v in sums.items()}

  def fit(self, train_data: dict[str, np.ndarray], workdir: str, val_data=None,
          init_params=None, desc: str = "train"):
    """Trains to cfg.steps, or to the first evaluation at or below cfg.stop_at_val_loss,
    resuming from the latest checkpoint in workdir/checkpoints.

    Returns (params, history): history is the list of eval records.
    """
    cfg = self.cfg
    section = desc.replace("/", ".")  # its config section, for messages: policy.small
    batches.check_split(cfg.batch_size, cfg.grad_accum, self.batch_sharding, section)
    ckpts = TrainCheckpoints(os.path.join(workdir, "checkpoints"), cfg.keep_checkpoints)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    state, start = self.new_state(init_params), 0
    latest = ckpts.latest_step()
    if latest is not None:
      state, _ = ckpts.restore(latest, self.abstract_state)
      start = latest
      log.info("%s: resuming from step %d of %d (%s)", desc, latest, cfg.steps, ckpts.directory)
    _truncate_metrics(metrics_path, start)
    best = BestWeights(os.path.join(workdir, "best")) if cfg.keep_best else None
    num_examples = len(next(iter(train_data.values())))
    fields = self._fields(train_data)
    tokens_per_step = cfg.batch_size * fields["tokens"].shape[1] if "tokens" in fields else 0
    history, is_main = _read_history(metrics_path, start), jax.process_index() == 0
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not is_main, dynamic_ncols=True)
    summaries = ScalarSummaries(workdir) if is_main else None
    tick, tick_step, last_good = time.perf_counter(), start, latest
    notice, preempted = PreemptionNotice(ckpts.reached_preemption), False
    if cfg.stop_at_val_loss and val_data is None:
      raise ValueError(f"{section}.stop_at_val_loss needs validation data to stop on")
    stopped = reached_target(history, cfg.stop_at_val_loss)  # resumed after the stop
    with notice:
      for step in range(start, cfg.steps):
        if cfg.patience and _evals_since_best(history) >= cfg.patience:
          break  # the weights after the next steps would not be used
        if stopped:
          break  # the stop's checkpoint holds the weights
        rows = batches.global_batch_indices(num_examples, cfg.batch_size, step, cfg.seed)
        state, metrics = self._train_step(
            state, batches.make_global_batch(fields, rows, self.batch_sharding))
        done = step + 1
        preempted = notice.requested(done)
        if done == cfg.steps or preempted or any(done % every == 0 for every in (
            cfg.log_every, cfg.eval_every, cfg.checkpoint_every)):
          record = {k: float(v) for k, v in metrics.items()}
          if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
            ckpts.wait()
            bar.close()  # so the error starts a line of its own
            raise FloatingPointError(
                f"{desc}: loss is {record['loss']} (gradient norm {record['grad_norm']}) at step "
                f"{done}; nothing was saved after the "
                f"last good checkpoint (step {last_good}) in {ckpts.directory}. Lower {section}.lr "
                f"(now {cfg.lr}) or {section}.clip_norm, then rerun to resume from it")
          elapsed = time.perf_counter() - tick
          record.update(step=done, tokens_per_s=tokens_per_step * (done - tick_step) / elapsed)
          tick, tick_step = time.perf_counter(), done
          if done % cfg.eval_every == 0 or done == cfg.steps:
            if val_data is not None:
              val = self.evaluate(state["params"], val_data)
              record.update({f"val_{k}": v for k, v in val.items()})
              history.append(record)
              if best is not None and _evals_since_best(history) <= cfg.evals_after_best:
                best.save(done, state["params"], self.model_cfg)
              stopped = reached_target(history[-1:], cfg.stop_at_val_loss)
              if stopped:
                log.info("%s: val loss %.4g <= stop_at_val_loss %g at step %d; stopping",
                         desc, val["loss"], cfg.stop_at_val_loss, done)
          _append_metrics(metrics_path, record)
          if summaries is not None:
            summaries.scalars(done, {k: v for k, v in record.items() if k != "step"})
          bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or preempted or stopped:
          ckpts.save(done, state, {"step": done, "data_position": done * cfg.batch_size,
                                   "seed": cfg.seed})
          last_good = done
        bar.update(1)
        if preempted or stopped:
          break
    bar.close()
    if summaries is not None:
      summaries.close()
    ckpts.wait()
    ckpts.close()
    if preempted and last_good < cfg.steps:
      raise Preempted(f"{desc}: preempted (SIGTERM) at step {last_good} of {cfg.steps}; its "
                      f"state is saved in {ckpts.directory}/{last_good}. Rerun the same "
                      "command to resume from there")
    if best is not None:
      if not history:
        raise ValueError(f"{section}.keep_best needs validation data to pick weights")
      return best.load(self.abstract_params), history
    return state["params"], history


class BestWeights:
  """The weights chosen so far (the best evaluation, or `evals_after_best` after it):
  `best-<step>/` plus a pointer, `best.json`,
  replaced atomically after the new weights are complete, so a kill leaves one good copy."""

  def __init__(self, directory: str):
    self.directory = directory

  def _pointer(self) -> dict | None:
    path = os.path.join(self.directory, "best.json")
    if not exists(path):
      return None
    return read_json(path)

  def save(self, step: int, params, model_cfg):
    old = self._pointer()
    target = os.path.join(self.directory, f"best-{step}")
    checkpoints.save_params(target, params, model_cfg)
    if jax.process_index() == 0:
      write_json_atomic(os.path.join(self.directory, "best.json"), {"step": step})
      stale = os.path.join(self.directory, f"best-{old['step']}") if old else None
      if stale and old["step"] != step and exists(stale):
        remove_tree(stale)

  def load(self, abstract_params):
    pointer = self._pointer()
    return checkpoints.load_params(
        os.path.join(self.directory, f"best-{pointer['step']}"), abstract_params)


def reached_target(history: list[dict], stop_at_val_loss: float) -> bool:
  """Whether an evaluation so far reached the val-loss target (0: no target)."""
  return bool(stop_at_val_loss) and any(h["val_loss"] <= stop_at_val_loss for h in history)


def _evals_since_best(history: list[dict]) -> int:
  """Evaluations since the lowest val loss (ties: the latest counts as the best)."""
  losses = np.asarray([h["val_loss"] for h in history])
  return int(len(losses) - 1 - np.flatnonzero(losses == losses.min())[-1]) if len(losses) else 0


def _read_history(path: str, step: int) -> list[dict]:
  """Eval records up to `step` from metrics.jsonl: a resumed run continues the same
  early-stopping decisions."""
  if not exists(path):
    return []
  return [r for r in read_jsonl(path) if r["step"] <= step and "val_loss" in r]


def _append_metrics(path: str, record: dict):
  if jax.process_index() == 0:
    append_lines(path, [to_json(record, path, sort_keys=True) + "\n"])


def _truncate_metrics(path: str, step: int):
  """On resume, drop records logged after the restored step: they will be logged again."""
  if jax.process_index() != 0 or not exists(path):
    return
  kept = [line + "\n" for line in read_text(path).split("\n")
          if line.strip() and json.loads(line)["step"] <= step]
  write_lines_atomic(path, kept)
