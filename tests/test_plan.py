"""`tts plan`: per-device memory of the train and decode steps, from abstract inputs.

The end-to-end check runs the command on the tiny config over 8 fake devices (a
subprocess: the device count is fixed when jax starts) and compiles the same steps from
real, allocated arrays in the same process (tests/helpers/plan_check.py); every printed
size must equal the reference's to the four digits printed, and `fits` must follow --hbm.
"""
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from tiny import DEMO, config

from tts import cli, plan
from tts.interop.hf_layout import model_config_from_hf

HELPER = pathlib.Path(__file__).parent / "helpers" / "plan_check.py"
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
SIZE_COLUMNS = ("params", "optimizer", "KV cache", "other in", "outputs", "aliased", "temp",
                "total")
HBM_GIB = 200 / (1 << 20)  # 200 KiB: between the tiny decode steps and the train steps


def parse_table(text: str) -> dict[str, dict]:
  """(model/step) -> {column: bytes or text} from the printed table."""
  lines = [line for line in text.splitlines() if line.strip()]
  start = next(i for i, line in enumerate(lines) if line.startswith("model "))
  rows = {}
  for line in lines[start + 1:]:
    if line.startswith("search, "):
      number, unit = line.split(": ")[-1].split(",")[0].split()
      rows["search"] = {"total": float(number) * UNITS[unit], "fits": line.split(", ")[-1]}
      continue
    cells = re.split(r"\s{2,}", line.strip())
    row = dict(zip(plan.COLUMNS, cells))
    for column in SIZE_COLUMNS:
      number, unit = row[column].split()
      row[column] = float(number) * UNITS[unit]
    rows[f"{row['model']}/{row['step']}"] = row
  return rows


@pytest.mark.slow
def test_plan_equals_compiled_memory_of_real_arrays(tmp_path):
  out = tmp_path / "plan.json"
  env = dict(os.environ, PYTHONPATH=str(HELPER.parents[2]), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0")
  done = subprocess.run([sys.executable, str(HELPER), str(out), "--hbm", str(HBM_GIB)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-4000:]
  result = json.loads(out.read_text())
  printed, reference = parse_table(result["table"]), result["reference"]
  assert sorted(printed) == sorted(reference) + ["search"]
  fits = set()
  for key, ref in reference.items():
    row = printed[key]
    expected = {"params": ref["params"], "optimizer": ref.get("optimizer", 0),
                "KV cache": ref.get("kv_cache", 0), "outputs": ref["outputs"],
                "aliased": ref["aliased"], "temp": ref["temp"],
                "other in": ref["inputs"] - ref["params"] - ref.get("optimizer", 0)
                - ref.get("kv_cache", 0),
                "total": ref["inputs"] + ref["outputs"] - ref["aliased"] + ref["temp"]}
    for column, value in expected.items():
      assert row[column] == pytest.approx(value, rel=5e-4, abs=0.5), (key, column)
    # The train and decode steps read every input (only a verifier's scoring skips its LM head).
    if not key.endswith("/score"):
      assert ref["arguments"] == ref["inputs"], key
    assert row["fits"] == ("fits" if expected["total"] <= HBM_GIB * (1 << 30) else "does not fit")
    fits.add(row["fits"])
  assert fits == {"fits", "does not fit"}, "the tiny --hbm should split the steps"
  total = lambda r: r["inputs"] + r["outputs"] - r["aliased"] + r["temp"]
  decode, score = reference["policy.small/decode"], reference["prm/score"]
  # While few rows are live they decode in a batch of their own, beside both full caches.
  live_batch = 0.75 * (decode["kv_cache"] + score["kv_cache"])
  both = max(total(decode) + score["params"] + score["kv_cache"],
             total(score) + decode["params"] + decode["kv_cache"]) + live_batch
  assert printed["search"]["total"] == pytest.approx(both, rel=5e-4)
  assert printed["search"]["fits"] == ("fits" if both <= HBM_GIB * (1 << 30) else "does not fit")
  assert printed["policy.small/train"]["rows x tokens"] == "8 x 40"


def tts_error(capsys, monkeypatch, *args) -> str:
  """Runs `tts plan ARGS` in-process; returns its one `tts: error:` line."""
  for name in ("XLA_FLAGS", "JAX_PLATFORMS"):  # the plan sets them; restore after the test
    monkeypatch.setenv(name, os.environ.get(name, ""))
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["plan", DEMO, *args])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("tts: error: "), err
  return err


@pytest.mark.parametrize("args, named", [
    (("--devices", "0"), "--devices 0"),
    (("--devices", "8", "--host_devices", "3"), "--host_devices 3"),
    (("--hbm", "-1"), "--hbm -1"),
    (("--steps", "prefill"), "--steps prefill"),
    (("--models", "policy.small,critic"), "--models critic"),
    (("--devices", "1", "--hf-config", "huge=config.json"), "--hf-config huge"),
    (("--devices", "1", "--hf-config", "no/such/config.json"), "no/such/config.json"),
    (("--devices", "1", "--config.mesh.fsdp=3"), "mesh"),
])
def test_bad_plan_flags_give_one_error_line(capsys, monkeypatch, args, named):
  assert named in tts_error(capsys, monkeypatch, *args)


def test_hf_config_gives_the_importers_shape(tmp_path):
  """--hf-config small=PATH: the small policy (and so the verifiers and the revision model)
  takes the ModelConfig the importer builds from that config.json; the large one stays.
  Dtypes and layer layout come from models.small (a config.json says neither)."""
  hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 512}
  path = tmp_path / "config.json"
  path.write_text(json.dumps(hf))
  cfg = config()
  shapes = plan.model_shapes(cfg, {"small": str(path)})
  assert shapes["small"] == model_config_from_hf(hf, str(path))
  assert shapes["small"].d_model == 64 and shapes["small"].num_layers == 3
  assert shapes["large"] == plan.model_shapes(cfg, {})["large"]
  assert shapes["large"].d_model == cfg.models.large.d_model
  bf16 = config("--config.models.small.param_dtype=bfloat16",
                "--config.models.small.dtype=bfloat16")
  small = plan.model_shapes(bf16, {"small": str(path)})["small"]
  assert (small.param_dtype, small.dtype, small.d_model) == ("bfloat16", "bfloat16", 64)
  scanned = config("--config.models.small.scan_layers=True", "--config.models.small.remat=full")
  small = plan.model_shapes(scanned, {"small": str(path)})["small"]
  assert (small.scan_layers, small.remat, small.d_model) == (True, "full", 64)


