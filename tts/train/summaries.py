"""TensorBoard scalars of a training run, beside its metrics.jsonl.

`tensorboard --logdir WORKDIR` then shows every trainer of an experiment (policy/small,
prm, revision, ...) as its own run. The events are written with the `tensorboard`
package's record writer and protos, not clu's `metric_writers` or `tf.summary`: those
import TensorFlow (about 20 s per training process on the 2-core machine, and TF may claim
accelerator memory JAX needs), and TensorBoard reads these files the same way. In a bucket
the file is one object, uploaded when the run closes it.
"""
import os
import socket
import time

from etils import epath

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from tts.atomic_files import make_dirs

SUBDIR = "tensorboard"


class ScalarSummaries:
  """Appends scalar events to one new event file under `directory`/tensorboard."""

  def __init__(self, directory: str):
    directory = os.path.join(directory, SUBDIR)
    make_dirs(directory)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.0"
    self.path = os.path.join(directory, name)
    self._writer = RecordWriter(epath.Path(self.path).open("wb"))
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event: event_pb2.Event):
    self._writer.write(event.SerializeToString())

  def scalars(self, step: int, values: dict[str, float]):
    """One event with every value as a scalar at `step`; flushed so a live TensorBoard sees it."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v)
                                         for k, v in sorted(values.items())])
    self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    self._writer.flush()

  def close(self):
    self._writer.close()
