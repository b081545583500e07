"""Bad input through the `tts` command: each case ends in one `tts: error:` line that names
the file, field or stage and the fix, and nothing the tool did not write is touched.

Most cases run on a workdir whose stages are all recorded as done for the tiny config
(`finished`): the bookkeeping is real (fingerprints as a run writes them), the stages
themselves did nothing, so each case takes seconds.
"""
import dataclasses
import json
import os
import warnings

import jax
import numpy as np
import pytest
from flax import nnx
from tiny import DEMO, TINY, config

from tts import atomic_files, cli, experiment, pipeline, workdir_lock
from tts.data import math_jsonl
from tts.data.errors import DataError
from tts.data.tasks import make_task
from tts.model import ModelConfig, Transformer
from tts.train.checkpoints import save_params


def tts(capsys, *args, code=1) -> str:
  """Runs `tts ARGS` in-process; returns the `tts: error:` line that ends stderr (before it
  only progress bars)."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(list(args))
  err = capsys.readouterr().err
  assert exit_info.value.code == code, err
  line = err.splitlines()[-1]
  assert line.startswith("tts: error: ") and err.endswith("\n"), err
  assert "Traceback" not in err, err
  return line


def run_args(workdir, *extra) -> list[str]:
  return ["run", DEMO, "--workdir", str(workdir), *TINY, *extra]


def mark_done(workdir, *overrides, only=None):
  """Every stage (or `only`) recorded as done for the tiny config plus `overrides`."""
  stages = [dataclasses.replace(s, run=lambda ctx: {}) for s in experiment.STAGES]
  pipeline.run_stages(stages, pipeline.Context(config(*overrides), str(workdir)), only=only,
                      force=True, log=lambda *_: None)


@pytest.fixture
def finished(tmp_path):
  workdir = tmp_path / "run"
  mark_done(workdir)
  return workdir


def saved_model(directory, nan=False):
  """A small random policy for the tiny config's task, saved as a stage saves its final/."""
  vocab = make_task(config().task).vocab.vocab_size
  cfg = ModelConfig(vocab_size=vocab, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                    d_ff=32)
  params = nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(0))))
  if nan:
    params["final_norm"]["scale"] = params["final_norm"]["scale"].at[3].set(jax.numpy.nan)
  save_params(str(directory), params, cfg)
  return directory


