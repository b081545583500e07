"""Sequence packing: several short examples per training row, so padding costs little.

Examples are placed best-fit in decreasing length order (deterministic): each goes into
the open row with the least room that still holds it. Each row carries
segment_ids (1, 2, ... per example, 0 for padding) and positions restarting at 0, which the
model turns into a block-diagonal causal mask and per-example rotary positions.

With `attend_across=True` a row is one stream, as in language-model pretraining on
concatenated documents: each example sees the examples before it in the row, and positions
run on across the row. A model trained only on isolated rows infers where it is from the
start of the sequence and fails when anything precedes a question (the reproduce config's
small policy: pass@1 0.59 with its own prompt, 0.02 with one solved example before it),
which the revision model's prompts, earlier answers before the question, need.
"""
import numpy as np


def pack(sequences: list[tuple[list[int], list[float]]], max_len: int,
         pad_id: int, attend_across: bool = False) -> dict[str, np.ndarray]:
  """sequences: (token ids, loss weights) pairs. Returns tokens, loss_mask, segment_ids,
  positions, each [rows, max_len]. attend_across: one segment per row (module docstring)."""
  order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i][0]), i))
  rows: list[list[int]] = []
  by_room: list[list[int]] = [[] for _ in range(max_len + 1)]  # room -> rows with that room
  for i in order:
    n = len(sequences[i][0])
    if n > max_len:
      raise ValueError(f"a sequence of {n} tokens does not fit data.max_len={max_len}; "
                       f"raise data.max_len to at least {n}")
    room = next((f for f in range(n, max_len + 1) if by_room[f]), None)
    if room is None:
      rows.append([])
      row, room = len(rows) - 1, max_len
    else:
      row = by_room[room].pop()
    rows[row].append(i)
    by_room[room - n].append(row)
  out = {"tokens": np.full((len(rows), max_len), pad_id, np.int32),
         "loss_mask": np.zeros((len(rows), max_len), np.float32),
         "segment_ids": np.zeros((len(rows), max_len), np.int32),
         "positions": np.zeros((len(rows), max_len), np.int32)}
  for r, members in enumerate(rows):
    start = 0
    for segment, i in enumerate(members, start=1):
      tokens, weights = sequences[i]
      end = start + len(tokens)
      out["tokens"][r, start:end] = tokens
      out["loss_mask"][r, start:end] = weights
      first = start if attend_across else 0  # the position of the example's first token
      out["segment_ids"][r, start:end] = 1 if attend_across else segment
      out["positions"][r, start:end] = np.arange(first, first + len(tokens))
      start = end
  return out
