"""MATH-format JSONL problems and their grading with math-verify.

Each line of the file is a JSON object:

    {"problem": str, "solution": str with a \\boxed{} answer,
     "answer": str (optional; else the last \\boxed{} of the solution),
     "level": int or "Level 3" (optional), "id": str or int (optional)}

Records come out in the same shape as the generated task's, with the prompt of
`task.prompt_format` (tts/data/prompts.py: "Problem: {problem}\\nSolution:\\n", or the
tokenizer's chat template) and the solution's non-blank lines as its steps, each followed
by `task.step_delimiter` (a newline by default, so the step-level search treats a line of
a MATH solution like a line of an arithmetic chain; "\\n\\n" as search-and-learn).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import warnings
from typing import Any, Callable, Mapping

import numpy as np

from tts.atomic_files import read_text
from tts.data import math_grader, prompts
from tts.data.errors import DataError

# A line this long is most likely several records run together, or not a problem at all.
LONG_LINE_CHARS = 100_000
_LINE_HINT = "each line needs 'problem' and 'solution' (with a \\boxed{} answer)"


def last_boxed(text: str) -> str | None:
  """Content of the last complete \\boxed{...} (or \\fbox{...}), nested braces allowed."""
  for start in reversed([m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]):
    depth = 1
    for i in range(start, len(text)):
      c = text[i]
      if text[i - 1] == "\\" and c in "{}":
        continue  # an escaped brace such as \{ is set notation, not grouping
      depth += {"{": 1, "}": -1}.get(c, 0)
      if depth == 0:
        return text[start:i].strip()
  return None


def _level(value: Any, where: str) -> int | None:
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(value, str):
    m = re.fullmatch(r"\s*(?:Level\s*)?(\d+|\?)\s*", value)
    if m:
      return None if m.group(1) == "?" else int(m.group(1))
  raise DataError(
    f"{where}: field 'level' is {value!r}; use an integer or a string like "
    "'Level 3', or leave it out"
  )


def _record(obj: Any, where: str, default_id: str, prompt: Callable[[str], str],
            step_delimiter: str) -> dict:
  """One normalised example from one parsed JSON line."""
  if not isinstance(obj, dict):
    raise DataError(f"{where}: the line is not a JSON object; {_LINE_HINT}")
  for field in ("problem", "solution"):
    if field not in obj:
      raise DataError(f"{where}: field '{field}' is missing; {_LINE_HINT}")
    if not isinstance(obj[field], str) or not obj[field].strip():
      raise DataError(f"{where}: field '{field}' must be a non-empty string; {_LINE_HINT}")
  answer = obj.get("answer")
  if answer is not None and not (isinstance(answer, (str, int)) and not isinstance(answer, bool)):
    raise DataError(
      f"{where}: field 'answer' is {answer!r}; use a string such as "
      "'\\\\frac{1}{2}', or leave it out to take the last \\boxed{} of the solution"
    )
  boxed = last_boxed(obj["solution"])
  answer = str(answer).strip() if answer is not None else boxed
  if not answer:
    raise DataError(
      f"{where}: field 'solution' has no \\boxed{{}} answer and there is no "
      "non-empty 'answer' field; add one of them"
    )
  example_id = obj.get("id", default_id)
  if not isinstance(example_id, (str, int)) or isinstance(example_id, bool):
    raise DataError(f"{where}: field 'id' is {example_id!r}; use a string or an integer")
  steps = [line.strip() for line in obj["solution"].splitlines() if line.strip()]
  if boxed is None:
    steps.append(f"Answer: {answer}")  # so that a model trained on it ends gradably
  return {
    "id": str(example_id),
    "question": obj["problem"],
    "prompt": prompt(obj["problem"]),
    "solution": "".join(step + step_delimiter for step in steps),
    "answer": answer,
    "difficulty": _level(obj["level"], where) if "level" in obj else None,
  }


def read_math_jsonl(path: str, field: str = "task.path",
                    prompt: Callable[[str], str] = prompts.plain_prompt,
                    step_delimiter: str = "\n") -> list[dict]:
  """Normalised records of one file; `field` is the config field that named it, `prompt`
  makes a record's prompt from its problem and `step_delimiter` follows each step."""
  if not os.path.isfile(path):
    raise DataError(
      f"{field}={path!r}: no such file; point {field} at a MATH-format "
      "JSONL file (one JSON object per line)"
    )
  stem = os.path.splitext(os.path.basename(path))[0]
  records, ids, answers = [], set(), {}
  for line_no, line in enumerate(read_text(path).split("\n"), start=1):
    if not line.strip():
      continue
    where = f"{path}:{line_no}"
    if len(line) > LONG_LINE_CHARS:
      warnings.warn(f"{where}: the line is {len(line):,} characters long (over "
                    f"{LONG_LINE_CHARS:,}); check that it is one problem")
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: not valid JSON ({e.msg}); {_LINE_HINT}") from None
    record = _record(obj, where, f"{stem}-{line_no:05d}", prompt, step_delimiter)
    if record["id"] in ids:
      raise DataError(
        f"{where}: id {record['id']!r} is used by an earlier line; ids must be unique"
      )
    ids.add(record["id"])
    first_line, first_answer = answers.setdefault(record["question"], (line_no, record["answer"]))
    if first_answer != record["answer"]:
      warnings.warn(f"{where}: the problem of line {first_line} again, with answer "
                    f"{record['answer']!r} instead of {first_answer!r}; one of them is wrong")
    records.append(record)
  if not records:
    raise DataError(f"{field}={path!r}: the file holds no records; {_LINE_HINT}")
  return records


