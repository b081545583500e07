"""The generated multi-step reasoning task: left-to-right arithmetic chains mod p.

Question `3 + 5 * 2 - 4` (mod 17) is solved one operation per line, left to
right with no precedence:

    Q: 3 + 5 * 2 - 4          <- prompt
    3 + 5 = 8                 <- solution, one step per line
    8 * 2 = 16
    16 - 4 = 12
    A: 12                     <- final answer line

Why this format: each step is local (two operands and a result on one line), which
a tiny RoPE transformer learns in minutes (NOTES.md, "Learnability"), while errors
compound over steps, so the number of operations is a clean difficulty knob and
step boundaries (newlines) are where step-level verifiers and searches act.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

from tts.data.vocab import WordVocabulary

OPERATORS = ("+", "-", "*")
# Test is generated first so that changing num_train or num_val never changes it.
SPLIT_ORDER = ("test", "val", "train")


def chain_vocabulary(modulus: int) -> WordVocabulary:
  """Every word the task uses; `<attempt>`/`<revise>` are reserved for revisions."""
  return WordVocabulary(
    ["\n", "Q:", "A:", *OPERATORS, "=", "<attempt>", "<revise>"] + [str(i) for i in range(modulus)]
  )


def _is_prime(n: int) -> bool:
  return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class ChainTaskConfig:
  """Fields of `cfg.task` when `cfg.task.kind == "chain"`.

  The number of operations per question is uniform in [min_ops, max_ops];
  operands are uniform in [0, modulus), operators uniform over + - *.
  """

  modulus: int = 17
  min_ops: int = 1
  max_ops: int = 12
  num_train: int = 20_000
  num_val: int = 500
  num_test: int = 500
  seed: int = 0

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if not _is_int(v) or v < 0:
        raise ValueError(f"task.{f.name}={v!r} must be a non-negative integer")
    if not _is_prime(self.modulus):
      raise ValueError(f"task.modulus={self.modulus} is not prime; use a prime such as 17")
    if self.min_ops < 1:
      raise ValueError(f"task.min_ops={self.min_ops} must be at least 1")
    if self.min_ops > self.max_ops:
      raise ValueError(
        f"task.min_ops={self.min_ops} > task.max_ops={self.max_ops}; "
        "set task.min_ops <= task.max_ops"
      )
    wanted = self.num_train + self.num_val + self.num_test
    if wanted > self.num_distinct_questions():
      raise ValueError(
        f"task.num_train + task.num_val + task.num_test = {wanted}, but only "
        f"{self.num_distinct_questions()} distinct questions exist with "
        f"task.modulus={self.modulus}, {self.min_ops} to {self.max_ops} operations; "
        "ask for fewer examples or raise task.max_ops or task.modulus"
      )

  def num_distinct_questions(self) -> int:
    p = self.modulus
    return sum(p ** (k + 1) * len(OPERATORS) ** k for k in range(self.min_ops, self.max_ops + 1))

  def num_examples(self, split: str) -> int:
    return getattr(self, f"num_{split}")


def solve(question: str, modulus: int) -> tuple[str, str]:
  """(solution text, answer) of a question such as "3 + 5 * 2 - 4"."""
  words = question.split(" ")
  value = int(words[0])
  lines = []
  for op, operand in zip(words[1::2], words[2::2]):
    b = int(operand)
    result = {"+": value + b, "-": value - b, "*": value * b}[op] % modulus
    lines.append(f"{value} {op} {b} = {result}\n")
    value = result
  lines.append(f"A: {value}\n")
  return "".join(lines), str(value)


def make_example(example_id: str, question: str, modulus: int) -> dict:
  """The record shape every task in `tts.data` produces."""
  solution, answer = solve(question, modulus)
  return {
    "id": example_id,
    "question": question,
    "prompt": f"Q: {question}\n",
    "solution": solution,
    "answer": answer,
    "difficulty": question.count(" ") // 2,
  }


def _sample_questions(config: ChainTaskConfig, split: str, exclude: set[str]) -> list[str]:
  """Distinct questions not in `exclude`; adds them to `exclude`.

  Duplicates are redrawn (difficulty included), so the difficulty mix stays
  uniform until the few short questions run out.
  """
  rng = np.random.default_rng([config.seed, SPLIT_ORDER.index(split)])
  p, out = config.modulus, []
  while len(out) < config.num_examples(split):
    k = int(rng.integers(config.min_ops, config.max_ops + 1))
    nums = rng.integers(0, p, size=k + 1)
    ops = rng.integers(0, len(OPERATORS), size=k)
    words = [str(nums[0])]
    for op, n in zip(ops, nums[1:]):
      words += [OPERATORS[op], str(n)]
    question = " ".join(words)
    if question not in exclude:
      exclude.add(question)
      out.append(question)
  return out


def generate_splits(config: ChainTaskConfig) -> dict[str, list[dict]]:
  """All three splits, deterministic in `config` and disjoint by question."""
  seen: set[str] = set()
  splits = {}
  for split in SPLIT_ORDER:
    questions = _sample_questions(config, split, seen)
    splits[split] = [
      make_example(f"{split}-{i:05d}", q, config.modulus) for i, q in enumerate(questions)
    ]
  return splits


_INTEGER = re.compile(r"[0-9]+")


def extract_answer(text: str, modulus: int) -> str | None:
  """The answer on the last line starting with "A:", if it is an integer in [0, p)."""
  for line in reversed(text.split("\n")):
    line = line.strip()
    if line.startswith("A:"):
      value = line[2:].strip()
      if _INTEGER.fullmatch(value) and int(value) < modulus:
        return str(int(value))
      return None
  return None


def is_correct(text: str, example: Mapping[str, Any], modulus: int) -> bool:
  return extract_answer(text, modulus) == example["answer"]


def same_answer(a: str | None, b: str | None) -> bool:
  """Answers are canonical integers, so equality is string equality; None never matches."""
  return a is not None and a == b
