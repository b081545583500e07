"""One run at a time per workdir: `lock.json` names the holder (host, pid, start time).

The lock is an flock on that file, so the kernel drops it when the holder dies, even by
kill -9; the file's content then names a stale holder, which the next run reports and
replaces. A read-only workdir takes no lock: no run can change it.
"""
import contextlib
import errno
import fcntl
import json
import os
import socket
import time

LOCK_FILE = "lock.json"


class WorkdirLocked(Exception):
  """Another run holds the workdir."""


def _holder(text: str) -> str:
  try:
    h = json.loads(text)
    return f"pid {h['pid']} on host {h['host']} (since {h['since']})"
  except (ValueError, KeyError, TypeError):
    return "an unknown process"


@contextlib.contextmanager
def hold(workdir: str, log=print):
  """Holds the lock of `workdir` for the body; raises WorkdirLocked naming the holder."""
  path = os.path.join(workdir, LOCK_FILE)
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        yield  # nothing here can be written, by this run or another
        return
      raise
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      with open(path) as f:
        holder = _holder(f.read())
      os.close(fd)
      raise WorkdirLocked(f"{workdir} is in use by another run: {holder} holds {path}. Wait "
                          "for it to finish, or use another --workdir") from None
    # The holder before us may have removed the file after we opened it: retry on the new one.
    if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
      break
    os.close(fd)
  try:
    previous = os.pread(fd, 1 << 16, 0).decode(errors="replace")
    if previous.strip():
      log(f"tts: {path} was left by {_holder(previous)}, which is no longer running (a stale "
          "lock); taking it over")
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    yield
  finally:
    os.remove(path)
    os.close(fd)
