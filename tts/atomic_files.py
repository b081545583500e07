"""Atomic file writes: write to a temporary name, then rename, so readers (and a rerun after
a kill) never see half a file. And the one JSONL reader for what they write."""
import json
import os

import numpy as np


def write_lines_atomic(path: str, lines):
  """Writes each string of `lines` (newline-terminated by the caller) atomically."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.writelines(lines)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json_atomic(path: str, obj):
  write_lines_atomic(path, [json.dumps(obj, indent=2, sort_keys=True, default=_json_default)])


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_jsonl_atomic(path: str, records):
  write_lines_atomic(path, (json.dumps(r, default=_json_default) + "\n" for r in records))


def _json_default(x):
  if isinstance(x, (np.integer, np.floating)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"cannot write {type(x).__name__} to JSON")
