"""`policy` stage: train the small policy and the 14x model on the same tokens, then measure
them: greedy accuracy of both on test questions, and the small policy's per-question pass@1
spread (the room test-time compute has to work with).
"""
import functools
import logging
import os

import jax
import numpy as np
from tqdm import tqdm

from tts import config_schema, hosts, pipeline
from tts.atomic_files import write_json_atomic
from tts.data.tasks import make_task
from tts.model import LoadedModel, ModelConfig
from tts.model.sharding import decode_sharding, make_mesh
from tts.search.sampler import SamplingConfig, sample_all
from tts.stages.data import read_split
from tts.train import packing
from tts.train.checkpoints import load_model, save_params
from tts.train.config import TrainConfig
from tts.train.objectives import NextTokenLoss
from tts.train.trainer import Trainer, reached_target

MODEL_NAMES = ("small", "large")
log = logging.getLogger("tts.policy")


def load_policy(workdir: str, name: str = "small", sharding=None):
  """A trained policy (stage `policy`) ready for decoding (on `sharding`'s mesh if given)."""
  return load_model(os.path.join(workdir, "policy", name, "final"), sharding)


def lm_arrays(records: list[dict], max_len: int, pad_id: int, packed: bool,
              attend_across: bool = False) -> dict[str, np.ndarray]:
  """Training rows of prompt then target tokens, the loss on the target only.

  Packed: several examples per row (with segment_ids and positions; attend_across: each
  sees those before it, tts/train/packing.py); else one per row, right-padded. An example
  longer than max_len is an error: dropping it would bias training.
  """
  sequences = [(r["prompt_ids"] + r["target_ids"],
                [0.0] * len(r["prompt_ids"]) + [1.0] * len(r["target_ids"])) for r in records]
  if packed:
    return packing.pack(sequences, max_len, pad_id, attend_across)
  tokens = np.full((len(records), max_len), pad_id, np.int32)
  mask = np.zeros((len(records), max_len), np.float32)
  for i, (seq, weights) in enumerate(sequences):
    if len(seq) > max_len:
      raise ValueError(f"example {records[i]['id']} has {len(seq)} tokens > "
                       f"data.max_len={max_len}; raise data.max_len to at least {len(seq)}")
    tokens[i, :len(seq)] = seq
    mask[i, :len(seq)] = weights
  return {"tokens": tokens, "loss_mask": mask}


def model_config(cfg, name: str, vocab_size: int, **overrides) -> ModelConfig:
  return config_schema.build(ModelConfig, cfg.models[name], f"models.{name}",
                             vocab_size=vocab_size, **overrides)


def pass_rates(task, model: LoadedModel, questions: list[dict], samples: int,
               temperature: float, eval_cfg, seed: int, path: str, desc: str = "",
               show: bool = False) -> np.ndarray:
  """Fraction of `samples` completions per question that the grader accepts: float[Q].
  Each process samples its share of the questions on the model's decode mesh; the shares
  meet in part files beside `path` (tts/hosts.py). Completion i of the repeated questions
  draws with key i of split(key(seed)), whichever process draws it.
  show: a progress bar named `desc` (process 0)."""
  sampling = SamplingConfig(temperature=temperature, max_new_tokens=eval_cfg.max_new_tokens)
  mine = hosts.share(len(questions))
  share = questions[mine.start:mine.stop]
  repeated = [q for q in share for _ in range(samples)]
  keys = jax.random.split(jax.random.key(seed), len(questions) * samples)
  keys = keys[mine.start * samples:mine.stop * samples]
  with tqdm(total=len(repeated), desc=desc, disable=not show) as bar:
    outs = sample_all(model.graphdef, model.params, [q["prompt_ids"] for q in repeated], keys,
                      sampling, (task.vocab.eos_id,), task.vocab.pad_id, eval_cfg.batch_size,
                      progress=bar.update, sharding=model.sharding)
  correct = [bool(task.is_correct(task.vocab.decode(o), q)) for q, o in zip(repeated, outs)]
  records = hosts.all_records(path, [
      {"id": q["id"], "correct": correct[i * samples:(i + 1) * samples]}
      for i, q in enumerate(share)])
  return np.asarray([r["correct"] for r in records], np.float32).mean(axis=1)


def quintile_means(values: np.ndarray) -> list[float]:
  """Mean of `values` in five equal-count bins, easiest (highest) first."""
  order = np.argsort(-values, kind="stable")
  return [float(values[part].mean()) for part in np.array_split(order, 5)]


def import_policy(section, field: str, task, mesh, rules) -> LoadedModel:
  """The Hugging Face checkpoint at section.hf_path as the policy, sharded over the mesh, in
  the section's param_dtype / dtype / cache_dtype where set (else the checkpoint's own) and
  its scan_layers / remat (the layer layout later stages train it in); its
  vocabulary must hold the task tokenizer's ids (task.tokenizer should name the same
  checkpoint)."""
  from tts.interop.hf_import import load_hf_model  # the `hf` extra (safetensors)
  hf_path = section.hf_path
  model = load_hf_model(hf_path, mesh, rules, precision=section, field=field)
  if model.cfg.vocab_size < task.vocab.vocab_size:
    raise ValueError(f"{field}.hf_path={hf_path!r} has {model.cfg.vocab_size} tokens but the task's "
                     f"tokenizer {task.vocab.vocab_size}; set task.tokenizer to the checkpoint")
  return model


