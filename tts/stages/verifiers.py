"""`prm` and `orm` stages: value-head verifiers trained from a policy model's weights.

`verifiers.base` names the policy stage's model they start from: `small` (the paper: the
PRM is the policy's size) or `large` (a verifier larger than the policy, as search-and-learn
pairs 1B and 3B policies with an 8B PRM). The search's FLOPs count the verifier's own size.

Both read the label stage's solutions and hold out the same 10% of questions (early stopping
and evaluation). The PRM learns each step's Monte-Carlo label at the step's last token; the
ORM learns the solution's correctness at its last step's last token. Same trainer as the
policy, another objective (objectives.ValueLoss).
"""
import dataclasses
import os

import jax
import numpy as np
from flax import nnx

from tts import config_schema
from tts.atomic_files import write_json_atomic
from tts.data.tasks import make_task
from tts.model import Transformer
from tts.model.sharding import make_mesh
from tts.stages.label import read_shards
from tts.stages.policy import load_policy
from tts.search import verifier_metrics
from tts.train.checkpoints import save_params
from tts.train.config import TrainConfig
from tts.train.objectives import ValueLoss
from tts.train.trainer import Trainer

KINDS = ("prm", "orm")


def split_questions(records: list[dict], fraction: float, seed: int) -> tuple[set, set]:
  """(train, held-out) question indices: a seeded `fraction` of questions, at least one."""
  questions = sorted({r["question"] for r in records})
  order = np.random.default_rng(seed).permutation(len(questions))
  cut = max(1, int(round(fraction * len(questions))))
  held = {questions[i] for i in order[:cut]}
  return set(questions) - held, held


def value_arrays(records: list[dict], kind: str, pad_id: int, multiple: int = 16) -> dict:
  """Rows of prompt + solution; targets at every step end (prm) or the last one (orm)."""
  longest = max(len(r["prompt_ids"]) + len(r["solution_ids"]) for r in records)
  width = -(-longest // multiple) * multiple
  n = len(records)
  tokens = np.full((n, width), pad_id, np.int32)
  mask = np.zeros((n, width), np.float32)
  target = np.zeros((n, width), np.float32)
  for i, r in enumerate(records):
    seq = r["prompt_ids"] + r["solution_ids"]
    tokens[i, :len(seq)] = seq
    ends = np.asarray(r["step_ends"]) + len(r["prompt_ids"])
    if kind == "orm":
      ends, labels = ends[-1:], np.asarray([float(r["correct"])], np.float32)
    else:
      labels = np.asarray(r["labels"], np.float32)
    mask[i, ends] = 1.0
    target[i, ends] = labels
  return {"tokens": tokens, "value_mask": mask, "value_target": target}


def with_value_head(policy, seed: int):
  """The policy's config and weights, plus a value head (zero-initialised: reads 0.5)."""
  cfg = dataclasses.replace(policy.cfg, value_head=True)
  params = nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(seed))))
  params.update(jax.device_get(policy.params))
  return cfg, params


def predict(model_cfg, params, data: dict, batch_size: int = 64) -> np.ndarray:
  """Value-head probabilities at every marked position, in row-major order."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0))))
  forward = jax.jit(lambda p, t: jax.nn.sigmoid(nnx.merge(graphdef, p)(t).values))
  out = []
  for start in range(0, len(data["tokens"]), batch_size):
    probs = np.asarray(forward(params, data["tokens"][start:start + batch_size]))
    out.append(probs[data["value_mask"][start:start + batch_size] > 0])
  return np.concatenate(out)


def evaluate(model_cfg, params, heldout: dict, records: list[dict]) -> dict:
  """Calibration against the soft targets; AUROC of target >= 0.5 (a step from which the
  policy more often than not still reaches the answer; for the ORM: a right answer); and the
  AUROC of the final reading inside each question with right and wrong solutions (what
  choosing among a question's samples needs; the overall AUROC also rewards ranking
  questions by difficulty). heldout: value_arrays of `records`, one row each."""
  predicted = predict(model_cfg, params, heldout)
  target = heldout["value_target"][heldout["value_mask"] > 0]
  # Readings come row by row; each row's last one is after its solution's last step.
  final = predicted[np.cumsum((heldout["value_mask"] > 0).sum(axis=1)) - 1]
  within = verifier_metrics.within_group_auroc(
      final, np.asarray([r["correct"] for r in records], bool),
      np.asarray([r["question"] for r in records]))
  return {"targets": int(len(target)), "auroc": verifier_metrics.auroc(predicted, target >= 0.5),
          "within_question_auroc": round(float(within.mean()), 4) if len(within) else None,
          "within_question_count": len(within),
          "mean_predicted": round(float(predicted.mean()), 4),
          "mean_target": round(float(target.mean()), 4),
          **verifier_metrics.calibration(predicted, target)}


def fit_value_model(ctx, name: str, kind: str, records: list[dict], init_model,
                    train_cfg: TrainConfig) -> dict:
  """Trains `init_model` plus a value head as a `kind` verifier on `records` (labelled
  solutions: prompt_ids, solution_ids, step_ends, correct, and labels for a PRM) into
  workdir/<name>; a seeded tenth of questions is held out for early stopping and eval.json."""
  cfg = ctx.config
  task = make_task(cfg.task)
  train_q, held_q = split_questions(records, cfg.verifiers.heldout_fraction,
                                    cfg.verifiers.seed)
  pad = task.vocab.pad_id
  train_data = value_arrays([r for r in records if r["question"] in train_q], kind, pad)
  held_records = [r for r in records if r["question"] in held_q]
  heldout = value_arrays(held_records, kind, pad)
  model_cfg, init = with_value_head(init_model, cfg.seed)
  trainer = Trainer(model_cfg, train_cfg, ValueLoss(), make_mesh(cfg.mesh),
                    cfg.logical_axis_rules)
  directory = ctx.stage_dir(name)
  params, history = trainer.fit(train_data, directory, val_data=heldout, init_params=init,
                                desc=name)
  save_params(os.path.join(directory, "final"), params, model_cfg)
  result = {"train_solutions": len(train_data["tokens"]),
            "heldout_solutions": len(heldout["tokens"]),
            "best_val_loss": round(min(h["val_loss"] for h in history), 5),
            "evals": len(history),
            **evaluate(model_cfg, jax.device_get(params), heldout, held_records)}
  if ctx.is_main:
    write_json_atomic(os.path.join(directory, "eval.json"), result)
  return {k: v for k, v in result.items() if k != "bins"}


def train(ctx, kind: str) -> dict:
  """The PRM or ORM from the label stage's solutions and the weights of the policy model
  named by verifiers.base."""
  train_cfg = config_schema.build(TrainConfig, ctx.config[kind], kind)
  records = read_shards(ctx.workdir)
  base = load_policy(ctx.workdir, ctx.config.verifiers.get("base", "small"))
  return fit_value_model(ctx, kind, kind, records, base, train_cfg)


def run_prm(ctx) -> dict:
  return train(ctx, "prm")


def run_orm(ctx) -> dict:
  return train(ctx, "orm")
