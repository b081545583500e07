"""Fixtures for the training tests: small `Trainer.fit` runs in subprocesses.

Each run is `tests/helpers/train_run.py` in a fresh Python (device count and
`jax.distributed` are fixed at jax import). Compile time dominates the suite, so every test
and every process it starts share one persistent XLA compilation cache under pytest's cache
dir (a program compiled once is loaded after, in this run and the next; the key covers jax
version, flags and HLO; `pytest --cache-clear` drops it), and compile at LLVM optimisation
level 0.
"""
import dataclasses
import gc
import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile

# In-process tests too: tiny programs, where compile time dominates (set before jax loads).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("TQDM_DISABLE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Tests using these fixtures run the pipeline or training subprocesses (tens of seconds to
# minutes each on 2 cores): they are marked `slow`, so `pytest -m "not slow"` is the quick
# day-to-day check. Other slow tests carry @pytest.mark.slow themselves. CI runs everything.
SLOW_FIXTURES = {"tiny_run", "copy_run", "made_run", "math_hf_run", "chat_run", "reference_run",
                 "run_train", "start_train"}


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: takes over ~4 s on 2 cores; deselect with -m 'not slow'")
  # One compilation cache for this process and, through the environment, every process the
  # tests start (`tts run` keeps a cache JAX already has: tts/compile_cache.py).
  cache = getattr(config, "cache", None)
  cache_dir = str(cache.mkdir("jax-compilation-cache") if cache is not None
                  else tempfile.mkdtemp(prefix="jax-compilation-cache-"))
  settings = {"JAX_COMPILATION_CACHE_DIR": cache_dir,
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  os.environ.update(settings)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_modifyitems(items):
  for item in items:
    if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Drops every compiled program after each test module. An XLA:CPU executable holds three
  memory maps until it is freed, and a process may hold vm.max_map_count of them (65530 by
  default): the suite compiles over 20,000 programs in one process, and past that limit the
  compiler's next mmap fails and the process dies with a segmentation fault."""
  yield
  jax.clear_caches()
  gc.collect()


HELPER = pathlib.Path(__file__).parent / "helpers" / "train_run.py"
TIMEOUT_S = 240  # per subprocess: a hang (e.g. a collective waiting forever) fails the test


@dataclasses.dataclass
class TrainResult:
  """What one train_run.py process left behind."""
  workdir: pathlib.Path
  arrays: dict  # the .npz contents, see train_run.py

  @property
  def params(self) -> dict[str, np.ndarray]:
    return {k[len("param/"):]: v for k, v in self.arrays.items() if k.startswith("param/")}

  def __getitem__(self, key):
    return self.arrays[key]


@dataclasses.dataclass
class TrainProcess:
  """A running train_run.py; `finish` waits for it (with the timeout) and loads its .npz."""
  proc: subprocess.Popen
  workdir: pathlib.Path
  out: pathlib.Path
  log: pathlib.Path

  def kill(self):
    """SIGKILL (no cleanup, like a preemption) if still running, and reap it."""
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()

  def log_tail(self, chars=4000) -> str:
    return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

  def finish(self, expect_rc=0, timeout=TIMEOUT_S) -> TrainResult | None:
    try:
      rc = self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"{self.log.name} still running after {timeout}s:\n{self.log_tail()}")
    assert rc == expect_rc, f"{self.log.name} exited {rc}, expected {expect_rc}:\n{self.log_tail()}"
    if not self.out.exists():
      return None
    with np.load(self.out) as f:
      return TrainResult(self.workdir, {k: f[k] for k in f.files})


@pytest.fixture(scope="session")
def _train_env():
  env = dict(os.environ)  # the compilation cache's settings among them (pytest_configure)
  # Replaces any inherited XLA_FLAGS (device counts come from train_run.py --devices only).
  # LLVM optimisation level 0 halves the cold compile (18 s -> 9 s for the reference run);
  # it moves results by ~1e-7 and every run here uses it, so comparisons are unaffected.
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  root = str(HELPER.parents[2])  # import this checkout's tts, whatever is installed
  env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
  env.update(JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
  return env


@pytest.fixture(scope="session")
def start_train(_train_env, tmp_path_factory):
  """start_train(name, *flags, workdir=None) -> TrainProcess; flags go to train_run.py.
  Several processes may share a workdir (multi-process runs, resumes)."""
  def start(name, *flags, workdir=None):
    base = tmp_path_factory.mktemp(name)
    workdir = pathlib.Path(workdir or base / "workdir")
    out, log = base / "result.npz", base / f"{name}.log"
    cmd = [sys.executable, str(HELPER), "--workdir", str(workdir), "--out", str(out),
           *map(str, flags)]
    with open(log, "w") as f:
      proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_train_env,
                              cwd=HELPER.parents[2])
    return TrainProcess(proc, workdir, out, log)
  return start


@pytest.fixture(scope="session")
def run_train(start_train):
  """run_train(name, *flags, workdir=None, expect_rc=0) -> TrainResult, blocking."""
  def run(name, *flags, workdir=None, expect_rc=0):
    return start_train(name, *flags, workdir=workdir).finish(expect_rc=expect_rc)
  return run


@pytest.fixture(scope="session")
def reference_run(run_train):
  """The uninterrupted one-device run every distributed or resumed run must reproduce."""
  return run_train("reference")


# Sharded vs one-device runs differ only in summation order: measured max |diff| ~1e-6 on
# losses (~3.0) and ~3e-7 on parameters. A wrong loss normalisation moves them by 1e-2+.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="session")
def assert_same_training():
  """assert_same_training(result, reference): same 12-step loss history and parameters."""
  def check(result, reference, rtol=RTOL, atol=ATOL):
    np.testing.assert_array_equal(result["metric_steps"], np.arange(1, 13))
    np.testing.assert_allclose(result["loss"], reference["loss"], rtol=rtol, atol=atol,
                               err_msg="per-step loss history")
    assert result.params.keys() == reference.params.keys()
    for name, value in reference.params.items():
      np.testing.assert_allclose(result.params[name], value, rtol=rtol, atol=atol, err_msg=name)
  return check


@pytest.fixture(scope="session")
def train_run_module():
  """tests/helpers/train_run.py as a module (its task data and rules), for in-process use."""
  spec = importlib.util.spec_from_file_location("train_run", HELPER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="session")
def list_checkpoints():
  """list_checkpoints(workdir) -> finished checkpoint steps in workdir/checkpoints (Orbax
  writes a temporary directory and renames it to the step number when complete)."""
  def steps(workdir) -> list[int]:
    directory = pathlib.Path(workdir) / "checkpoints"
    if not directory.exists():
      return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
  return steps


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """Every stage of the demo config at toy scale (tests/tiny.py), run once per session.
  Tests that change files work on a copy (`copy_run`)."""
  from tiny import config

  from tts import experiment
  directory = str(tmp_path_factory.mktemp("tiny_run"))
  experiment.run(config(), directory)
  return directory


@pytest.fixture
def copy_run(tiny_run, tmp_path):
  import shutil
  return shutil.copytree(tiny_run, tmp_path / "run")
