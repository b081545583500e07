"""A run's persistent compilation cache: where it lives, and that a second process loads
what the first compiled instead of compiling it."""
import json
import os
import subprocess
import sys

from tts import compile_cache

# One stage that compiles one program, run in a fresh process (JAX opens its cache once per
# process) with the config's default cache setting.
STAGE = """
import os, sys
import jax, ml_collections, numpy as np
from tts import compile_cache, pipeline
workdir = sys.argv[1]
print(compile_cache.use("compilation_cache", workdir))
def compiles(ctx):
  os.makedirs(ctx.stage_dir("compiles"), exist_ok=True)
  jax.jit(lambda x: x * 3.0 - 1.0)(np.ones(7, np.float32)).block_until_ready()
  return {}
config = ml_collections.ConfigDict({"a": {"steps": 1}})
pipeline.run_stages([pipeline.Stage("compiles", compiles, config_keys=("a",))],
                    pipeline.Context(config, workdir), force=True, log=print)
"""


def test_cache_dir_is_under_the_workdir_unless_absolute_or_a_bucket(tmp_path):
  assert compile_cache.cache_dir("compilation_cache", "runs/x") == "runs/x/compilation_cache"
  assert compile_cache.cache_dir("/shared/xla", "runs/x") == "/shared/xla"
  assert compile_cache.cache_dir("gs://bucket/xla", "gs://bucket/run") == "gs://bucket/xla"
  assert compile_cache.cache_dir("", "runs/x") is None


def test_a_second_process_loads_the_programs_the_first_compiled(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")
         and k != "JAX_COMPILATION_CACHE_DIR"}  # the config's setting, not the suite's cache
  env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(__file__))]
                                      + [p for p in [env.get("PYTHONPATH")] if p])
  workdir = str(tmp_path / "run")
  records = []
  for _ in range(2):
    out = subprocess.run([sys.executable, "-c", STAGE, workdir], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == os.path.join(workdir, "compilation_cache")
    records.append(json.load(open(os.path.join(workdir, "compiles", "done.json")))["compiled"])
  first, second = records
  assert first["programs"] >= 1 and first["cached"] == 0
  assert os.listdir(os.path.join(workdir, "compilation_cache"))
  assert second["cached"] == first["programs"] and second["programs"] == 0
