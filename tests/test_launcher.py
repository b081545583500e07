"""scripts/launch_multihost.sh: every argument reaches every host unchanged."""
import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parents[1] / "scripts" / "launch_multihost.sh"
# The README's override: pasted unquoted into a remote shell, `(` is a syntax error.
ARGS = ["configs/demo.py", "--workdir", "/shared/runs/a b",
        "--config.revision_search.budgets=(1,2,4,8,16)", "--config.search.name=it's"]


def _dry_run(*args, env=None) -> list[str]:
  out = subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True,
                       text=True, env={**os.environ, "LAUNCH_DRY_RUN": "1", **(env or {})})
  return shlex.split(out.stdout)


@pytest.fixture
def fake_tts(tmp_path):
  """A `tts` on PATH that records the arguments it was given."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "tts").write_text(
    f"#!{sys.executable}\nimport json, sys\n"
    f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
  (bin_dir / "tts").chmod(0o755)
  return bin_dir


def test_tpu_remote_command_keeps_each_argument(tmp_path, fake_tts):
  """The remote command is one string a shell reads again: run it as the worker would."""
  argv = _dry_run("tpu", "my-tpu", "us-central2-b", *ARGS,
                  env={"TTS_REMOTE_DIR": str(tmp_path), "TTS_LOG_DIR": "worker logs"})
  assert argv[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone",
                      "us-central2-b"]
  remote = argv[argv.index("--command") + 1]
  env = {**os.environ, "PATH": f"{fake_tts}{os.pathsep}{os.environ['PATH']}"}
  subprocess.run(["bash", "-c", remote], check=True, env=env, capture_output=True)
  assert json.loads((tmp_path / "argv.json").read_text()) == ["run", *ARGS, "--distributed"]
  logs = list((tmp_path / "worker logs").iterdir())
  assert len(logs) == 1 and logs[0].suffix == ".log"  # one log per worker, named by host


def test_slurm_and_manual_pass_arguments_as_given(tmp_path):
  slurm = _dry_run("slurm", "4", *ARGS, env={"TTS_LOG_DIR": str(tmp_path)})
  assert slurm[slurm.index("tts"):] == ["tts", "run", *ARGS, "--distributed"]
  assert f"--output={tmp_path}/%N-%t.log" in slurm
  manual = _dry_run("manual", "host0:1234", "2", "1", *ARGS)
  assert manual == ["tts", "run", *ARGS, "--coordinator", "host0:1234", "--num_processes",
                    "2", "--process_id", "1"]
