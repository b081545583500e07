"""Mathematical equivalence of two answers by math-verify, bounded so no answer can stall.

math-verify bounds a comparison with SIGALRM, which only a main thread may set, and sympy
can stall where no signal reaches (`2` against `9^{9^{9}}` kept a worker thread busy for
over 25 s). So comparisons run in one child process per grading process (`python -m
tts.data.math_grader`, reading JSON lines): there math-verify's own timeout works, and the
parent kills and restarts the child when an answer is not back by a hard deadline. A
comparison that times out either way counts as not equivalent; `timeouts()` counts them
so that a stage can report them (done.json's `grading_timeouts`).
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import select
import subprocess
import sys
import threading

TIMEOUT_S = 5  # math-verify's own limit per comparison, in the child
DEADLINE_S = 3 * TIMEOUT_S  # the parent's limit per comparison, then the child is killed
STARTUP_S = 120  # importing sympy on a loaded machine

_lock = threading.Lock()
_worker: "_Worker | None" = None
_timeouts = 0


class _Worker:
  """The child process and the pipes to it (one request in flight at a time)."""

  def __init__(self):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    self.pid = os.getpid()  # a forked parent must not share the pipes
    self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, env=env, text=True)
    if self._read(STARTUP_S) != {"ready": True}:
      self.close()
      raise RuntimeError("the math-verify grading process did not start "
                         f"(`{sys.executable} -m {__name__}`); is math-verify installed?")

  def _read(self, seconds: float) -> dict | None:
    ready, _, _ = select.select([self.proc.stdout], [], [], seconds)
    line = self.proc.stdout.readline() if ready else ""
    return json.loads(line) if line else None

  def compare(self, gold: str, pred: str, deadline_s: float) -> bool | None:
    """True / False, or None when the comparison timed out (the child is then gone)."""
    self.proc.stdin.write(json.dumps([gold, pred]) + "\n")
    self.proc.stdin.flush()
    reply = self._read(deadline_s)
    if reply is None:
      self.close()
      return None
    return None if reply["timeout"] else reply["same"]

  def alive(self) -> bool:
    return self.pid == os.getpid() and self.proc.poll() is None

  def close(self):
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()


def _close_worker():
  if _worker is not None and _worker.pid == os.getpid():
    _worker.close()


atexit.register(_close_worker)


def compare(gold: str, pred: str, deadline_s: float = DEADLINE_S) -> bool:
  """Whether `pred` is equivalent to `gold` (uncached; a timeout counts as False)."""
  global _worker, _timeouts
  with _lock:
    if _worker is None or not _worker.alive():
      _worker = _Worker()
    same = _worker.compare(gold, pred, deadline_s)
    if same is None:
      _timeouts += 1
      if not _worker.alive():
        _worker = None
    return bool(same)


@functools.lru_cache(maxsize=1 << 16)
def equivalent(gold: str, pred: str) -> bool:
  """`compare`, cached: voting compares the same answers many times."""
  return compare(gold, pred)


def timeouts() -> int:
  """Comparisons of this process that timed out (each distinct pair once, as cached)."""
  return _timeouts


# The child process.

@functools.lru_cache(maxsize=1 << 16)
def _parse(answer: str) -> tuple:
  import math_verify
  return tuple(math_verify.parse("\\boxed{" + answer + "}", parsing_timeout=TIMEOUT_S))


def _verify(gold: str, pred: str) -> dict:
  """Any pair of parses that agrees decides; a timeout matters only when none does."""
  import math_verify
  from math_verify.errors import TimeoutException
  timed_out = False
  for g in _parse(gold):
    for p in _parse(pred):
      try:
        if math_verify.verify(g, p, timeout_seconds=TIMEOUT_S, raise_on_error=True):
          return {"same": True, "timeout": False}
      except TimeoutException:
        timed_out = True
      except Exception:  # noqa: BLE001 - an answer sympy cannot compare is not equivalent
        pass
  return {"same": False, "timeout": timed_out}


def _serve():
  import math_verify  # noqa: F401 - import before "ready": it takes seconds
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    gold, pred = json.loads(line)
    print(json.dumps(_verify(gold, pred)), flush=True)


if __name__ == "__main__":
  _serve()
