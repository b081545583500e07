"""Test-time compute at scale by configuration: on 8 devices (rows over data x fsdp, KV heads
and weights over tensor) and split across 2 processes, every stage that decodes (search,
difficulty, revision search; label, revision data, the revision ORM's chains; the policy
stage's evaluation) writes the files a single device writes.

Search and difficulty are compared with tolerance, not bytes: sharded matmuls and other
batch shapes sum in another order, which moves verifier readings by ~1e-6 (measured: at most
9e-7 on 9 questions, beam and DVTS), so a reading rounded to 6 decimals may differ in its
last digit. Every token, answer, choice and count must be equal. The stages that decode
training data hold no verifier reading: their files must be equal byte for byte.
"""
import glob
import json
import os
import socket
import subprocess
import sys

import pytest
from tiny import DEMO, TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("search", "difficulty", "revision_search")  # every stage that decodes test questions
# Stages that decode train questions (after STAGES: their reruns retrain the verifiers that
# revision_search reads), and the files they write.
DATA_STAGES = ("label", "revision_data", "revision_orm")
DATA_FILES = ("label/shards/*", "label/manifest.json", "revision_data/*.jsonl",
              "revision_data/manifest.json", "revision_orm/chains.jsonl")


def _records(workdir, stage):
  return {os.path.relpath(p, workdir): [json.loads(line) for line in open(p)]
          for p in sorted(glob.glob(os.path.join(workdir, stage, "*", "n*.jsonl")))}


def assert_same_search(expected_dir, actual_dir, stage="search"):
  """The result files of `stage` (search, or revision_search's chains<P>/n<N>.jsonl)."""
  expected, actual = _records(expected_dir, stage), _records(actual_dir, stage)
  assert expected and set(actual) == set(expected)
  for path, records in expected.items():
    assert len(actual[path]) == len(records), path
    for want, got in zip(records, actual[path]):
      scores = lambda r: [s for c in r["candidates"] for s in c["step_scores"]]
      assert scores(got) == pytest.approx(scores(want), abs=1e-5), (path, want["id"])
      assert got.get("prompt_score") == pytest.approx(want.get("prompt_score"), abs=1e-5)
      for r in (want, got):
        for c in r["candidates"]:
          c.pop("step_scores")
        r.pop("prompt_score", None)
      assert got == want, (path, want["id"])
  assert not glob.glob(os.path.join(actual_dir, stage, "**", "*.part*"), recursive=True)


def assert_same_difficulty(expected_dir, actual_dir):
  read = lambda d: [json.loads(line) for line in open(os.path.join(d, "difficulty",
                                                                   "questions.jsonl"))]
  expected, actual = read(expected_dir), read(actual_dir)
  assert len(actual) == len(expected) > 0
  for want, got in zip(expected, actual):
    for key in ("predicted_score", "prompt_score"):
      assert got.pop(key) == pytest.approx(want.pop(key), abs=1e-5), (key, want["id"])
    assert got == want
  assert not glob.glob(os.path.join(actual_dir, "difficulty", "*.part*"))


def assert_same_files(expected_dir, actual_dir, patterns=DATA_FILES):
  """The files matching `patterns` (relative to each workdir), byte for byte; no part files
  left behind."""
  for pattern in patterns:
    paths = lambda d: sorted(os.path.relpath(p, d) for p in glob.glob(os.path.join(d, pattern)))
    assert paths(expected_dir) and paths(actual_dir) == paths(expected_dir), pattern
    for path in paths(expected_dir):
      read = lambda d: open(os.path.join(d, path), "rb").read()
      assert read(actual_dir) == read(expected_dir), path
  assert not glob.glob(os.path.join(actual_dir, "**", "*.part*"), recursive=True)


