"""seqio registration of our tasks: the only module in tts.data that imports TF.

The pure-Python path (`tts.data.tasks`) is what training and search use; this
module exposes the same examples as seqio Tasks so they plug into seqio/t5x-style
tooling, and `materialize` lets the pipeline's data stage check that both paths
give the same token ids.

Importing this module registers the STABLE_TASKS under fixed names, e.g.
`seqio.get_mixture_or_task("tts_chain_mod13")` (the demo's task); any other config is
registered on demand under its hashed `Task.name`. Each task's metric is accuracy by the
task's own grader. The policy evaluation does not go through it: it needs pass@1 over
several samples per question, split by difficulty, from our sampler, where seqio's metric
functions take one prediction per target; both grade with the same `same_answer`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from tts.data.tasks import Task, make_task, task_config
from tts.data.vocab import Tokenizer


@contextlib.contextmanager
def _tensorflow_silenced():
  """TensorFlow's C++ start-up lines (oneDNN, CUDA stubs) go to file descriptor 2 before any
  log level applies, and "failed call to cuInit" on a host without a GPU is logged at
  ERROR, under the level 1 that `import jax` sets: so fd 2 goes to /dev/null and
  TF_CPP_MIN_LOG_LEVEL is 3 while TF starts, and both are restored after."""
  level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
  sys.stderr.flush()
  saved = os.dup(2)
  with open(os.devnull, "w") as null:
    os.dup2(null.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    if level is None:
      del os.environ["TF_CPP_MIN_LOG_LEVEL"]
    else:
      os.environ["TF_CPP_MIN_LOG_LEVEL"] = level


def _keep_tf_off_accelerators(tf) -> None:
  """TF must not grab GPU/TPU memory that JAX needs; it only feeds strings here."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # devices already initialised, or no such kind
      pass


with _tensorflow_silenced():
  import seqio
  import tensorflow as tf
  _keep_tf_off_accelerators(tf)

# seqio's split names -> ours.
SEQIO_SPLITS = {"train": "train", "validation": "val", "test": "test"}


