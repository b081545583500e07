"""Training that stops at a validation-loss target (TrainConfig.stop_at_val_loss): it stops at
the first evaluation at or below the target, keeps those weights, resumes to the same stop,
and trains to `steps` (saying so to the caller) when the target is never reached."""
import json
import os

import jax
import numpy as np
import pytest

from tts.model import ModelConfig
from tts.model.sharding import make_mesh
from tts.train.config import TrainConfig
from tts.train.objectives import ValueLoss
from tts.train.trainer import Trainer, reached_target

MESH = {"data": -1, "fsdp": 1, "tensor": 1}
CFG = ModelConfig(vocab_size=12, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                  d_ff=32, value_head=True)


def _data(n, seed):
  """Values to learn: 1 at three marked positions (training and validation agree, so the
  validation loss falls)."""
  rng = np.random.default_rng(seed)
  mask = np.zeros((n, 16), np.float32)
  mask[:, [5, 9, 15]] = 1.0
  return {"tokens": rng.integers(2, 12, (n, 16)).astype(np.int32), "value_mask": mask,
          "value_target": np.ones((n, 16), np.float32)}


def _fit(workdir, target=0.0):
  cfg = TrainConfig(steps=30, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=5,
                    checkpoint_every=10, stop_at_val_loss=target)
  trainer = Trainer(CFG, cfg, ValueLoss(), make_mesh(MESH), ())
  params, history = trainer.fit(_data(16, 0), str(workdir), val_data=_data(8, 1))
  return trainer, params, history


def _steps_logged(workdir):
  return [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_stops_at_the_first_evaluation_at_or_below_the_target(tmp_path):
  _, _, full = _fit(tmp_path / "full")
  losses = [h["val_loss"] for h in full]
  assert losses[2] < losses[0], f"validation loss must fall for this test: {losses}"
  target = losses[2]  # reached at the third evaluation (step 15) or earlier
  expected = next(h["step"] for h in full if h["val_loss"] <= target)
  trainer, params, history = _fit(tmp_path / "stopped", target)
  assert [h["step"] for h in history] == [h["step"] for h in full if h["step"] <= expected]
  assert max(_steps_logged(tmp_path / "stopped")) == expected
  # The weights returned are the stopping evaluation's, and its checkpoint is on disk.
  val = trainer.evaluate(params, _data(8, 1))["loss"]
  assert val == pytest.approx(history[-1]["val_loss"], rel=1e-6)
  assert val <= target
  assert str(expected) in os.listdir(tmp_path / "stopped" / "checkpoints")


def test_rerun_after_the_stop_returns_the_same_weights_without_training(tmp_path):
  _, _, full = _fit(tmp_path / "full")
  target = full[1]["val_loss"]
  _, first, history = _fit(tmp_path / "run", target)
  logged = _steps_logged(tmp_path / "run")
  _, again, history_again = _fit(tmp_path / "run", target)
  assert _steps_logged(tmp_path / "run") == logged  # no step trained again
  assert history_again == history
  jax.tree.map(np.testing.assert_array_equal, again, first)


def test_an_unreached_target_trains_every_step(tmp_path):
  _, _, history = _fit(tmp_path, target=1e-12)
  assert history[-1]["step"] == 30
  assert not reached_target(history, 1e-12)


def test_the_target_needs_validation_data_and_a_non_negative_value(tmp_path):
  cfg = TrainConfig(steps=2, batch_size=8, eval_every=1, stop_at_val_loss=0.5)
  trainer = Trainer(CFG, cfg, ValueLoss(), make_mesh(MESH), ())
  with pytest.raises(ValueError, match="stop_at_val_loss needs validation data"):
    trainer.fit(_data(16, 0), str(tmp_path))
  with pytest.raises(ValueError, match="stop_at_val_loss=-1"):
    TrainConfig(steps=2, batch_size=8, stop_at_val_loss=-1.0)
