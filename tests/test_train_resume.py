"""Training survives being killed, refuses the wrong checkpoint, and stops on NaN.

Preemption is the normal case on shared accelerators: `Trainer.fit` must resume from the
latest complete checkpoint to exactly the result of an uninterrupted run (params,
optimizer state, step and RNG all restored; the data position is the step), log each
step once, and never silently load a checkpoint written for another model. All runs are
`tests/helpers/train_run.py` subprocesses (12 steps, checkpoint every 3), compared with
the uninterrupted one-device reference run.
"""
import json
import re
import shutil
import time

import jax
import numpy as np
import pytest

from tts.model import ModelConfig
from tts.model.sharding import make_mesh
from tts.train.checkpoints import CheckpointMismatchError
from tts.train.config import TrainConfig
from tts.train.objectives import NextTokenLoss
from tts.train.trainer import Trainer


def assert_resumed_exactly(result, reference):
  """Bitwise: same program, same inputs on CPU; the checkpoint round trip is lossless."""
  np.testing.assert_array_equal(result["metric_steps"], np.arange(1, 13),
                                err_msg="metrics.jsonl must hold each step exactly once")
  np.testing.assert_array_equal(result["loss"], reference["loss"])
  for name, value in reference.params.items():
    np.testing.assert_array_equal(result.params[name], value, err_msg=name)


def _logged_steps(workdir) -> list[int]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def test_killed_run_resumes_to_uninterrupted_result(reference_run, start_train, run_train,
                                                    list_checkpoints):
  """SIGKILL a run after checkpoint 6 is on disk and steps 7 and 8 were logged, rerun in
  the same workdir: it resumes from step 6 and the final params and per-step loss history
  equal the uninterrupted run's; metrics.jsonl has each step once (records logged after
  the restored checkpoint are dropped and logged again)."""
  # From step 9 on each step first sleeps 5 s: the kill lands between steps 8 and 9,
  # after the metrics of 7 and 8 and before checkpoint 9, every time.
  killed = start_train("killed", "--throttle", 5, "--throttle_from", 8)
  try:
    deadline = time.monotonic() + 240
    while not (6 in list_checkpoints(killed.workdir) and 8 in _logged_steps(killed.workdir)):
      assert killed.proc.poll() is None, f"run ended before step 8:\n{killed.log_tail()}"
      assert time.monotonic() < deadline, "no checkpoint 6 and step 8 within 240 s"
      time.sleep(0.02)
    assert killed.proc.poll() is None, "run finished before the kill; the test resumed nothing"
  finally:
    killed.kill()  # SIGKILL: no atexit, no checkpoint manager close
  assert max(list_checkpoints(killed.workdir)) == 6
  assert _logged_steps(killed.workdir) == list(range(1, 9))

  process = start_train("resumed", workdir=killed.workdir)
  resumed = process.finish()
  assert int(resumed["start_step"]) == 6
  assert re.search(r"p0 train: resuming from step 6 of 12 \(.*checkpoints\)", process.log_tail())
  assert_resumed_exactly(resumed, reference_run)


def test_checkpoint_of_other_model_raises_mismatch(reference_run, train_run_module, tmp_path,
                                                   list_checkpoints):
  """Resuming a d_model 32 checkpoint with a d_model 48 config must fail before any
  training, with CheckpointMismatchError naming a tensor and both shapes, not restore
  garbage or crash inside Orbax."""
  workdir = tmp_path / "workdir"
  shutil.copytree(reference_run.workdir / "checkpoints", workdir / "checkpoints")
  model_cfg = ModelConfig(vocab_size=32, num_layers=2, d_model=48, num_heads=4, num_kv_heads=2,
                          d_ff=64)
  train_cfg = TrainConfig(steps=12, batch_size=8, checkpoint_every=3, log_every=1)
  trainer = Trainer(model_cfg, train_cfg, NextTokenLoss(), make_mesh(dict(data=-1, fsdp=1, tensor=1)),
                    train_run_module.RULES)
  # Zero params skip compiling the random initialiser; fit must stop before using them.
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), trainer.abstract_params)
  with pytest.raises(CheckpointMismatchError) as info:
    trainer.fit(train_run_module.copy_task(), str(workdir), init_params=zeros)
  found = re.search(r"tensor (\S+) has shape \(([\d, ]+)\) in the checkpoint but \(([\d, ]+)\) "
                    r"in the config", str(info.value))
  assert found, str(info.value)
  name, stored, expected = found.groups()
  assert name in reference_run.params, f"{name} is not a parameter path"
  parse = lambda s: tuple(int(x) for x in s.split(",") if x.strip())
  assert parse(stored) == reference_run.params[name].shape
  path = name.split("/")
  leaf = trainer.abstract_params
  for key in path:
    leaf = leaf[int(key)] if key.isdigit() and int(key) in leaf else leaf[key]
  assert parse(expected) == leaf.shape != parse(stored)
  assert list_checkpoints(workdir) == list_checkpoints(reference_run.workdir)
  assert not (workdir / "metrics.jsonl").exists(), "fit trained or logged before failing"


def test_nan_loss_raises_and_keeps_earlier_checkpoints(reference_run, run_train,
                                                       list_checkpoints):
  """A non-finite loss (inf in the loss mask of step 5's batch only) stops training with
  FloatingPointError that names the step, the last good checkpoint and train.lr; nothing
  after that checkpoint is saved, and it still loads: rerunning on clean data resumes from
  it to exactly the uninterrupted result."""
  bad = run_train("nan", "--poison_step", 4, expect_rc=3)
  message = str(bad["error"])
  assert "train.lr" in message and "at step 5" in message, message
  assert "last good checkpoint (step 3)" in message, message
  assert list_checkpoints(bad.workdir) == [3]

  good = run_train("after_nan", workdir=bad.workdir)
  assert int(good["start_step"]) == 3
  assert_resumed_exactly(good, reference_run)


def test_sigterm_saves_the_current_step_and_rerun_resumes_there(reference_run, start_train,
                                                                 run_train, list_checkpoints):
  """A real SIGTERM (a scheduler's preemption notice) between checkpoints: the run saves
  the step it reached, exits 4 (Preempted) with a message saying a rerun resumes, and the
  rerun resumes at exactly that step to the uninterrupted result. Checkpoints every 100
  steps: without the handler nothing but the signal's step could be on disk."""
  # From step 4 on each step first sleeps 1 s: the signal lands while training.
  run = start_train("sigterm", "--checkpoint_every", 100, "--throttle", 1, "--throttle_from", 3)
  deadline = time.monotonic() + 240
  while 3 not in _logged_steps(run.workdir):
    assert run.proc.poll() is None, f"run ended before step 3:\n{run.log_tail()}"
    assert time.monotonic() < deadline, "no step 3 within 240 s"
    time.sleep(0.02)
  run.proc.terminate()  # SIGTERM
  stopped = run.finish(expect_rc=4)
  steps = _logged_steps(run.workdir)
  assert 3 <= steps[-1] < 12 and steps == list(range(1, steps[-1] + 1)), steps
  assert list_checkpoints(run.workdir) == [steps[-1]]
  message = str(stopped["error"])
  assert f"preempted (SIGTERM) at step {steps[-1]} of 12" in message, message
  assert "Rerun the same command to resume from there" in message, message

  resumed = run_train("after_sigterm", workdir=run.workdir)
  assert int(resumed["start_step"]) == steps[-1]
  assert_resumed_exactly(resumed, reference_run)