def _train(cfg, name: str, task, mesh, directory: str, arrays) -> tuple[LoadedModel, dict]:
  """Trains `models.<name>` with `policy.<name>`; returns it and where training ended: its
  step, validation loss, and whether it reached `stop_at_val_loss` (None: no target)."""
  model_cfg = model_config(cfg, name, task.vocab.vocab_size)
  train_cfg = config_schema.build(TrainConfig, cfg.policy[name], f"policy.{name}")
  trainer = Trainer(model_cfg, train_cfg, NextTokenLoss(), mesh, cfg.logical_axis_rules)
  train, val = arrays()
  params, history = trainer.fit(train, directory, val_data=val, desc=f"policy/{name}")
  target = train_cfg.stop_at_val_loss
  reached = reached_target(history, target) if target else None
  if reached is False:
    log.warning("policy/%s: val loss %.4g after %d steps never reached stop_at_val_loss %g; "
                "the model is less trained than the config declares (raise policy.%s.steps)",
                name, history[-1]["val_loss"], train_cfg.steps, target, name)
  return LoadedModel.create(model_cfg, params), {
      "val_loss": history[-1]["val_loss"], "trained_steps": history[-1]["step"],
      "reached_stop_at_val_loss": reached}


def run(ctx) -> dict:
  """Each model is trained, or imported when `policy.<name>.hf_path` names a Hugging Face
  checkpoint; either way it is saved to policy/<name>/final and evaluated."""
  cfg = ctx.config
  sharding = decode_sharding(cfg.decode_mesh, cfg.logical_axis_rules)  # a bad mesh: say first
  task = make_task(cfg.task)
  mesh = make_mesh(cfg.mesh)
  pad = task.vocab.pad_id
  arrays = functools.cache(lambda: tuple(
      lm_arrays(read_split(ctx.workdir, split), cfg.data.max_len, pad, cfg.data.pack,
                cfg.data.attend_across_examples)
      for split in ("train", "val")))
  test = read_split(ctx.workdir, "test")[:cfg.policy_eval.num_questions]
  summary = {}
  for name in MODEL_NAMES:
    directory = os.path.join(ctx.stage_dir("policy"), name)
    hf_path = cfg.policy[name].get("hf_path")
    if hf_path:
      model = import_policy(cfg.policy[name], f"policy.{name}", task, mesh,
                            cfg.logical_axis_rules)
      trained = {"val_loss": None}
    else:
      model, trained = _train(cfg, name, task, mesh, directory, arrays)
    save_params(os.path.join(directory, "final"), model.params, model.cfg)
    if hf_path and ctx.is_main:
      from tts.interop.hf_import import keep_checkpoint_files
      keep_checkpoint_files(hf_path, os.path.join(directory, "final"))
    pipeline.sync(f"tts: policy/{name} saved")  # every process loads what process 0 wrote
    result = {"params": model.cfg.num_params, **trained,
              **evaluate(ctx, task, name, test, sharding)}
    if ctx.is_main:
      write_json_atomic(os.path.join(directory, "eval.json"), result)
    summary[name] = result
  summary["param_ratio"] = summary["large"]["params"] / summary["small"]["params"]
  return summary


def evaluate(ctx, task, name: str, test: list[dict], sharding) -> dict:
  """Greedy accuracy of policy/<name>/final (the small model also: pass@1 over
  policy_eval.samples samples), loaded onto the decode mesh; processes split the questions."""
  cfg = ctx.config
  model = load_policy(ctx.workdir, name, sharding)
  directory = os.path.join(ctx.stage_dir("policy"), name)
  greedy = pass_rates(task, model, test, 1, 0.0, cfg.policy_eval, cfg.seed,
                      os.path.join(directory, "greedy.jsonl"), f"policy/{name} greedy",
                      ctx.is_main)
  result = {"greedy_accuracy": float(greedy.mean()),
            "greedy_by_difficulty": _by_difficulty(test, greedy)}
  if name == "small":
    rates = pass_rates(task, model, test, cfg.policy_eval.samples, cfg.policy_eval.temperature,
                       cfg.policy_eval, cfg.seed + 1, os.path.join(directory, "pass1.jsonl"),
                       f"policy/{name} pass@1", ctx.is_main)
    result.update(pass1=float(rates.mean()), pass1_by_quintile=quintile_means(rates),
                  pass1_by_difficulty=_by_difficulty(test, rates))
  return result


def _by_difficulty(questions, values) -> dict[str, float]:
  groups = {}
  for q, v in zip(questions, values):
    groups.setdefault(str(q["difficulty"]), []).append(float(v))
  return {k: round(float(np.mean(v)), 4) for k, v in sorted(groups.items(), key=lambda kv: int(kv[0]))}
