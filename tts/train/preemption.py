"""Preemption notices: stop at a step boundary with the state saved there.

A scheduler reclaiming the machines sends SIGTERM and waits a grace period before SIGKILL.
Without a handler the process dies at once and loses the steps since the last checkpoint.
One process: a handler notes the signal and the train loop stops after the step in flight.
Several processes (jax.distributed): jax's preemption service catches the signal on the
host that got it and all hosts agree on the step at which to stop together
(`multihost_utils.reached_preemption_sync_point`, asked through orbax).
"""
import signal
import threading

import jax


class Preempted(Exception):
  """Training stopped on a preemption notice; its last checkpoint resumes it."""


class PreemptionNotice:
  """Context manager: `requested(step)` is True once the run should save and stop.

  `reached_sync_point(step)`: every process calls it at every step (orbax
  CheckpointManager.reached_preemption; False without jax.distributed)."""

  def __init__(self, reached_sync_point):
    self._reached_sync_point = reached_sync_point
    self._signal = None
    self._previous = None

  def __enter__(self):
    # jax.distributed's preemption service owns SIGTERM on multi-process runs; a Python
    # handler would replace its own. Handlers can only be set from the main thread.
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and not jax.distributed.is_initialized():
      self._previous = signal.signal(signal.SIGTERM, self._note)
    return self

  def _note(self, signum, frame):
    del frame
    self._signal = signum

  def requested(self, step: int) -> bool:
    # The sync point first: every process must ask it at every step.
    return self._reached_sync_point(step) or self._signal is not None

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
