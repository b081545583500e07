"""Decoding split across hosts (every stage that samples: test-time compute and the data
verifiers and revisions train on): each process decodes a contiguous share of the questions
on its own devices, writes its records as a part file, and process 0 joins the parts into
the result file in question order. One process: no parts, the file directly.

Records depend only on a question's own keys (never on its batch), so the joined file is
the one a single process writes; a killed stage recomputes the file that is missing (parts
are rewritten, never trusted across runs).
"""
import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from tts.atomic_files import read_jsonl, write_jsonl_atomic


def share(num_items: int) -> range:
  """This process's contiguous share of `num_items` (the first processes take one more)."""
  count, index = jax.process_count(), jax.process_index()
  per, extra = divmod(num_items, count)
  start = index * per + min(index, extra)
  return range(start, start + per + (index < extra))


def summed(counts: list[int]) -> list[int]:
  """Counts added up over every process (each counted its own share), on every process."""
  if jax.process_count() == 1:
    return list(counts)
  return multihost_utils.process_allgather(np.asarray(counts, np.int32)).sum(0).tolist()


def all_records(path: str, mine: list[dict]) -> list[dict]:
  """Every process's records, in process order (question order for contiguous shares), on
  every process: each writes its part beside `path`, all read every part, process 0
  removes them."""
  count = jax.process_count()
  if count == 1:
    return mine
  parts = [f"{path}.part{p}-of{count}" for p in range(count)]
  write_jsonl_atomic(parts[jax.process_index()], mine)
  multihost_utils.sync_global_devices(f"parts written: {path}")
  records = [r for part in parts for r in read_jsonl(part)]
  multihost_utils.sync_global_devices(f"parts read: {path}")
  if jax.process_index() == 0:
    for part in parts:
      epath.Path(part).unlink()
  return records


def gather_records(path: str, mine: list[dict]) -> list[dict]:
  """all_records, written to `path` by process 0."""
  records = all_records(path, mine)
  if jax.process_index() == 0:
    write_jsonl_atomic(path, records)
  return records