class SeqioVocabulary(seqio.Vocabulary):
  """Any of our Tokenizers as a seqio.Vocabulary (same ids, no extra ids).

  The TF ops call back into Python (tf.numpy_function): correct and simple,
  not fast, which is fine off the hot path.
  """

  def __init__(self, tokenizer: Tokenizer):
    self.tokenizer = tokenizer
    super().__init__(extra_ids=0)

  @property
  def eos_id(self) -> int:
    return self.tokenizer.eos_id

  @property
  def unk_id(self) -> int | None:
    return self.tokenizer.unk_id

  @property
  def pad_id(self) -> int:
    return self.tokenizer.pad_id

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s)

  def _decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode([int(i) for i in ids])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """string[] -> int32[T]."""

    def encode(text: np.ndarray | bytes) -> np.ndarray:  # bytes in graphs, 0-d array eagerly
      text = np.asarray(text, dtype=object).item().decode("utf-8")
      return np.asarray(self.tokenizer.encode(text), np.int32)

    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int[..., T] -> string[...]."""

    def decode(batch: np.ndarray) -> np.ndarray:
      rows = batch.reshape(int(np.prod(batch.shape[:-1])), batch.shape[-1])
      texts = [self.tokenizer.decode(r.tolist()).encode("utf-8") for r in rows]
      return np.array(texts, dtype=object).reshape(batch.shape[:-1])

    texts = tf.numpy_function(decode, [ids], tf.string, stateful=False)
    texts.set_shape(ids.shape[:-1])
    return texts

  def __eq__(self, other: object) -> bool:
    return isinstance(other, SeqioVocabulary) and self.tokenizer == other.tokenizer

  def __hash__(self) -> int:
    return hash(self.tokenizer)


def _source(task: Task) -> seqio.FunctionDataSource:
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # in-memory examples, in their fixed order
    examples = task.examples(SEQIO_SPLITS[split])

    def column(key: str) -> tf.Tensor:
      return tf.constant([e[key] for e in examples], dtype=tf.string, shape=[len(examples)])

    return tf.data.Dataset.from_tensor_slices(
      {
        "id": column("id"),
        "question": column("question"),
        "inputs": column("prompt"),
        "targets": column("solution"),
        "answer": column("answer"),
        # None (a MATH problem without a level) travels as -1.
        "difficulty": tf.constant(
          [-1 if e["difficulty"] is None else e["difficulty"] for e in examples],
          tf.int32,
          shape=[len(examples)],
        ),
      }
    )

  return seqio.FunctionDataSource(dataset_fn, splits=list(SEQIO_SPLITS))


def register_task(cfg: Mapping[str, Any], name: str | None = None) -> str:
  """Registers the seqio Task for `cfg` (a `config.task`) once, under `name` (default: the
  task's hashed name); returns the name.

  Features: inputs = prompt ids (no eos), targets = solution ids + eos. The
  postprocessor turns a decoded output into its final answer (targets into the
  gold answer), and the metric is accuracy in percent by the task's grader.
  """
  task = make_task(cfg)
  name = name or task.name
  if name in seqio.TaskRegistry.names():
    return name
  vocab = SeqioVocabulary(task.vocab)

  def postprocess(
    text: str, example: Mapping[str, Any] | None = None, is_target: bool = False
  ) -> str | None:
    if is_target and example is not None and "answer" in example:
      answer = example["answer"]
      return answer.decode("utf-8") if isinstance(answer, bytes) else answer
    return task.extract_answer(text)

  def accuracy(targets: list[str], predictions: list[str | None]) -> dict[str, float]:
    hits = [task.same_answer(t, p) for t, p in zip(targets, predictions)]
    return {"accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0}

  seqio.TaskRegistry.add(
    name,
    source=_source(task),
    output_features={
      "inputs": seqio.Feature(vocab, add_eos=False),
      "targets": seqio.Feature(vocab, add_eos=True),
    },
    preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
    postprocess_fn=postprocess,
    metric_fns=[accuracy],
  )
  return name


# Registered on import under these names (a test keeps tts_chain_mod13 equal to the task
# of configs/demo.py).
STABLE_TASKS = {
  "tts_chain_mod13": task_config("chain", modulus=13, min_ops=1, max_ops=16, num_train=20_000,
                                 num_val=256, num_test=500, seed=0),
  "tts_chain_mod17": task_config("chain"),  # ChainTaskConfig's defaults
}
for _name, _cfg in STABLE_TASKS.items():
  register_task(_cfg, _name)


def materialize(cfg: Mapping[str, Any], split: str) -> list[dict]:
  """Examples of one split ("train", "val" or "test") as seqio produces them.

  Each dict holds the example fields plus `prompt_ids` and `target_ids`, which
  must equal `Task.encode_example` on the same example.
  """
  seqio_split = {ours: theirs for theirs, ours in SEQIO_SPLITS.items()}.get(split)
  if seqio_split is None:
    raise ValueError(f"unknown split {split!r}; use one of {list(SEQIO_SPLITS.values())}")
  name = register_task(cfg)
  dataset = seqio.get_mixture_or_task(name).get_dataset(
    sequence_length=None, split=seqio_split, shuffle=False, num_epochs=1
  )
  out = []
  for ex in dataset.as_numpy_iterator():
    out.append(
      {
        "id": ex["id"].decode("utf-8"),
        "question": ex["question"].decode("utf-8"),
        "prompt": ex["inputs_pretokenized"].decode("utf-8"),
        "solution": ex["targets_pretokenized"].decode("utf-8"),
        "answer": ex["answer"].decode("utf-8"),
        "difficulty": None if ex["difficulty"] < 0 else int(ex["difficulty"]),
        "prompt_ids": ex["inputs"].tolist(),
        "target_ids": ex["targets"].tolist(),
      }
    )
  return out