def tree(directory) -> dict:
  """Every file under `directory` with its inode and modification time."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      st = os.stat(os.path.join(root, name))
      out[os.path.relpath(os.path.join(root, name), directory)] = (st.st_ino, st.st_mtime_ns)
  return out


# 1. Export never deletes what it did not write.

def test_export_refuses_a_directory_it_did_not_write(finished, capsys):
  saved_model(finished / "policy" / "small" / "final")
  before = tree(finished)
  export = ["export", DEMO, "--workdir", str(finished), "--model", "policy/small/final", *TINY]
  err = tts(capsys, *export, "--out", str(finished))
  assert f"--out {finished} is not empty" in err and "new or empty directory" in err
  assert tree(finished) == before
  out = finished.parent / "exported"
  cli.main([*export, "--out", str(out)])
  assert (out / "tts_export.json").exists()
  (out / "model.safetensors").write_bytes(b"stale")
  cli.main([*export, "--out", str(out)])  # a previous export is replaced
  assert (out / "model.safetensors").read_bytes() != b"stale"


def test_export_to_a_file_is_named_and_leaves_nothing(finished, capsys):
  saved_model(finished / "policy" / "small" / "final")
  target = finished.parent / "model.bin"
  target.write_text("mine")
  err = tts(capsys, "export", DEMO, "--workdir", str(finished), "--model",
            "policy/small/final", "--out", str(target), *TINY)
  assert f"--out {target} is a file" in err
  assert target.read_text() == "mine"
  assert sorted(os.listdir(finished.parent)) == ["model.bin", "run"]


# 2. Stale upstream results.

def test_inputs_made_with_another_config_are_refused(finished, capsys):
  """select asked to run with search.seed=5 on search files made with seed 0."""
  before = tree(finished)
  err = tts(capsys, *run_args(finished, "--only", "select", "--force",
                              "--config.search.seed=5"))
  assert "needs stage 'search'" in err and "--only search --force" in err
  assert "search.seed: 0 -> 5" in err
  assert {k: v for k, v in tree(finished).items() if k != "config.json"} == {
      k: v for k, v in before.items() if k != "config.json"}


def test_a_done_stage_on_inputs_redone_with_another_config_is_not_skipped(finished, capsys):
  """search redone with seed 5 under a select made from seed-0 files: `--only select` with
  the seed-0 config must not skip as done (its input is no longer what it was made from)."""
  mark_done(finished, "--config.search.seed=5", only="search")
  err = tts(capsys, *run_args(finished, "--only", "select"))
  assert "needs stage 'search'" in err and "different config" in err


# 3. Nothing non-finite is read or written.

def test_nan_is_never_written_to_json(tmp_path):
  with pytest.raises(FloatingPointError, match=r"x\.json: scores\[1\] is nan"):
    atomic_files.write_json_atomic(str(tmp_path / "x.json"), {"scores": [0.5, float("nan")]})
  with pytest.raises(FloatingPointError, match=r"y\.jsonl line 2: s is inf"):
    atomic_files.write_jsonl_atomic(str(tmp_path / "y.jsonl"), [{"s": 1.0}, {"s": np.inf}])
  assert not os.listdir(tmp_path)


def test_damaged_weights_are_named_on_restore(finished, capsys):
  saved_model(finished / "prm" / "final", nan=True)
  err = tts(capsys, "export", DEMO, "--workdir", str(finished), "--model", "prm/final",
            "--out", str(finished.parent / "out"), *TINY)
  assert "prm/final/params: tensor final_norm/scale holds NaN" in err and "--force" in err


def test_corrupted_checkpoint_block_is_named(finished, capsys):
  """Random bytes inside the largest file of a verifier's weights (the issue's case): orbax
  fails to read them; the error names the checkpoint, not a traceback."""
  directory = saved_model(finished / "prm" / "final")
  files = [p for p in (directory / "params").rglob("*") if p.is_file()]
  block = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(block.read_bytes())
  # The middle half, not 2 KB: a small block can land where the file holds no tensor bytes
  # (seen once in a full suite run), and then nothing is damaged.
  quarter = len(data) // 4
  data[quarter:3 * quarter] = np.random.default_rng(0).bytes(2 * quarter)
  block.write_bytes(bytes(data))
  err = tts(capsys, "export", DEMO, "--workdir", str(finished), "--model", "prm/final",
            "--out", str(finished.parent / "out"), *TINY)
  assert "prm/final/params: the checkpoint cannot be read" in err and "--force" in err


# 4. A label shard that lost solutions.

def test_emptied_label_shard_is_named(finished, capsys):
  shards = finished / "label" / "shards"
  shards.mkdir(parents=True)
  (shards / "shard-00000.jsonl").write_text("")
  (shards / "shard-00000.jsonl.counts").write_text(json.dumps({"solutions_kept": 3}) + "\n")
  (finished / "label" / "manifest.json").write_text(json.dumps({"shards": 1}))
  err = tts(capsys, *run_args(finished, "--only", "prm", "--force"))
  assert "shard-00000.jsonl holds 0 solutions" in err and "records 3" in err


# 5. done.json is validated.

@pytest.mark.parametrize("content, needle", [
    ("garbage", "search/done.json line 1 column 1: not valid JSON"),
    (json.dumps({"fingerprint": "x", "summary": {}}), "has no valid 'inputs'"),
    ("[]", "is not a record of stage 'search'"),
])
def test_damaged_done_json_names_the_stage_to_redo(finished, capsys, content, needle):
  (finished / "search" / "done.json").write_text(content)
  err = tts(capsys, *run_args(finished, "--only", "select"))
  assert needle in err and "--only search --force" in err


# 6. One run at a time.

def test_second_run_names_the_lock_holder(finished, capsys):
  with workdir_lock.hold(str(finished)):
    err = tts(capsys, *run_args(finished, "--only", "report"))
  assert f"pid {os.getpid()} on host" in err and "lock.json" in err
  assert not (finished / "lock.json").exists()


def test_stale_lock_is_named_and_taken_over(finished, capsys):
  (finished / "lock.json").write_text(json.dumps(
      {"host": "gone", "pid": 999999999, "since": "2026-01-01T00:00:00Z"}))
  cli.main(run_args(finished, "--only", "report"))
  assert "left by pid 999999999 on host gone" in capsys.readouterr().out
  assert not (finished / "lock.json").exists()


# 7. Read errors name file and line.

def test_truncated_data_file_is_named_with_its_line(finished, capsys):
  (finished / "data" / "test.jsonl").write_text('{"id": 1}\n{"id": 2, "prom')
  err = tts(capsys, *run_args(finished, "--only", "search", "--force"))
  assert "data/test.jsonl line 2 column" in err and "not valid JSON" in err


def test_non_utf8_file_is_named(tmp_path):
  path = tmp_path / "x.jsonl"
  path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
  with pytest.raises(DataError, match=r"x\.jsonl line 2: byte 16 is not UTF-8"):
    atomic_files.read_jsonl(str(path))


# 8. Config values are checked before any stage runs.

@pytest.mark.parametrize("override, needle", [
    ("--config.policy.small.steps=-5", "policy.small.steps=-5: must be at least 1"),
    ("--config.policy.small.steps=0", "policy.small.steps=0: must be at least 1"),
    ("--config.prm.batch_size=0", "prm.batch_size=0: must be at least 1"),
    ("--config.orm.eval_every=0", "orm.eval_every=0: must be at least 1"),
    ("--config.search.budgets=(0,)", "search.budgets=(0,): must be one or more integers"),
    ("--config.search.budgets=(-2,)", "search.budgets=(-2,): must be one or more integers"),
    ("--config.search.budgets=5", "search.budgets: expected a tuple such as (5,)"),
    ("--config.search=3", "--config.search: '3' replaces a whole section"),
    ("--config.task.num_test=0", "task.num_test=0: must be at least 1"),
    ("--config.models.small.num_kv_heads=0", "models.small.num_kv_heads=0: must be at least 1"),
    ("--config.policy.small.lr=inf", "policy.small.lr=inf: expected a finite number"),
    ("--config.verifiers.base=medium",
     "verifiers.base='medium' is not a model the policy stage makes; set it to one of large, small"),
    ("--config.search.verifiers.prm.likelihood_reading=max",
     "config search.verifiers.prm: likelihood_reading='max'; use one of ('min', 'mean')"),
    ("--config.search.num_questions=17",
     "search.num_questions=17 is more than the task's 16 test questions (task.num_test); set "
     "search.num_questions <= 16"),
    ("--config.search.verifiers.prm.kind=likelihood",
     "difficulty.verifier='prm' is a likelihood verifier: it has no reading after a prompt for "
     "prompt bins; name a value-head verifier under search.verifiers (orm)"),
])
def test_out_of_range_config_is_named_before_any_stage(tmp_path, capsys, override, needle):
  workdir = tmp_path / "new"
  err = tts(capsys, *run_args(workdir, override), code=2 if "section" in needle
            or "expected a tuple" in needle else 1)
  assert needle in err
  assert not workdir.exists()


def test_attending_across_examples_needs_packed_rows(tmp_path, capsys):
  workdir = tmp_path / "new"
  err = tts(capsys, *run_args(workdir, "--config.data.pack=False",
                              "--config.data.attend_across_examples=True"), code=1)
  assert "data.attend_across_examples=True needs packed rows" in err
  assert not workdir.exists()


def test_compilation_cache_that_is_not_a_path(tmp_path, capsys):
  """A config file that sets it to a bool (an override keeps the field a string)."""
  path = tmp_path / "cfg.py"
  path.write_text("import ml_collections\nfrom tts import cli\n"
                  "def get_config():\n"
                  f"  c = cli.load_config({os.path.abspath(DEMO)!r}).to_dict()\n"
                  "  return ml_collections.ConfigDict(dict(c, compilation_cache=False))\n")
  workdir = tmp_path / "new"
  err = tts(capsys, "run", str(path), "--workdir", str(workdir), code=1)
  assert "compilation_cache=False is not a directory" in err and "'' to turn" in err
  assert not workdir.exists()


# 9. Other inputs that gave tracebacks or misleading hints.

def test_config_path_that_is_a_directory(tmp_path, capsys):
  err = tts(capsys, "run", str(tmp_path), "--workdir", str(tmp_path / "w"), code=2)
  assert f"config {tmp_path} is not a Python file" in err


def test_get_config_returning_a_dict(tmp_path, capsys):
  path = tmp_path / "cfg.py"
  path.write_text("def get_config():\n  return {'seed': 0}\n")
  err = tts(capsys, "run", str(path), "--workdir", str(tmp_path / "w"), code=2)
  assert "cfg.py: get_config() returned a dict" in err


def test_missing_weights_are_named(finished, capsys):
  directory = saved_model(finished / "prm" / "final")
  import shutil
  shutil.rmtree(directory / "params")
  err = tts(capsys, "export", DEMO, "--workdir", str(finished), "--model", "prm/final",
            "--out", str(finished.parent / "out"), *TINY)
  assert "prm/final/params not found" in err


def test_nan_loss_names_the_models_section(tmp_path, capsys):
  workdir = tmp_path / "w"
  cli.main(run_args(workdir, "--only", "data"))
  err = tts(capsys, *run_args(workdir, "--only", "policy", "--config.policy.small.lr=1e30"))
  assert "policy/small: loss is nan" in err and "Lower policy.small.lr (now 1e+30)" in err


def test_empty_split_is_named(finished, capsys):
  (finished / "data" / "test.jsonl").write_text("\n")
  err = tts(capsys, *run_args(finished, "--only", "search", "--force"))
  assert "data/test.jsonl holds no examples; the test split is empty" in err


def test_empty_data_file_is_named(tmp_path):
  path = tmp_path / "empty.jsonl"
  path.write_text("\n")
  with pytest.raises(DataError, match="empty.jsonl'?: the file holds no records"):
    math_jsonl.read_math_jsonl(str(path))


def test_mesh_hint_fits_the_config():
  from tts.model.sharding import make_mesh
  with pytest.raises(ValueError, match="multiply to 3, which must divide 1"):
    make_mesh({"data": -1, "fsdp": 3, "tensor": 1}, jax.devices()[:1])
  with pytest.raises(ValueError, match=r"set --config\.mesh\.data=-1"):
    make_mesh({"data": 2, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


@pytest.mark.parametrize("stage", ["policy", "label", "search", "difficulty", "revision_data",
                                   "revision_orm", "revision_search"])
def test_decode_mesh_that_does_not_fit_is_named(finished, capsys, stage):
  """The test-time mesh names its own section, not the training mesh's, in every stage that
  decodes (checked before the stage reads anything)."""
  err = tts(capsys, *run_args(finished, "--only", stage, "--force",
                              "--config.decode_mesh.tensor=2", "--config.decode_mesh.data=1"))
  assert "decode_mesh {'data': 1, 'fsdp': 1, 'tensor': 2} does not fit" in err
  assert "set --config.decode_mesh.data=-1" in err


# 10. A user's error is one line, not a traceback.

def test_stage_before_its_inputs(tmp_path, capsys):
  err = tts(capsys, *run_args(tmp_path / "w", "--only", "policy"))
  assert "stage 'policy' needs stage 'data'" in err and "--only data" in err


# 11. Suspicious data is reported with its lines.

def test_conflicting_duplicates_and_huge_lines_warn(tmp_path):
  path = tmp_path / "math.jsonl"
  line = lambda answer, extra="": json.dumps(
      {"problem": "1+1?" + extra, "solution": f"So \\boxed{{{answer}}}."})
  long_problem = " " * (math_jsonl.LONG_LINE_CHARS + 1)
  path.write_text("\n".join([line(2), line(3), line(2, long_problem)]) + "\n")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    math_jsonl.read_math_jsonl(str(path))
  messages = [str(w.message) for w in caught]
  assert any("math.jsonl:2: the problem of line 1 again" in m for m in messages), messages
  assert any("math.jsonl:3: the line is" in m for m in messages), messages


# 12. Reading a finished workdir writes nothing.

def test_rereading_a_finished_workdir_writes_nothing(finished, capsys):
  cli.main(run_args(finished))
  before = tree(finished)
  cli.main(run_args(finished, "--only", "report"))
  cli.main(run_args(finished))
  assert tree(finished) == before


def test_read_only_workdir_takes_no_lock(finished, monkeypatch):
  def read_only(path, *args, **kwargs):
    raise OSError(30, "Read-only file system", path)
  monkeypatch.setattr(workdir_lock.os, "open", read_only)
  with workdir_lock.hold(str(finished)):
    pass


# 13. Import checks the architecture, and names damaged files.

@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
  hf_models = pytest.importorskip("hf_models")
  directory = tmp_path_factory.mktemp("tiny_llama")
  hf_models.save_tiny_model(str(directory), "llama")
  return directory


def _copy(source, target, **config_changes):
  import shutil
  shutil.copytree(source, target)
  config_path = target / "config.json"
  config_json = json.loads(config_path.read_text())
  config_path.write_text(json.dumps({**config_json, **config_changes}))
  return target


def test_import_checks_architectures(tiny_llama, tmp_path, capsys):
  hf = _copy(tiny_llama, tmp_path / "hf", architectures=["LlamaForSequenceClassification"])
  err = tts(capsys, "import", str(hf), "--out", str(tmp_path / "out"))
  assert "architectures=['LlamaForSequenceClassification'] is not supported" in err


def test_import_names_unparsable_config_and_truncated_weights(tiny_llama, tmp_path, capsys):
  hf = _copy(tiny_llama, tmp_path / "hf")
  (hf / "config.json").write_text('{"model_type": "llama",\n "vocab')
  err = tts(capsys, "import", str(hf), "--out", str(tmp_path / "out"))
  assert "config.json line 2 column" in err
  hf = _copy(tiny_llama, tmp_path / "hf2")
  weights = hf / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:1000])
  err = tts(capsys, "import", str(hf), "--out", str(tmp_path / "out"))
  assert "model.safetensors is not a readable safetensors file" in err
