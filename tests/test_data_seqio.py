"""Tests of the seqio registration, the one TensorFlow-importing data module."""

import os
import subprocess
import sys

import numpy as np
import pytest

seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from tts.data import seqio_tasks  # noqa: E402
from tts.data.tasks import make_task, task_config  # noqa: E402
from tts.data.vocab import ByteVocabulary  # noqa: E402

TINY = os.path.join(os.path.dirname(__file__), "data", "math_tiny.jsonl")
CHAIN = task_config(
  "chain", modulus=13, min_ops=1, max_ops=4, num_train=40, num_val=8, num_test=12, seed=5
)


def test_pure_python_modules_do_not_import_tensorflow():
  """TensorFlow takes ~9 s to import and grabs accelerators; the training and
  search paths must never pull it in through tts.data or the TensorBoard summaries."""
  code = (
    "import sys, tts.data, tts.data.tasks, tts.data.chain, tts.data.vocab, "
    "tts.data.math_jsonl, tts.data.errors, tts.data.hf_tokenizer, tts.train.summaries; "
    "assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules"
  )
  subprocess.run(
    [sys.executable, "-c", code],
    check=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )


@pytest.mark.parametrize(
  "cfg", [CHAIN, task_config("math_jsonl", path=TINY)], ids=["chain", "math_jsonl"]
)
def test_seqio_ids_match_pure_python(cfg):
  """The pipeline trains on pure-Python ids; seqio consumers must see the same."""
  task = make_task(cfg)
  for split in ("train", "val", "test"):
    rows = seqio_tasks.materialize(cfg, split)
    examples = task.examples(split)
    assert [r["id"] for r in rows] == [e["id"] for e in examples]
    for row, ex in zip(rows, examples):
      assert (row["prompt_ids"], row["target_ids"]) == task.encode_example(ex)
      assert {k: row[k] for k in ex if k != "question"} == {k: ex[k] for k in ex if k != "question"}


def test_registration_is_idempotent_and_grades():
  """Registering twice must not raise, and seqio's metric must use our grader."""
  name = seqio_tasks.register_task(CHAIN)
  assert seqio_tasks.register_task(CHAIN) == name
  stask = seqio.get_mixture_or_task(name)
  assert stask.postprocess_fn("1 + 2 = 3\nA: 3\n") == "3"
  assert stask.postprocess_fn("x", example={"answer": b"7"}, is_target=True) == "7"
  assert stask.metric_fns[0](["3", "4"], ["3", None]) == {"accuracy": 50.0}


def test_vocabulary_tf_ops_match_python():
  """seqio calls the TF ops inside tf.data graphs; they must agree with Python."""
  task = make_task(CHAIN)
  vocab = seqio_tasks.SeqioVocabulary(task.vocab)
  text = task.examples("test")[0]["solution"]
  ids = task.vocab.encode(text)
  assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids
  batch = tf.constant([ids + [task.vocab.eos_id, 5], ids + [0, 0]])
  assert vocab.decode_tf(batch).numpy().tolist() == [text.encode()] * 2
  assert vocab.decode(ids + [task.vocab.eos_id, 5]) == text
  assert vocab.vocab_size == task.vocab.vocab_size


def test_byte_vocabulary_matches_seqio_convention():
  """ByteVocabulary promises seqio's byte ids; checkpoints depend on that."""
  ours, theirs = ByteVocabulary(), seqio.ByteVocabulary()
  text = "x = \\frac{1}{2} ≈ 0.5\n"
  assert ours.encode(text) == list(theirs.encode(text))
  assert (ours.pad_id, ours.eos_id, ours.unk_id, ours.vocab_size) == (
    theirs.pad_id,
    theirs.eos_id,
    theirs.unk_id,
    theirs.vocab_size,
  )
  assert np.array_equal(seqio_tasks.SeqioVocabulary(ours).encode(text), theirs.encode(text))


def test_stable_task_names_are_registered_on_import():
  """seqio and t5x users name tasks in gin files: the names must not depend on a hash."""
  from tts import cli
  demo = cli.load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py"))
  assert seqio_tasks.STABLE_TASKS["tts_chain_mod13"].to_dict() == task_config(
    **demo.task.to_dict()).to_dict()
  for name, cfg in seqio_tasks.STABLE_TASKS.items():
    stask = seqio.get_mixture_or_task(name)
    example = next(stask.get_dataset(sequence_length=None, split="validation",
                                     shuffle=False).as_numpy_iterator())
    first = make_task(cfg).examples("val")[0]
    assert example["inputs"].tolist() == make_task(cfg).encode_example(first)[0]


def test_importing_tensorflow_prints_nothing():
  """TensorFlow's C++ start-up lines (oneDNN, CUDA stubs, cuInit failing on a CPU host) used
  to open every run's log."""
  # As in a run: jax first (it sets TF_CPP_MIN_LOG_LEVEL=1), then the data stage's import.
  code = ("import jax, tts.data.seqio_tasks, tensorflow as tf; "
          "tf.config.list_physical_devices(); tf.constant(1).numpy()")
  # As from a shell: this process imported TF first, which set TF_CPP_MIN_LOG_LEVEL=1.
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0 and result.stderr == "", result.stderr
