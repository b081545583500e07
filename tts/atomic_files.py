"""Atomic file writes: write to a temporary name, then rename, so readers (and a rerun after
a kill) never see half a file. And the readers for what they write, whose errors name the
file and line, and a check that no number written is NaN or infinite.

Paths may be local or a bucket's (`gs://bucket/run`, through `etils.epath`): an object
store has no rename, but an object appears whole when its upload completes, which is the
same guarantee; it has no append either, so appending rewrites the object.
"""
import json
import math
import os
import shutil

import numpy as np
from etils import epath

from tts.data.errors import DataError


def is_remote(path) -> bool:
  """A bucket URI (gs://, s3://, ...), which os.path would treat as a relative path."""
  return "://" in os.fspath(path)


def absolute(path: str) -> str:
  """os.path.abspath for local paths; a bucket URI as it is."""
  return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return epath.Path(path).exists() if is_remote(path) else os.path.exists(path)


def is_dir(path: str) -> bool:
  return epath.Path(path).is_dir() if is_remote(path) else os.path.isdir(path)


def make_dirs(path: str):
  """The directory and its parents (in a bucket, at most a placeholder object)."""
  if is_remote(path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def remove_tree(path: str):
  """Deletes a directory this tool wrote, and everything under it."""
  if is_remote(path):
    epath.Path(path).rmtree()
  else:
    shutil.rmtree(path)


def write_bytes_atomic(path: str, data: bytes):
  make_dirs(os.path.dirname(path) or ".")
  if is_remote(path):
    epath.Path(path).write_bytes(data)
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_lines_atomic(path: str, lines):
  """Writes each string of `lines` (newline-terminated by the caller) atomically, as UTF-8."""
  write_bytes_atomic(path, "".join(lines).encode())


def append_lines(path: str, lines):
  """Appends `lines` to `path` (an object in a bucket is rewritten whole)."""
  if is_remote(path):
    old = read_text(path) if exists(path) else ""
    epath.Path(path).write_text(old + "".join(lines))
    return
  with open(path, "a") as f:
    f.writelines(lines)


def write_json_atomic(path: str, obj):
  write_lines_atomic(path, [to_json(obj, path, indent=2, sort_keys=True)])


def write_json_if_changed(path: str, obj) -> bool:
  """Writes `obj` unless `path` already holds exactly it, so rereading a finished workdir
  (even a read-only one) writes nothing. Returns whether it wrote."""
  text = to_json(obj, path, indent=2, sort_keys=True)
  try:
    if epath.Path(path).read_text() == text:
      return False
  except (OSError, UnicodeDecodeError):
    pass
  write_lines_atomic(path, [text])
  return True


def check_replaceable(directory: str, marker: str, flag: str):
  """A directory the tool may replace: absent, empty, or one it wrote (it holds `marker`).
  Anything else is an error naming `flag`: never delete what the tool did not create."""
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise FileExistsError(f"{flag} {directory} is a file; pass a new or empty directory")
  if os.path.isdir(directory) and os.listdir(directory) and not os.path.isfile(
      os.path.join(directory, marker)):
    raise FileExistsError(f"{flag} {directory} is not empty and was not written by this "
                          f"command (no {marker}); its files are kept. Pass a new or empty "
                          "directory")


def write_jsonl_atomic(path: str, records):
  write_lines_atomic(path, [to_json(r, f"{path} line {i}") + "\n"
                            for i, r in enumerate(records, 1)])


def to_json(obj, where: str, **kwargs) -> str:
  """json.dumps that refuses NaN and infinity (not JSON), naming `where` and the key."""
  try:
    return json.dumps(obj, default=_json_default, allow_nan=False, **kwargs)
  except ValueError:
    check_finite(obj, where)
    raise


def read_json(path: str):
  """The JSON value in `path`; a malformed file is a DataError naming file, line, column."""
  text = read_text(path)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg}); "
                    "the file is damaged: restore it or redo the step that wrote it") from None


def read_jsonl(path: str) -> list[dict]:
  """One JSON object per non-blank line; a bad line is a DataError naming file and line."""
  out = []
  for number, line in enumerate(read_text(path).split("\n"), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path} line {number} column {e.colno}: not valid JSON ({e.msg}); "
                      "the file is damaged: restore it or redo the step that wrote it") from None
    if not isinstance(record, dict):
      raise DataError(f"{path} line {number}: expected a JSON object, got "
                      f"{type(record).__name__}")
    out.append(record)
  return out


def read_text(path: str) -> str:
  """The UTF-8 text of `path`; other bytes are a DataError naming file and line."""
  data = epath.Path(path).read_bytes()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise DataError(f"{path} line {line}: byte {e.start} is not UTF-8 ({e.reason}); "
                    "save the file as UTF-8") from None


def check_finite(obj, where: str, path: str = ""):
  """Raises FloatingPointError naming `where` and the key path of a NaN or infinity."""
  if isinstance(obj, (float, np.floating)):
    if not math.isfinite(obj):
      raise FloatingPointError(f"{where}: {path or 'value'} is {float(obj)}; a non-finite "
                               "number is never written (a model or its inputs are broken)")
  elif isinstance(obj, dict):
    for key, value in obj.items():
      check_finite(value, where, f"{path}.{key}" if path else str(key))
  elif isinstance(obj, (list, tuple)):
    for i, value in enumerate(obj):
      check_finite(value, where, f"{path}[{i}]")
  elif isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and not np.isfinite(obj).all():
    raise FloatingPointError(f"{where}: {path or 'value'} holds non-finite numbers; a "
                             "non-finite number is never written")


def _json_default(x):
  if isinstance(x, (np.integer, np.floating)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"cannot write {type(x).__name__} to JSON")
