"""Tests of the MATH-format JSONL reader, its splits and math-verify grading."""

import concurrent.futures
import json
import os
import re
import time

import pytest

from tts.data import math_grader, math_jsonl
from tts.data.errors import DataError
from tts.data.tasks import make_task, task_config
from tts.data.vocab import NEWLINE, ByteVocabulary, step_end_ids

TINY = os.path.join(os.path.dirname(__file__), "data", "math_tiny.jsonl")
GOOD = {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$."}


def _write(tmp_path, lines):
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_reads_tiny_file_into_common_shape():
  """Later stages rely on every task giving the same record fields."""
  records = math_jsonl.read_math_jsonl(TINY)
  assert len(records) == 7
  by_id = {r["id"]: r for r in records}
  assert by_id["half"]["answer"] == "\\frac{1}{2}"
  assert by_id["expand"]["answer"] == "x^2+2x+1"
  assert by_id["add-1"]["difficulty"] == 1 and by_id["half"]["difficulty"] == 2
  assert by_id["math_tiny-00007"]["difficulty"] is None  # "Level ?", no id
  assert by_id["add-1"]["prompt"] == "Problem: What is $2 + 3$?\nSolution:\n"
  for r in records:
    assert set(r) == {"id", "question", "prompt", "solution", "answer", "difficulty"}
    assert r["solution"].endswith("\n") and "\n\n" not in r["solution"]


def test_last_boxed_handles_nesting():
  """MATH answers nest braces (\\frac{\\sqrt{3}}{2}); a naive regex cuts them."""
  assert (
    math_jsonl.last_boxed("a \\boxed{1} b \\boxed{\\frac{\\sqrt{3}}{2}}.") == "\\frac{\\sqrt{3}}{2}"
  )
  assert math_jsonl.last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"
  assert math_jsonl.last_boxed("\\boxed{3} then \\boxed{4") == "3"  # truncated sample
  assert math_jsonl.last_boxed("no answer") is None


def test_grader_uses_math_equivalence():
  """String matching would mark 0.5 wrong against \\frac{1}{2}; a grader that
  accepts anything would make every search look perfect."""
  ex = {"answer": "\\frac{1}{2}"}
  assert math_jsonl.is_correct("so $\\boxed{\\frac{1}{2}}$", ex)
  assert math_jsonl.is_correct("so $\\boxed{0.5}$", ex)
  assert math_jsonl.is_correct("work\nAnswer: 1/2", ex)
  assert not math_jsonl.is_correct("so $\\boxed{\\frac{1}{3}}$", ex)
  assert not math_jsonl.is_correct("so $\\boxed{@@##}$", ex)
  assert not math_jsonl.is_correct("no final answer here", ex)
  assert math_jsonl.same_answer("x^2+2x+1", "(x+1)^2")
  assert not math_jsonl.same_answer("x^2+1", "(x+1)^2")
  assert not math_jsonl.same_answer(None, "1")


def test_grader_works_in_worker_threads():
  """math-verify's SIGALRM timeout raises outside the main thread; graders run in
  thread pools during search, so they must not."""
  ex = {"answer": "\\frac{1}{2}"}
  texts = ["\\boxed{0.5}", "\\boxed{\\frac{1}{3}}", "\\boxed{\\frac{2}{4}}"] * 4
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    got = list(pool.map(lambda t: math_jsonl.is_correct(t, ex), texts))
  assert got == [True, False, True] * 4


@pytest.mark.parametrize(
  "text, answer",
  [
    ("so \\boxed{3} and then \\fbox{12}", "12"),
    ("so \\boxed 5", "5"),
    ("so $\\boxed 5$.", "5"),
    ("The final answer is $12$. I hope it is correct.", "12"),
    ("Thus the final answer is 3.5.", "3.5"),
    ("Steps\n\n# Answer\n\n42", "42"),
    ("work\nAnswer: 1/2", "1/2"),
    ("\\boxed{7} even though the final answer is 8", "7"),  # the box comes first
  ],
)
def test_extract_answer_fallbacks_after_boxed(text, answer):
  """Policies and PRM800K state answers without \\boxed{}; missing them grades right
  answers wrong."""
  assert math_jsonl.extract_answer(text) == answer


def test_pathological_answer_times_out_in_a_thread_and_is_counted():
  """sympy evaluating 9^(9^9) ran past 25 s in a worker thread, where math-verify's
  SIGALRM timeout cannot fire; the grader must give up, call it wrong and count it."""
  before = math_grader.timeouts()
  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    wrong = pool.submit(math_jsonl.same_answer, "2", "9^{9^{9}}").result(timeout=60)
  assert wrong is False
  assert time.monotonic() - start < 3 * math_grader.TIMEOUT_S
  assert math_grader.timeouts() == before + 1
  assert math_jsonl.same_answer("\\frac{1}{2}", "0.5")  # the grader still works after it


def test_grader_kills_a_comparison_past_its_deadline():
  """A stall that no signal interrupts ends at the parent's deadline: the child is
  killed, the comparison counts as a timeout and the next one starts a new child."""
  before = math_grader.timeouts()
  start = time.monotonic()
  assert math_grader.compare("3", "9^{9^{9}}", deadline_s=1) is False
  assert time.monotonic() - start < math_grader.TIMEOUT_S
  assert math_grader.timeouts() == before + 1
  assert math_grader.compare("x^2+2x+1", "(x+1)^2")


@pytest.mark.parametrize(
  "line, needle",
  [
    ("{not json", "not valid JSON"),
    (json.dumps({"problem": "p"}), "field 'solution' is missing"),
    (json.dumps({"problem": 3, "solution": "\\boxed{1}"}), "field 'problem' must be"),
    (json.dumps({"problem": "p", "solution": "no box"}), "no \\boxed{} answer"),
    (json.dumps({**GOOD, "level": "hard"}), "field 'level'"),
    (json.dumps([1, 2]), "not a JSON object"),
    (json.dumps({**GOOD, "id": "a"}).replace('"a"', '"dup"'), "used by an earlier line"),
  ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, needle):
  """Whoever fixes a bad data file needs the file, the line and the field."""
  first = json.dumps({**GOOD, "id": "dup"})
  path = _write(tmp_path, [first, "", line])
  with pytest.raises(DataError) as err:
    math_jsonl.read_math_jsonl(path)
  assert f"{path}:3:" in str(err.value) and needle in str(err.value)


def test_missing_file_names_config_field(tmp_path):
  """The fix is in the config, so the error must name the field."""
  missing = str(tmp_path / "nope.jsonl")
  with pytest.raises(DataError, match=r"task\.path=.*nope\.jsonl.*no such file"):
    make_task(task_config("math_jsonl", path=missing)).examples("test")


def test_splits_deterministic_disjoint_and_complete(tmp_path):
  """Same guarantees as the generated task: fixed by seed, no test leakage."""
  cfg = task_config("math_jsonl", path=TINY, test_fraction=0.3, val_fraction=0.25, seed=1)
  task = make_task(cfg)
  splits = {s: [e["id"] for e in task.examples(s)] for s in ("train", "val", "test")}
  assert splits == {s: [e["id"] for e in make_task(cfg).examples(s)] for s in splits}
  assert sorted(sum(splits.values(), [])) == sorted(
    r["id"] for r in math_jsonl.read_math_jsonl(TINY)
  )
  assert len(splits["test"]) == 2 and len(splits["val"]) == 1
  other = make_task(task_config("math_jsonl", path=TINY, test_fraction=0.3, seed=2))
  assert [e["id"] for e in other.examples("test")] != splits["test"]


def test_separate_train_and_test_files(tmp_path):
  """A train file that repeats a test problem must not leak it into training."""
  train = _write(tmp_path, [json.dumps({**GOOD, "id": i, "problem": f"p{i}"}) for i in range(5)])
  test = tmp_path / "test.jsonl"
  test.write_text(json.dumps({**GOOD, "id": "t", "problem": "p0"}) + "\n")
  task = make_task(
    task_config("math_jsonl", train_path=train, test_path=str(test), val_fraction=0.25)
  )
  assert [e["id"] for e in task.examples("test")] == ["t"]
  assert len(task.examples("train")) + len(task.examples("val")) == 4
  assert "p0" not in {e["question"] for e in task.examples("train") + task.examples("val")}


@pytest.mark.parametrize(
  "fields, needle",
  [
    (dict(path=TINY, train_path=TINY), "either task.path"),
    (dict(), "either task.path"),
    (dict(train_path=TINY), "task.train_path and task.test_path"),
    (dict(path=TINY, val_fraction=1.5), "task.val_fraction=1.5"),
    (dict(path=TINY, tokenizer="gpt2"), "task.tokenizer='gpt2' is unknown; allowed: bytes"),
  ],
)
def test_config_errors_name_the_field(fields, needle):
  """A config mistake should say which field is wrong and how to fix it."""
  with pytest.raises(ValueError, match=re.escape(needle)):
    make_task({"kind": "math_jsonl", **fields})


def test_byte_vocabulary_round_trip_and_step_ends():
  """MATH text is non-ASCII at times; bytes must round trip and newlines end steps."""
  vocab = ByteVocabulary()
  text = "Let $x = \\frac{1}{2}$ — so π ≈ 3.14\nnext\n"
  ids = vocab.encode(text)
  assert min(ids) >= 3 and max(ids) < vocab.vocab_size == 259
  assert vocab.decode([vocab.pad_id] + ids + [vocab.eos_id]) == text
  assert step_end_ids(vocab, NEWLINE) == frozenset({ord("\n") + 3})
  assert [i for i, t in enumerate(ids) if t in step_end_ids(vocab, NEWLINE)] == [
    i for i, b in enumerate(text.encode()) if b == ord("\n")
  ]
  task = make_task(task_config("math_jsonl", path=TINY))
  ex = task.examples("train")[0]
  prompt_ids, target_ids = task.encode_example(ex)
  assert vocab.decode(prompt_ids + target_ids) == ex["prompt"] + ex["solution"]
  assert target_ids[-1] == vocab.eos_id
