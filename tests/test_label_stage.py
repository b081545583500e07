"""The label stage's shards: a killed run redoes only the missing ones, identically."""
import json
import os

from tiny import config

from tts import experiment
from tts.stages.label import read_shards, shard_path


def test_a_rerun_redoes_only_missing_shards(copy_run):
  workdir = str(copy_run)
  lost, kept = shard_path(workdir, 1), shard_path(workdir, 0)
  with open(lost) as f:
    before = f.read()
  stamp = os.path.getmtime(kept)
  os.remove(lost)
  os.remove(os.path.join(workdir, "label", "done.json"))  # as if killed mid-stage
  experiment.run(config(), workdir, only="label")
  with open(lost) as f:
    assert f.read() == before
  assert os.path.getmtime(kept) == stamp


def test_manifest_counts_add_up(tiny_run):
  manifest = json.load(open(os.path.join(tiny_run, "label", "manifest.json")))
  records = read_shards(tiny_run)
  assert manifest["shards"] == 3 and manifest["questions"] == 12
  assert manifest["solutions_sampled"] == 12 * 2
  assert manifest["solutions_kept"] == len(records) > 0
  assert manifest["steps"] == sum(len(r["step_ends"]) for r in records)
  assert manifest["rollouts"] == sum((len(r["step_ends"]) - 1) * 2 for r in records)
  assert 0 < manifest["rollout_tokens"] <= manifest["rollout_row_tokens"]
  assert manifest["rollout_live_fraction"] == round(
      manifest["rollout_tokens"] / manifest["rollout_row_tokens"], 4)
  for r in records:
    assert len(r["labels"]) == len(r["step_ends"]) and r["answer"] is not None
    assert r["labels"][-1] == float(r["correct"])
    assert all(0.0 <= x <= 1.0 for x in r["labels"])
