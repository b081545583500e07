"""Stage bookkeeping and the command line: skip, refuse, force, overrides."""
import json
import logging
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from tts import cli, pipeline
from tts.data import math_grader

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


def test_grading_timeouts_are_reported_in_done_json(tmp_path):
  """An answer the grader gave up on is graded wrong; the stage's record says how many."""
  def grade(ctx):
    os.makedirs(ctx.stage_dir("grade"), exist_ok=True)
    return {"correct": math_grader.compare("2", "9^{9^{9}}", deadline_s=1)}
  logged = []
  pipeline.run_stages([pipeline.Stage("grade", grade, config_keys=("a",))],
                      pipeline.Context(_config(), str(tmp_path)), log=logged.append)
  done = json.load(open(tmp_path / "grade" / "done.json"))
  assert done["summary"] == {"correct": False} and done["grading_timeouts"] == 1
  assert "[grade] 1 answer comparisons timed out, graded as wrong" in logged


def test_compiled_programs_are_counted_per_stage(tmp_path):
  """done.json and the log say how many programs a stage compiled: on CPU compile time is a
  large share of a short stage."""
  def compiles(ctx):
    os.makedirs(ctx.stage_dir("compiles"), exist_ok=True)
    for width in (3, 5):  # two shapes: two programs
      jax.jit(lambda x: x * 2.0 + 1.0)(np.ones(width, np.float32)).block_until_ready()
    return {}
  logged = []
  pipeline.run_stages([pipeline.Stage("compiles", compiles, config_keys=("a",))],
                      pipeline.Context(_config(), str(tmp_path)), log=logged.append)
  done = json.load(open(tmp_path / "compiles" / "done.json"))
  # Compiled, or loaded from the suite's compilation cache (tests/conftest.py).
  compiled = done["compiled"]
  assert compiled["programs"] + compiled["cached"] == 2 and compiled["seconds"] >= 0
  line = re.fullmatch(r"\[compiles\] done in \d+ s \((\d) programs compiled in \d+ s, "
                      r"(\d) loaded from the compilation cache\)", logged[-1])
  assert line and (int(line[1]), int(line[2])) == (compiled["programs"], compiled["cached"])


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


def test_run_help_lists_overrides_and_stages(capsys):
  """A new user learns --config.* and the stage names from --help, not from the source."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["run", "--help"])
  assert exit_info.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  assert "--config.SECTION.FIELD=VALUE" in text and "--config.policy.small.steps=100" in text
  assert ", ".join(cli.STAGE_COMMANDS) in text
  with pytest.raises(SystemExit):
    cli.main(["run", "--only", "serch"])
  assert "invalid choice: 'serch'" in capsys.readouterr().err


def test_default_workdir_is_named_after_the_config(tmp_path, monkeypatch):
  """Two configs run without --workdir must not share (and refuse) one runs/demo."""
  from tts import experiment
  (tmp_path / "my_exp.py").write_text(
    "import ml_collections\n"
    "def get_config():\n  return ml_collections.ConfigDict({'a': 1})\n")
  used = []
  monkeypatch.setattr(experiment, "run", lambda config, workdir, **_: used.append(workdir)
                      or os.path.join(workdir, "summary.json"))
  monkeypatch.chdir(tmp_path)
  cli.main(["run", "my_exp.py"])
  cli.main(["run", "my_exp.py", "--workdir", "elsewhere"])
  assert used == [os.path.join("runs", "my_exp"), "elsewhere"]


@pytest.mark.parametrize("argv", [["import", "hf_dir", "--out", "out"],
                                  ["export", "--model", "m", "--out", "out"]])
def test_missing_hf_extra_gives_the_install_command(tmp_path, argv):
  """Without safetensors, `tts import` / `tts export` say how to install the extra."""
  code = ("import sys; sys.modules['safetensors'] = None\n"
          "from tts import cli; cli.main(sys.argv[1:])")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": root})
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "tts: error: this needs the `hf` extra (module 'safetensors' is missing); install it "
      "with: python3 -m pip install -e '.[hf]'")


def test_log_lines_carry_the_process_index(tmp_path, capsys):
  """Logs of many hosts are merged; each line says which process wrote it."""
  from tts import logs
  logs.setup(process_index=3)
  try:
    pipeline.run_stages(_stages([]), pipeline.Context(_config(), str(tmp_path)))
  finally:
    logging.getLogger(logs.NAME).handlers.clear()
  lines = capsys.readouterr().err.splitlines()
  assert any(re.fullmatch(r"\d\d:\d\d:\d\d p3 \[first\] running", line) for line in lines), lines


def test_records_are_read_by_every_process_before_force_deletes_them(tmp_path, monkeypatch):
  """With --force, process 0 deletes a stage's files only after a barrier that follows every
  process's read of them (a process that read done.json while it was deleted failed)."""
  ctx = pipeline.Context(_config(), str(tmp_path))
  pipeline.run_stages(_stages([]), ctx, log=lambda *_: None)
  events = []
  read_record, remove_tree = pipeline.read_record, pipeline.remove_tree
  monkeypatch.setattr(pipeline, "sync", lambda name: events.append("sync"))
  monkeypatch.setattr(pipeline, "read_record",
                      lambda *a: events.append("read") or read_record(*a))
  monkeypatch.setattr(pipeline, "remove_tree",
                      lambda d: events.append("remove") or remove_tree(d))
  pipeline.run_stages(_stages([]), ctx, only="second", force=True, log=lambda *_: None)
  removal = events.index("remove")
  last_read = max(i for i, e in enumerate(events[:removal]) if e == "read")
  assert "sync" in events[last_read:removal]