@dataclasses.dataclass(frozen=True)
class MathJsonlConfig:
  """Fields of `cfg.task` when `cfg.task.kind == "math_jsonl"`.

  Either `path` (one file; test_fraction of its questions become the test split)
  or `train_path` and `test_path`. val_fraction of the remaining training
  questions become the validation split. Splits are disjoint by problem text.
  prompt_format "chat" uses the tokenizer's chat template with `system_prompt` (empty: no
  system turn) and `user_template` (PROBLEM is replaced by the problem); see
  tts/data/prompts.py. `step_delimiter` ends each step (vocab.step_end_ids says how).
  """

  path: str = ""
  train_path: str = ""
  test_path: str = ""
  val_fraction: float = 0.1
  test_fraction: float = 0.2
  seed: int = 0
  tokenizer: str = "bytes"  # or a Hugging Face checkpoint directory (its tokenizer.json)
  prompt_format: str = "plain"  # or "chat"
  system_prompt: str = ""
  user_template: str = prompts.PROBLEM
  step_delimiter: str = "\n"

  def __post_init__(self):
    if bool(self.path) == bool(self.train_path or self.test_path):
      raise ValueError(
        "set either task.path (one JSONL file, split by "
        "task.test_fraction) or both task.train_path and task.test_path"
      )
    if not self.path and not (self.train_path and self.test_path):
      raise ValueError("task.train_path and task.test_path must be set together")
    if not 0 <= self.val_fraction < 1:
      raise ValueError(f"task.val_fraction={self.val_fraction} must be in [0, 1)")
    if not 0 < self.test_fraction < 1:
      raise ValueError(f"task.test_fraction={self.test_fraction} must be in (0, 1)")
    if not isinstance(self.seed, int) or self.seed < 0:
      raise ValueError(f"task.seed={self.seed!r} must be a non-negative integer")
    if self.prompt_format not in prompts.PROMPT_FORMATS:
      raise ValueError(f"task.prompt_format={self.prompt_format!r} is unknown; use one of "
                       f"{prompts.PROMPT_FORMATS}")
    if self.prompt_format == "plain":
      for name in ("system_prompt", "user_template"):
        if getattr(self, name) != getattr(MathJsonlConfig, name):
          raise ValueError(f"task.{name} is set but task.prompt_format='plain' does not use "
                           "it; set task.prompt_format='chat' or leave it out")
    if prompts.PROBLEM not in self.user_template:
      raise ValueError(f"task.user_template={self.user_template!r} has no {prompts.PROBLEM}; "
                       "put it where the problem goes")
    if not self.step_delimiter or "\\n" in self.step_delimiter:
      raise ValueError(f"task.step_delimiter={self.step_delimiter!r} must be the text that "
                       "ends a step, such as a line break or two: on a bash command line "
                       "write --config.task.step_delimiter=$'\\n\\n' (a plain '\\n' is a "
                       "backslash and an n)")

  def prompt(self) -> Callable[[str], str]:
    """problem -> prompt text in this config's format."""
    if self.prompt_format == "plain":
      return prompts.plain_prompt
    return prompts.chat_prompt(self.tokenizer, self.system_prompt, self.user_template)


