"""The demo pipeline end to end at toy scale: what a user's `tts run` does, stage by stage."""
import json
import os

import pytest

from tts import cli, experiment, pipeline

DEMO = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py")
TINY = [
    "--config.task.num_train=128", "--config.task.num_val=16", "--config.task.num_test=16",
    "--config.task.max_ops=4", "--config.data.source=python", "--config.data.max_len=40",
    "--config.models.small.d_model=16", "--config.models.small.d_ff=32",
    "--config.models.large.d_model=32", "--config.models.large.d_ff=64",
    "--config.models.large.num_layers=2", "--config.models.large.num_heads=4",
    "--config.policy.small.steps=3", "--config.policy.large.steps=3",
    "--config.policy.small.batch_size=8", "--config.policy.large.batch_size=8",
    "--config.policy.small.eval_every=3", "--config.policy.large.eval_every=3",
    "--config.policy_eval.num_questions=10", "--config.policy_eval.samples=2",
    "--config.policy_eval.max_new_tokens=24", "--config.policy_eval.batch_size=8",
]


def _config(*extra):
  return cli.apply_overrides(cli.load_config(DEMO), TINY + list(extra), DEMO)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("run"))
  experiment.run(_config(), directory)
  return directory


def test_run_writes_every_artifact(workdir):
  """Nothing else checks that stages leave what WORKSPACE.md promises."""
  for path in ["config.json", "summary.json", "data/train.jsonl", "data/manifest.json",
               "data/done.json", "policy/done.json", "policy/small/final/model.json",
               "policy/large/eval.json", "policy/small/metrics.jsonl"]:
    assert os.path.exists(os.path.join(workdir, path)), path
  summary = json.load(open(os.path.join(workdir, "summary.json")))["stages"]["policy"]
  assert summary["param_ratio"] > 1
  assert 0.0 <= summary["small"]["pass1"] <= 1.0
  assert len(summary["small"]["pass1_by_quintile"]) == 5


def test_rerun_skips_and_changed_config_is_refused(workdir):
  """Resume semantics at the experiment level: same config skips, another one stops."""
  before = os.path.getmtime(os.path.join(workdir, "policy", "done.json"))
  experiment.run(_config(), workdir)
  assert os.path.getmtime(os.path.join(workdir, "policy", "done.json")) == before
  with pytest.raises(pipeline.StageConfigChanged, match="policy.small.steps: 3 -> 4"):
    experiment.run(_config("--config.policy.small.steps=4"), workdir)


def test_checkpoint_of_another_shape_is_named(workdir):
  """A stage restarted with a different model must not load mismatched weights."""
  os.remove(os.path.join(workdir, "policy", "done.json"))
  os.remove(os.path.join(workdir, "policy", "started.json"))
  with pytest.raises(experiment.USER_ERRORS, match="tensor .* shape"):
    experiment.run(_config("--config.models.small.d_model=24"), workdir, only="policy")


def test_two_processes_run_the_pipeline_like_one(workdir, tmp_path):
  """Stage bookkeeping across hosts: process 0 writes done.json while the others wait at
  the stage boundary; without that wait, process 1 raced ahead into `policy` and stopped."""
  import socket
  import subprocess
  import sys

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
  env.pop("XLA_FLAGS", None)  # one device per process
  multi = str(tmp_path / "multi")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tts.cli", "run", DEMO, "--workdir", multi, "--coordinator",
       f"localhost:{port}", "--num_processes", "2", "--process_id", str(i), *TINY],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
  multi_summary = json.load(open(os.path.join(multi, "summary.json")))
  single_summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert multi_summary["processes"] == 2
  for name in ("small", "large"):
    assert abs(multi_summary["stages"]["policy"][name]["val_loss"]
               - single_summary["stages"]["policy"][name]["val_loss"]) < 1e-4
