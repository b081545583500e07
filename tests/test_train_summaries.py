"""TensorBoard summaries: every trainer writes its metrics.jsonl records as scalars too.

The events are written without TensorFlow (tts/train/summaries.py), so nothing but these
tests checks that the files are the TFRecord-framed Event protos TensorBoard reads.
"""
import json
import struct

import pytest
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from tts.train.summaries import SUBDIR, ScalarSummaries


def read_events(path) -> list[event_pb2.Event]:
  """Every record of an event file, its length and data checksums checked."""
  data, events, at = path.read_bytes(), [], 0
  while at < len(data):
    header = data[at:at + 8]
    (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[at + 8:at + 12])
    body = data[at + 12:at + 12 + length]
    (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
    assert (header_crc, body_crc) == (masked_crc32c(header), masked_crc32c(body))
    events.append(event_pb2.Event.FromString(body))
    at += 16 + length
  return events


def scalars(directory) -> dict[int, dict[str, float]]:
  (path,) = (directory / SUBDIR).iterdir()
  events = read_events(path)
  assert events[0].file_version == "brain.Event:2"
  return {e.step: {v.tag: v.simple_value for v in e.summary.value} for e in events[1:]}


def test_scalars_round_trip(tmp_path):
  writer = ScalarSummaries(str(tmp_path))
  writer.scalars(1, {"loss": 2.5, "lr": 1e-3})
  writer.scalars(2, {"loss": 2.0, "lr": 2e-3})
  writer.close()
  got = scalars(tmp_path)
  assert got.keys() == {1, 2}
  assert got[2]["loss"] == 2.0 and got[1]["lr"] == pytest.approx(1e-3)


def test_trainer_writes_every_logged_record(reference_run):
  """The uninterrupted 12-step run: one scalar event per metrics.jsonl record, same values."""
  records = [json.loads(line) for line in
             (reference_run.workdir / "metrics.jsonl").read_text().splitlines()]
  got = scalars(reference_run.workdir)
  assert sorted(got) == [r["step"] for r in records] == list(range(1, 13))
  for record in records:
    for key in ("loss", "grad_norm", "lr", "tokens_per_s"):
      assert got[record["step"]][key] == pytest.approx(record[key], rel=1e-6), key