def _split_by_question(
  records: list[dict], fraction: float, rng: np.random.Generator
) -> tuple[list[dict], list[dict]]:
  """(held out, rest): about `fraction` of the distinct questions, file order kept."""
  questions = sorted({r["question"] for r in records})
  n_held = round(fraction * len(questions))
  held = {questions[i] for i in rng.permutation(len(questions))[:n_held]}
  return (
    [r for r in records if r["question"] in held],
    [r for r in records if r["question"] not in held],
  )


def load_splits(config: MathJsonlConfig) -> dict[str, list[dict]]:
  """train / val / test, deterministic in the files and `config.seed`."""
  rng = np.random.default_rng(config.seed)
  read = functools.partial(read_math_jsonl, prompt=config.prompt(),
                           step_delimiter=config.step_delimiter)
  if config.path:
    test, train = _split_by_question(read(config.path), config.test_fraction, rng)
  else:
    test = read(config.test_path, "task.test_path")
    test_questions = {r["question"] for r in test}
    train = [r for r in read(config.train_path, "task.train_path")
             if r["question"] not in test_questions]
  val, train = _split_by_question(train, config.val_fraction, rng)
  return {"train": train, "val": val, "test": test}


# Answers stated without \\boxed{}, tried in this order after it; the last match counts.
_UNBOXED = (
  re.compile(r"\\boxed\s+([^\s$]+)"),  # \boxed 5
  re.compile(r"^#+\s*Answer\s*\n\s*(.+)", re.MULTILINE),  # PRM800K: "# Answer\n\n42"
  re.compile(r"final answer is:?\s*(\$[^$\n]+\$|[^\n]+?)(?:\.?\s*$|\.\s)",  # ... is $12$.
             re.IGNORECASE | re.MULTILINE),
  re.compile(r"^\s*(?:Answer|A):(.*)", re.MULTILINE),  # our own solutions' last line
)


def extract_answer(text: str) -> str | None:
  """The last \\boxed{} (or \\fbox{}) content, else the last answer stated in one of
  the `_UNBOXED` forms (sentence punctuation and $ signs stripped)."""
  boxed = last_boxed(text)
  if boxed is not None:
    return boxed
  for pattern in _UNBOXED:
    found = pattern.findall(text)
    if found:
      answer = found[-1].strip().rstrip(".").strip().strip("$").strip()
      if answer:
        return answer
  return None


def same_answer(gold: str | None, pred: str | None) -> bool:
  """Mathematical equivalence by math-verify (asymmetric: gold first); None never matches.
  A comparison that times out counts as not equivalent (see math_grader)."""
  if gold is None or pred is None:
    return False
  if "".join(gold.split()) == "".join(pred.split()):
    return True
  return math_grader.equivalent(gold, pred)


def is_correct(text: str, example: Mapping[str, Any]) -> bool:
  return same_answer(example["answer"], extract_answer(text))
