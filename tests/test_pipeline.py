"""Stage bookkeeping and the command line: skip, refuse, force, overrides."""
import json
import os

import ml_collections
import pytest

from tts import cli, pipeline

DEMO = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py")


def _config(steps=3):
  return ml_collections.ConfigDict({"a": {"steps": steps}, "b": {"name": "x"}})


def _stages(calls):
  def make(name):
    def run(ctx):
      calls.append(name)
      os.makedirs(ctx.stage_dir(name), exist_ok=True)
      return {"ran": name}
    return run
  return [pipeline.Stage("first", make("first"), config_keys=("a",)),
          pipeline.Stage("second", make("second"), config_keys=("b",), deps=("first",))]


def test_done_stages_are_skipped(tmp_path):
  """A rerun with the same config must not redo finished work."""
  calls = []
  ctx = pipeline.Context(_config(), str(tmp_path))
  pipeline.run_stages(_stages(calls), ctx, log=lambda *_: None)
  pipeline.run_stages(_stages(calls), ctx, log=lambda *_: None)
  assert calls == ["first", "second"]
  done = json.load(open(tmp_path / "second" / "done.json"))
  assert done["summary"] == {"ran": "second"}


def test_changed_config_is_refused_and_names_the_field(tmp_path):
  """Results made with another config are never silently overwritten."""
  calls = []
  pipeline.run_stages(_stages(calls), pipeline.Context(_config(3), str(tmp_path)),
                      log=lambda *_: None)
  with pytest.raises(pipeline.StageConfigChanged, match=r"a\.steps: 3 -> 4.*--force"):
    pipeline.run_stages(_stages(calls), pipeline.Context(_config(4), str(tmp_path)),
                        log=lambda *_: None)
  assert calls == ["first", "second"]


def test_upstream_change_invalidates_downstream(tmp_path):
  """A dependent stage's fingerprint includes its inputs' fingerprints."""
  calls = []
  pipeline.run_stages(_stages(calls), pipeline.Context(_config(3), str(tmp_path)),
                      log=lambda *_: None)
  pipeline.run_stages(_stages(calls), pipeline.Context(_config(4), str(tmp_path)),
                      only="first", force=True, log=lambda *_: None)
  with pytest.raises(pipeline.StageConfigChanged, match="second"):
    pipeline.run_stages(_stages(calls), pipeline.Context(_config(4), str(tmp_path)),
                        log=lambda *_: None)


def test_force_and_only(tmp_path):
  """--only runs one stage; --force redoes it even when done."""
  calls = []
  ctx = pipeline.Context(_config(), str(tmp_path))
  pipeline.run_stages(_stages(calls), ctx, log=lambda *_: None)
  pipeline.run_stages(_stages(calls), ctx, only="second", force=True, log=lambda *_: None)
  assert calls == ["first", "second", "second"]
  with pytest.raises(ValueError, match="no such stage"):
    pipeline.run_stages(_stages(calls), ctx, only="third", log=lambda *_: None)


def test_only_needs_its_inputs_done(tmp_path):
  calls = []
  with pytest.raises(pipeline.StageError, match="needs stage .first."):
    pipeline.run_stages(_stages(calls), pipeline.Context(_config(), str(tmp_path)),
                        only="second", log=lambda *_: None)


def test_overrides_are_typed_and_unknown_keys_named():
  """--config.x=v keeps the field's type; a typo gets the closest real key."""
  config = ml_collections.ConfigDict(
      {"train": {"steps": 10, "lr": 1e-3, "flag": False, "name": "a", "shape": (1, 2)}})
  cli.apply_overrides(config, ["--config.train.steps=20", "--config.train.lr=3e-4",
                               "--config.train.flag=true", "--config.train.name=b",
                               "--config.train.shape=(3, 4)"], "cfg.py")
  assert (config.train.steps, config.train.lr, config.train.flag) == (20, 3e-4, True)
  assert (config.train.name, tuple(config.train.shape)) == ("b", (3, 4))
  with pytest.raises(KeyError, match=r"train\.step.*did you mean train\.steps"):
    cli.apply_overrides(config, ["--config.train.step=5"], "cfg.py")
  with pytest.raises(ValueError, match="train.steps"):
    cli.apply_overrides(config, ["--config.train.steps=abc"], "cfg.py")


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
  """Missing config files and unknown keys exit with one line naming the problem."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["run", str(tmp_path / "nope.py"), "--workdir", str(tmp_path)])
  assert exit_info.value.code == 2
  assert "nope.py not found" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["run", DEMO, "--workdir", str(tmp_path), "--config.polcy.x=1"])
  assert "did you mean policy" in capsys.readouterr().err
