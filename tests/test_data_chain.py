"""Tests of the generated arithmetic-chain task and the word vocabulary."""

import re

import pytest

from tts.data import chain
from tts.data.tasks import make_task, task_config
from tts.data.vocab import WordVocabulary

SMALL = dict(modulus=17, min_ops=1, max_ops=6, num_train=300, num_val=40, num_test=60, seed=3)


def _task(**overrides):
  return make_task(task_config("chain", **{**SMALL, **overrides}))


def _all(task):
  return {s: task.examples(s) for s in ("train", "val", "test")}


def test_solution_is_arithmetically_right():
  """Every later stage learns from and grades against these solutions; recompute
  them here without chain.solve so a wrong step or final answer cannot hide."""
  p = SMALL["modulus"]
  ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
  for ex in _task().examples("test") + _task().examples("train")[:100]:
    words = ex["question"].split()
    value, expected = int(words[0]), []
    for op, b in zip(words[1::2], words[2::2]):
      new = ops[op](value, int(b)) % p
      expected.append(f"{value} {op} {b} = {new}")
      value = new
    assert ex["solution"] == "\n".join(expected + [f"A: {value}"]) + "\n"
    assert ex["answer"] == str(value)
    assert ex["prompt"] == f"Q: {ex['question']}\n"
    assert ex["difficulty"] == len(expected)
    assert all(0 <= int(w) < p for w in re.findall(r"\d+", ex["prompt"] + ex["solution"]))


def test_deterministic_per_seed_and_different_across_seeds():
  """Experiments resume and compare across runs only if a config always gives the
  same data; a seed that changed nothing would make seeds meaningless."""
  a, b = _all(_task()), _all(_task())
  assert a == b
  c = _all(_task(seed=4))
  for split in a:
    assert [e["question"] for e in a[split]] != [e["question"] for e in c[split]]


def test_splits_disjoint_sized_and_test_stable():
  """A test question seen in training would inflate every accuracy we report;
  the test split must also not move when only the training size changes."""
  splits = _all(_task())
  questions = {s: [e["question"] for e in exs] for s, exs in splits.items()}
  for s in splits:
    assert len(splits[s]) == SMALL[f"num_{s}"]
    assert len(set(questions[s])) == len(questions[s])
  assert not set(questions["train"]) & set(questions["test"])
  assert not set(questions["train"]) & set(questions["val"])
  assert not set(questions["val"]) & set(questions["test"])
  ids = [e["id"] for exs in splits.values() for e in exs]
  assert len(set(ids)) == len(ids)
  assert _task(num_train=500).examples("test") == splits["test"]


def test_difficulty_covers_configured_range():
  """Difficulty bins are built from this knob; all of [min_ops, max_ops] must occur."""
  train = _task(min_ops=2, max_ops=5).examples("train")
  assert {e["difficulty"] for e in train} == {2, 3, 4, 5}


def test_grader_accepts_right_and_rejects_wrong():
  """Accuracy, majority voting and Monte-Carlo labels all rest on the grader."""
  task = _task()
  ex = dict(task.examples("test")[0], answer="12")
  assert task.is_correct("3 + 9 = 12\nA: 12\n", ex)
  assert not task.is_correct("3 + 9 = 13\nA: 13\n", ex)  # wrong number
  assert not task.is_correct("3 + 9 = 12\n", ex)  # no answer line
  assert task.extract_answer("3 + 9 = 12\n") is None
  assert task.extract_answer("A: 17\n") is None  # out of range mod 17
  assert task.extract_answer("A: twelve\n") is None
  assert task.extract_answer("A: 3\nA: 12") == "12"  # last A: line counts
  assert task.extract_answer("A: 12\nA:") is None
  assert task.same_answer("5", "5") and not task.same_answer("5", "6")
  assert not task.same_answer(None, None)


@pytest.mark.parametrize(
  "fields, needle",
  [
    (dict(modulus=16), "task.modulus=16 is not prime"),
    (dict(min_ops=5, max_ops=3), "task.min_ops=5 > task.max_ops=3"),
    (dict(min_ops=0), "task.min_ops=0"),
    (dict(min_ops=1, max_ops=1, modulus=3, num_train=30), "distinct questions"),
    (dict(num_train=-1), "task.num_train=-1"),
    (dict(max_op=3), "unknown config field task.max_op; did you mean task.max_ops"),
  ],
)
def test_config_errors_name_the_field(fields, needle):
  """A config mistake should say which field is wrong and how to fix it."""
  cfg = dict(kind="chain", **{**SMALL, **fields})
  with pytest.raises(ValueError, match=re.escape(needle)):
    make_task(cfg)


def test_unknown_kind_names_the_field():
  """The kind switch is the first thing a user misspells."""
  with pytest.raises(ValueError, match="task.kind='chian'.*chain, math_jsonl"):
    make_task({"kind": "chian"})


def test_word_vocabulary_round_trip_and_step_ends():
  """The sampler stops steps at step_end_ids and graders read decoded text; a
  lossy vocabulary would corrupt both."""
  task = _task()
  vocab = task.vocab
  ex = task.examples("test")[0]
  prompt_ids, target_ids = task.encode_example(ex)
  assert target_ids[-1] == vocab.eos_id and vocab.eos_id not in target_ids[:-1]
  assert vocab.decode(prompt_ids + target_ids) == ex["prompt"] + ex["solution"]
  assert vocab.encode(vocab.decode(target_ids[:-1])) == target_ids[:-1]
  assert vocab.unk_id not in prompt_ids + target_ids
  text = "3 + 5 = 8\n8 * 2 = 16\n"
  assert vocab.tokens(text) == ["3", "+", "5", "=", "8", "\n", "8", "*", "2", "=", "16", "\n"]
  assert vocab.decode([vocab.pad_id] + vocab.encode(text) + [vocab.eos_id, vocab.pad_id]) == text
  assert vocab.encode("3 + banana") == vocab.encode("3 +") + [vocab.unk_id]
  assert task.step_end_ids == frozenset({vocab.encode("\n")[0]})
  assert vocab.vocab_size == 3 + 9 + SMALL["modulus"]
  assert vocab == chain.chain_vocabulary(SMALL["modulus"])


def test_word_vocabulary_rejects_bad_words():
  """A word with a space could never be produced by encode."""
  with pytest.raises(ValueError):
    WordVocabulary(["a b"])
  with pytest.raises(ValueError):
    WordVocabulary(["x", "x"])


def test_task_name_is_deterministic_and_config_sensitive():
  """The seqio registry and the pipeline's skip logic key on this name."""
  assert _task().name == _task().name
  assert _task().name != _task(seed=4).name
  assert _task().name.startswith("tts_chain_")
