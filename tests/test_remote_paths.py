"""Workdirs in a bucket (`--workdir gs://bucket/run`): every path the pipeline and trainer
read or write goes through `etils.epath`, never os.path or open() alone (os.path.abspath
turns "gs://b/x" into a local path; open() cannot reach a bucket).

No bucket here: the bucket code path (epath reads and writes, no rename, appends that
rewrite the object) runs on local paths with `is_remote` forced true, and must leave the
same files, byte for byte, as the local code path.
"""
import json
import os

from tts import atomic_files, pipeline
from tts.atomic_files import absolute, is_remote, write_json_atomic, write_jsonl_atomic
from tts.train import trainer


def test_bucket_uri_stays_a_uri():
  assert is_remote("gs://bucket/run") and not is_remote("runs/demo")
  assert absolute("gs://bucket/run") == "gs://bucket/run"
  assert absolute("runs/demo") == os.path.abspath("runs/demo")


def _stages():
  def train(ctx):
    metrics = os.path.join(ctx.stage_dir("train"), "metrics.jsonl")
    for step in (1, 2, 3):
      trainer._append_metrics(metrics, {"step": step, "loss": 1.0 / step})
    trainer._truncate_metrics(metrics, 2)  # a resume from step 2
    write_json_atomic(os.path.join(ctx.stage_dir("train"), "best", "best.json"), {"step": 2})
    return {"history": len(trainer._read_history(metrics, 3))}

  def evaluate(ctx):
    write_jsonl_atomic(os.path.join(ctx.stage_dir("eval"), "rows.jsonl"), [{"é": 1}, {"b": 2}])
    return {"rows": 2}
  return [pipeline.Stage("train", train, config_keys=("a",)),
          pipeline.Stage("eval", evaluate, config_keys=("a",), deps=("train",))]


def _files(directory) -> dict[str, bytes]:
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      data = open(path, "rb").read()
      if name == "done.json":  # its run time differs
        record = json.loads(data)
        record.pop("seconds")
        data = json.dumps(record).encode()
      out[os.path.relpath(path, directory)] = data
  return out


def _run(workdir: str) -> dict[str, bytes]:
  import ml_collections
  ctx = pipeline.Context(ml_collections.ConfigDict({"a": {"steps": 3}}), workdir)
  pipeline.run_stages(_stages(), ctx, log=lambda *_: None)
  pipeline.run_stages(_stages(), ctx, only="train", force=True, log=lambda *_: None)
  return _files(workdir)


def test_pipeline_through_epath_writes_what_local_writes(tmp_path, monkeypatch):
  local = _run(str(tmp_path / "local"))
  assert sorted(local) == ["eval/done.json", "eval/rows.jsonl", "eval/started.json",
                           "train/best/best.json", "train/done.json", "train/metrics.jsonl",
                           "train/started.json"]
  monkeypatch.setattr(atomic_files, "is_remote", lambda path: True)
  assert _run(str(tmp_path / "bucket")) == local
