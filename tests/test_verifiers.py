"""Verifier training pieces: targets only at step ends, early stopping, calibration, AUROC."""
import json
import os

import jax
import numpy as np
import pytest

from tts.model import ModelConfig
from tts.model.sharding import make_mesh
from tts.stages import verifiers
from tts.search import verifier_metrics
from tts.train.config import TrainConfig
from tts.train.objectives import ValueLoss
from tts.train.trainer import Trainer, _evals_since_best

RECORD = {"question": 0, "prompt_ids": [5, 6, 7], "solution_ids": [8, 3, 9, 9, 3, 4, 3, 1],
          "step_ends": [1, 4, 6], "labels": [0.75, 0.25, 1.0], "correct": True}


def test_prm_targets_sit_at_step_ends_and_orm_at_the_last():
  prm = verifiers.value_arrays([RECORD], "prm", pad_id=0)
  orm = verifiers.value_arrays([RECORD], "orm", pad_id=0)
  assert np.flatnonzero(prm["value_mask"][0]).tolist() == [4, 7, 9]  # 3 + step_ends
  assert prm["value_target"][0, [4, 7, 9]].tolist() == [0.75, 0.25, 1.0]
  assert np.flatnonzero(orm["value_mask"][0]).tolist() == [9]
  assert orm["value_target"][0, 9] == 1.0
  assert prm["tokens"][0, :11].tolist() == RECORD["prompt_ids"] + RECORD["solution_ids"]


MESH = {"data": -1, "fsdp": 1, "tensor": 1}
CFG = ModelConfig(vocab_size=12, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                  d_ff=32, value_head=True)


def _data(n, target):
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, 12, (n, 16)).astype(np.int32)
  mask = np.zeros((n, 16), np.float32)
  mask[:, [5, 9, 15]] = 1.0
  return {"tokens": tokens, "value_mask": mask,
          "value_target": np.full((n, 16), target, np.float32)}


def test_loss_reads_only_marked_positions():
  trainer = Trainer(CFG, TrainConfig(steps=1, batch_size=8), ValueLoss(), make_mesh(MESH), ())
  params = dict(trainer.new_state()["params"])
  params["value_w"] = jax.random.normal(jax.random.key(0), params["value_w"].shape)
  data = _data(8, 1.0)
  changed = dict(data, value_target=data["value_target"].copy())
  changed["value_target"][:, [0, 3, 7]] = 0.0  # unmarked positions
  assert trainer.evaluate(params, data) == trainer.evaluate(params, changed)
  changed["value_target"][:, 9] = 0.0  # a marked one
  assert trainer.evaluate(params, data)["loss"] != trainer.evaluate(params, changed)["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("after", [0, 1])
def test_early_stopping_keeps_the_chosen_weights_and_stops(tmp_path, after):
  """Training pushes values to 1 while validation wants 0: validation loss rises from the
  first evaluation on, so the weights kept are the first evaluation's (evals_after_best=0)
  or the one after it (1, the revision model's rule), and training stops after `patience`
  evaluations without improvement."""
  cfg = TrainConfig(steps=40, batch_size=8, lr=3e-2, warmup_steps=1, eval_every=5,
                    checkpoint_every=5, keep_best=True, patience=2, evals_after_best=after)
  trainer = Trainer(CFG, cfg, ValueLoss(), make_mesh(MESH), ())
  params, history = trainer.fit(_data(16, 1.0), str(tmp_path), val_data=_data(8, 0.0))
  losses = [h["val_loss"] for h in history]
  assert [h["step"] for h in history] == [5, 10, 15]
  assert losses[0] < losses[1] < losses[2]
  kept = 5 * (1 + after)
  best = json.load(open(tmp_path / "best" / "best.json"))
  assert best == {"step": kept}
  assert sorted(os.listdir(tmp_path / "best")) == [f"best-{kept}", "best.json"]  # others removed
  assert trainer.evaluate(params, _data(8, 0.0))["loss"] == pytest.approx(losses[after], rel=1e-5)
  metrics = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert max(m["step"] for m in metrics) == 15


def test_evals_since_best():
  assert _evals_since_best([]) == 0
  assert _evals_since_best([{"val_loss": v} for v in (3, 1, 2, 2)]) == 2
  assert _evals_since_best([{"val_loss": v} for v in (3, 2, 1)]) == 0
  assert _evals_since_best([{"val_loss": v} for v in (3, 1, 1)]) == 0  # the latest of equals


def test_patience_needs_keep_best():
  with pytest.raises(ValueError, match="keep_best"):
    TrainConfig(steps=1, batch_size=1, patience=3)
  with pytest.raises(ValueError, match="keep_best"):
    TrainConfig(steps=1, batch_size=1, evals_after_best=1)
  with pytest.raises(ValueError, match="raise patience"):
    TrainConfig(steps=1, batch_size=1, keep_best=True, patience=1, evals_after_best=2)


def test_auroc_and_calibration_on_known_cases():
  assert verifier_metrics.auroc(np.array([0.9, 0.8, 0.2, 0.1]),
                             np.array([True, True, False, False])) == 1.0
  assert verifier_metrics.auroc(np.array([0.1, 0.9]), np.array([True, False])) == 0.0
  assert verifier_metrics.auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
  assert verifier_metrics.auroc(np.array([0.5]), np.array([True])) is None
  cal = verifier_metrics.calibration(np.array([0.05, 0.05, 0.95, 0.95]),
                                  np.array([0.0, 0.2, 1.0, 0.8]))
  assert [b["count"] for b in cal["bins"]] == [2, 2]
  assert cal["ece"] == pytest.approx(0.05)


def test_within_question_auroc_ignores_ranking_questions_by_difficulty():
  # Question 0 is easy (high scores), question 1 hard: overall the scores rank right above
  # wrong, inside each question they rank them backwards; question 2 has one class only.
  scores = np.array([0.9, 0.9, 0.9, 0.95, 0.1, 0.2, 0.2, 0.2, 0.5, 0.6])
  right = np.array([True, True, True, False, True, False, False, False, True, True])
  question = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
  assert verifier_metrics.auroc(scores, right) > 0.5
  np.testing.assert_array_equal(
      verifier_metrics.within_group_auroc(scores, right, question), [0.0, 0.0])


def test_held_out_questions_are_a_fixed_tenth():
  records = [{"question": q} for q in range(50) for _ in range(3)]
  train, held = verifiers.split_questions(records, 0.1, seed=0)
  assert len(held) == 5 and not train & held and len(train | held) == 50
  assert verifiers.split_questions(records, 0.1, seed=0) == (train, held)