def _stage(stage, workdir, processes=1, devices=1, *extra, force=True):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1", PYTHONPATH=ROOT)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  cmd = [sys.executable, "-m", "tts.cli", "run", DEMO, "--workdir", str(workdir), "--only",
         stage, *(["--force"] if force else []), *TINY, *extra]
  if processes > 1:
    with socket.socket() as s:
      s.bind(("localhost", 0))
      port = s.getsockname()[1]
    cmds = [cmd + ["--coordinator", f"localhost:{port}", "--num_processes", str(processes),
                   "--process_id", str(i)] for i in range(processes)]
  else:
    cmds = [cmd]
  procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT) for c in cmds]
  try:
    outputs = [p.communicate(timeout=500)[0].decode(errors="replace") for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
  return outputs


def test_eight_devices_equal_one(tiny_run, copy_run):
  """Weights restored into their shardings (heads, mlp, vocab over tensor; embed over fsdp),
  caches split by rows and KV heads: the same files as on one device."""
  mesh = ("--config.decode_mesh.data=2", "--config.decode_mesh.fsdp=2",
          "--config.decode_mesh.tensor=2")
  for stage in STAGES + DATA_STAGES:
    _stage(stage, copy_run, 1, 8, *mesh)
  decode = json.load(open(os.path.join(copy_run, "search", "manifest.json")))["decode"]
  assert decode == {"mesh": {"data": 2, "fsdp": 2, "tensor": 2}, "processes": 1}
  assert_same_search(tiny_run, copy_run)
  assert_same_difficulty(tiny_run, copy_run)
  assert_same_search(tiny_run, copy_run, "revision_search")
  assert_same_files(tiny_run, copy_run)


def test_two_processes_split_the_questions(tiny_run, copy_run):
  """Each process decodes its share of the questions (label: of the shards); the shares
  are joined (and difficulty bins made over all of them)."""
  for stage in STAGES + DATA_STAGES:
    _stage(stage, copy_run, processes=2)
  decode = json.load(open(os.path.join(copy_run, "search", "manifest.json")))["decode"]
  assert decode == {"mesh": {"data": 1, "fsdp": 1, "tensor": 1}, "processes": 2}
  assert_same_search(tiny_run, copy_run)
  assert_same_difficulty(tiny_run, copy_run)
  assert_same_search(tiny_run, copy_run, "revision_search")
  assert_same_files(tiny_run, copy_run)


# More questions and samples than the toy evaluation: the small policy decodes 144 rows
# rather than 30 (the toy's 20 pass@1 samples hold one right answer), the large 16.
POLICY_EVAL = ("--config.policy_eval.num_questions=16", "--config.policy_eval.samples=8")


def _evaluate_policies(workdir, processes=1, devices=1, *extra):
  """The policy stage's evaluation alone, on the trained weights: without its records the
  stage reruns (no --force: nothing is deleted), each trainer resumes at its last step and
  takes none, and the evaluation runs. Returns eval.json of each model, as bytes."""
  for record in ("started.json", "done.json"):
    os.remove(os.path.join(workdir, "policy", record))
  _stage("policy", workdir, processes, devices, *POLICY_EVAL, *extra, force=False)
  assert not glob.glob(os.path.join(workdir, "policy", "**", "*.part*"), recursive=True)
  return {name: open(os.path.join(workdir, "policy", name, "eval.json"), "rb").read()
          for name in ("small", "large")}


def test_policy_evaluation_on_eight_devices(copy_run):
  """Greedy and pass@1 sampling of both policies on the 8-device decode mesh."""
  one = _evaluate_policies(copy_run)
  assert _evaluate_policies(copy_run, 1, 8, "--config.decode_mesh.data=2",
                            "--config.decode_mesh.fsdp=2", "--config.decode_mesh.tensor=2") == one


def test_policy_evaluation_split_across_processes(copy_run):
  """Each process samples its share of the questions; process 0 writes eval.json."""
  one = _evaluate_policies(copy_run)
  assert _evaluate_policies(copy_run, processes=2) == one
