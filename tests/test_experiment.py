"""The demo pipeline end to end at toy scale: what a user's `tts run` does, stage by stage."""
import json
import os

import pytest
from tiny import DEMO, TINY, config

from tts import experiment, pipeline


def test_run_writes_every_artifact(tiny_run):
  """Nothing else checks that stages leave what WORKSPACE.md promises."""
  workdir = tiny_run
  for path in ["config.json", "summary.json", "data/train.jsonl", "data/manifest.json",
               "data/done.json", "policy/done.json", "policy/small/final/model.json",
               "policy/large/eval.json", "policy/small/metrics.jsonl",
               "label/manifest.json", "label/shards/shard-00002.jsonl", "label/done.json",
               "prm/final/model.json", "prm/eval.json", "prm/best/best.json",
               "orm/final/model.json", "orm/eval.json", "search/manifest.json",
               "search/verifier_comparison.json", "search/beam4/n4.jsonl", "search/done.json"]:
    assert os.path.exists(os.path.join(workdir, path)), path
  summary = json.load(open(os.path.join(workdir, "summary.json")))["stages"]["policy"]
  assert summary["param_ratio"] > 1
  assert 0.0 <= summary["small"]["pass1"] <= 1.0
  assert len(summary["small"]["pass1_by_quintile"]) == 5
  for kind in ("prm", "orm"):
    held = json.load(open(os.path.join(workdir, kind, "eval.json")))
    within = held["within_question_auroc"]  # None when no held-out question has both kinds
    assert (within is None) == (held["within_question_count"] == 0)
    assert within is None or 0 <= within <= 1


def test_rerun_skips_and_changed_config_is_refused(copy_run):
  """Resume semantics at the experiment level: same config skips, another one stops."""
  workdir = str(copy_run)
  before = os.path.getmtime(os.path.join(workdir, "policy", "done.json"))
  experiment.run(config(), workdir)
  assert os.path.getmtime(os.path.join(workdir, "policy", "done.json")) == before
  with pytest.raises(pipeline.StageConfigChanged, match="policy.small.steps: 60 -> 61"):
    experiment.run(config("--config.policy.small.steps=61"), workdir)


def test_verifiers_start_from_the_policy_model_verifiers_base_names(copy_run):
  """A verifier larger than the policy: the PRM takes the large model's shape and weights."""
  workdir = str(copy_run)
  experiment.run(config("--config.verifiers.base=large"), workdir, only="prm", force=True)
  prm = json.load(open(os.path.join(workdir, "prm", "final", "model.json")))
  large = json.load(open(os.path.join(workdir, "policy", "large", "final", "model.json")))
  assert prm["d_model"] == large["d_model"] and prm["num_layers"] == large["num_layers"]
  assert prm["value_head"] and not large["value_head"]


def test_checkpoint_of_another_shape_is_named(copy_run):
  """A stage restarted with a different model must not load mismatched weights."""
  workdir = str(copy_run)
  os.remove(os.path.join(workdir, "policy", "done.json"))
  os.remove(os.path.join(workdir, "policy", "started.json"))
  with pytest.raises(experiment.USER_ERRORS, match="tensor .* shape"):
    experiment.run(config("--config.models.small.d_model=24"), workdir, only="policy")


def test_two_processes_run_the_pipeline_like_one(tiny_run, tmp_path):
  """Stage bookkeeping across hosts: process 0 writes done.json while the others wait at
  the stage boundary; without that wait, process 1 raced ahead into `policy` and stopped.
  The label stage splits its shards between the processes."""
  workdir = tiny_run
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
       f"localhost:{port}", "--num_processes", "2", "--process_id", str(i), *TINY,
       "--config.search.budgets=(1,)"],  # every stage, fewer search compiles
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=500)[0].decode(errors="replace") for p in procs]
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
  for key in ("questions", "shards", "solutions_sampled"):  # weights differ in the last bits
    assert multi_summary["stages"]["label"][key] == single_summary["stages"]["label"][key]
  assert set(multi_summary["stages"]["search"]) == set(single_summary["stages"]["search"])