def test_verifiers_are_planned_in_the_shape_verifiers_base_names():
  """A PRM from the large model: its train and score steps hold the large model's weights
  plus a value head (one float32 copy on one device), the revision model the small's."""
  cfg = config("--config.verifiers.base=large")
  shapes = plan.model_shapes(cfg, {})
  request = plan.PlanRequest(host_devices=1, shapes=shapes, models=("prm", "revision"),
                             prompt_tokens=16)
  large = dataclasses.replace(shapes["large"], value_head=True)
  steps = {(m.model, m.step): m for m in plan.plan(cfg, request)}
  assert steps["prm", "train"].params == steps["prm", "score"].params == 4 * large.num_params
  assert steps["revision", "train"].params == 4 * shapes["small"].num_params


def test_batch_that_does_not_split_over_the_mesh_names_its_field():
  """Caught before compiling: the config field and the multiple to pick, not jax's message.
  A subprocess: 8 devices need a jax of their own."""
  env = dict(os.environ, PYTHONPATH=str(HELPER.parents[2]))
  done = subprocess.run(
      [sys.executable, "-m", "tts.cli", "plan", DEMO, "--devices", "8", "--models",
       "policy.small", "--steps", "train", "--config.mesh.data=8",
       "--config.policy.small.batch_size=12"],
      env=env, capture_output=True, text=True, timeout=300, cwd=HELPER.parents[2])
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr == ("tts: error: policy.small.batch_size=12 does not split over the "
                         "mesh's 8 batch shards; pick a multiple of 8\n")


def test_rule_that_does_not_divide_a_parameter_names_it():
  """The demo's 25-token vocabulary over tensor=2: one line naming the parameter, the
  dimension, the mesh axis and the fix, before anything compiles (it used to be replicated
  on every chip without a word)."""
  env = dict(os.environ, PYTHONPATH=str(HELPER.parents[2]))
  done = subprocess.run(
      [sys.executable, "-m", "tts.cli", "plan", DEMO, "--devices", "8", "--models",
       "policy.small", "--steps", "train", "--config.mesh.data=4", "--config.mesh.tensor=2"],
      env=env, capture_output=True, text=True, timeout=300, cwd=HELPER.parents[2])
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr == (
      "tts: error: logical_axis_rules: parameter embed dimension 0 ('vocab', size 25) does not "
      "divide over mesh axis tensor (size 2); map 'vocab' to None in logical_axis_rules or "
      "pick a mesh whose tensor size divides 25\n")
