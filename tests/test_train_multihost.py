"""Two processes (two 'hosts') train the same model as one process, and share checkpoints.

On a pod every host runs `Trainer.fit` on its own slice of each batch
(`batches.make_global_batch`), parameters sharded across hosts, and all hosts write one
Orbax checkpoint. None of that is exercised by forced-device tests in a single process,
so here two CPU processes meet through `jax.distributed.initialize` on localhost, with
the mesh fsdp=2 putting half of every sharded tensor in each process.

Found out for jax 0.10: no `jax_cpu_collectives_implementation` setting is needed; its
default is already "gloo", used once `jax.distributed` is initialised (the log shows
"[Gloo] Rank 0 is connected to 1 peer ranks"). Each gloo collective costs ~4 ms here,
so an fsdp step (an all-gather or reduce-scatter per parameter use) takes ~0.5 s and
this is the slowest test.
"""
import socket

import numpy as np


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(reference_run, start_train, run_train, tmp_path,
                                        assert_same_training):
  """Two processes, one CPU device each, mesh fsdp=2: the 12-step loss history and final
  parameters equal the one-device run (same tolerance as the 8-device test), and the
  checkpoint both processes wrote restores in a single process to the same parameters."""
  workdir = tmp_path / "shared_workdir"
  coordinator = f"localhost:{_free_port()}"
  procs = [start_train(f"host{i}", "--mesh", "1,2,1", "--coordinator", coordinator,
                       "--num_processes", 2, "--process_id", i, workdir=workdir)
           for i in range(2)]
  try:
    result = procs[0].finish()
    procs[1].finish()
  finally:
    for p in procs:
      p.kill()
  assert int(result["process_count"]) == 2 and int(result["device_count"]) == 2
  # Each process held half of the embedding: parameters were sharded across processes.
  np.testing.assert_array_equal(result["shard_shape/embed"], [32, 16])
  assert_same_training(result, reference_run)

  # Resuming the finished multi-process workdir in one process restores step 12 and runs
  # nothing: the params it returns are the checkpoint's.
  restored = run_train("restore_1proc", workdir=workdir)
  assert int(restored["start_step"]) == 12
  for name, value in result.params.items():
    np.testing.assert_array_equal(restored.params[name], value, err_msg=name)


def test_sigterm_to_one_host_stops_both_at_one_saved_step(reference_run, start_train, run_train,
                                                          tmp_path, assert_same_training):
  """A real SIGTERM to process 1 only: jax's preemption service (not a Python handler, which
  would replace its own) tells both processes the same step, both save it together and exit
  4 (Preempted). One process then resumes there to the uninterrupted result."""
  import json
  import time
  workdir = tmp_path / "preempted_workdir"
  coordinator = f"localhost:{_free_port()}"
  procs = [start_train(f"preempt_host{i}", "--mesh", "2,1,1", "--coordinator", coordinator,
                       "--num_processes", 2, "--process_id", i, "--checkpoint_every", 100,
                       "--throttle", 1, "--throttle_from", 3, workdir=workdir)
           for i in range(2)]
  metrics = workdir / "metrics.jsonl"
  logged = lambda: [json.loads(line)["step"] for line in metrics.read_text().splitlines()
                    if line.endswith("}")] if metrics.exists() else []
  try:
    deadline = time.monotonic() + 240
    while 3 not in logged():
      assert all(p.proc.poll() is None for p in procs), procs[0].log_tail()
      assert time.monotonic() < deadline, "no step 3 within 240 s"
      time.sleep(0.02)
    procs[1].proc.terminate()
    stopped = procs[0].finish(expect_rc=4)
    procs[1].finish(expect_rc=4)
  finally:
    for p in procs:
      p.kill()
  step = logged()[-1]
  assert 3 <= step < 12 and logged() == list(range(1, step + 1))
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == [step]
  assert f"preempted (SIGTERM) at step {step} of 12" in str(stopped["error"])

  resumed = run_train("after_preempt_1proc", workdir=workdir)
  assert int(resumed["start_step"]) == step
  assert_same_training(resumed, reference_run)
