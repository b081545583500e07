"""The one interface the rest of the code uses for data: `make_task(cfg.task)`.

A Task bundles a tokenizer, the train / val / test examples (dicts with id,
question, prompt, solution, answer, difficulty) and the grader. Everything
task-specific stays behind it, so model, search and selection code works the same
on the generated chains and on MATH-format files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable, Mapping

import ml_collections

from tts import config_schema
from tts.data import chain, math_jsonl
from tts.data import vocab as vocabulary
from tts.data.vocab import NEWLINE, ByteVocabulary, Tokenizer

SPLITS = ("train", "val", "test")
KINDS = ("chain", "math_jsonl")
TOKENIZERS: dict[str, Callable[[], Tokenizer]] = {"bytes": ByteVocabulary}


@dataclasses.dataclass(frozen=True)
class Task:
  """A task's vocabulary, examples and grader.

  Graders work on decoded text: `extract_answer(completion)` gives the final
  answer or None; `is_correct(completion, example)` grades against the
  example's answer; `same_answer(a, b)` says whether two extracted answers
  agree (for majority voting; `a` is treated as the reference).
  """

  name: str  # deterministic in the resolved config, e.g. "tts_chain_3f9a0c12de"
  vocab: Tokenizer
  load_splits: Callable[[], Mapping[str, list[dict]]]  # cached: built on first use
  extract_answer: Callable[[str], str | None]
  is_correct: Callable[[str, Mapping[str, Any]], bool]
  same_answer: Callable[[str | None, str | None], bool]
  step_delimiter: str = NEWLINE  # the text that ends a solution step

  @property
  def step_end_ids(self) -> frozenset[int]:
    """The tokens that end a step, for search, labelling and revision alike (the rule is
    vocab.step_end_ids)."""
    return vocabulary.step_end_ids(self.vocab, self.step_delimiter)

  def examples(self, split: str) -> list[dict]:
    """A new list of the split's examples (the dicts are shared: do not mutate)."""
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return list(self.load_splits()[split])

  def encode_example(self, example: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids): target = solution ids followed by eos."""
    return (
      self.vocab.encode(example["prompt"]),
      self.vocab.encode(example["solution"]) + [self.vocab.eos_id],
    )


def make_tokenizer(spec: str) -> Tokenizer:
  """A name in TOKENIZERS, or a Hugging Face checkpoint directory (or its tokenizer.json)
  whose tokenizer the task then uses (ids of an imported model; needs the `hf` extra)."""
  if spec in TOKENIZERS:
    return TOKENIZERS[spec]()
  if os.path.isdir(spec) or spec.endswith(".json"):
    from tts.data.hf_tokenizer import HFTokenizer
    return HFTokenizer(spec)
  raise ValueError(
    f"task.tokenizer={spec!r} is unknown; allowed: {', '.join(TOKENIZERS)}, or the path of a "
    "Hugging Face checkpoint directory with a tokenizer.json"
  )


def _name(kind: str, resolved: Any) -> str:
  blob = json.dumps({"kind": kind, **dataclasses.asdict(resolved)}, sort_keys=True)
  return f"tts_{kind}_{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def task_config(kind: str, **fields: Any) -> ml_collections.ConfigDict:
  """A complete, validated `cfg.task` for `kind` with defaults filled in."""
  if kind not in KINDS:
    raise ValueError(f"task.kind={kind!r} is unknown; allowed: {', '.join(KINDS)}")
  resolved = (chain.ChainTaskConfig if kind == "chain" else math_jsonl.MathJsonlConfig)(**fields)
  return ml_collections.ConfigDict({"kind": kind, **dataclasses.asdict(resolved)})


def _fields(cfg: Mapping[str, Any]) -> dict:
  """The task's own fields: `kind` only selects the task."""
  return {k: v for k, v in cfg.items() if k != "kind"}


# A step delimiter between the kinds of text a solution's steps end and start with.
_DELIMITER_CONTEXTS = (("We add", "Then"), ("2 + 3 = 5.", "$x$"), ("$\\frac{1}{2}$", "12"),
                       ("x)", " so"))


def _check_step_delimiter(task: Task, tokenizer: str):
  """Steps end on tokens (vocab.step_end_ids): a tokenizer that splits the delimiter over
  two tokens between ordinary text (GPT-2's pre-tokenizer splits "\\n\\nThen" into "\\n",
  "\\n", "Then"; SentencePiece's byte tokens hold one newline each) could never end a step
  there, so such a config is refused rather than run with steps that run together."""
  for left, right in _DELIMITER_CONTEXTS:
    text = left + task.step_delimiter + right
    if not set(task.vocab.encode(text)) & task.step_end_ids:
      raise ValueError(
          f"task.step_delimiter={task.step_delimiter!r}: task.tokenizer={tokenizer!r} "
          f"splits it over several tokens in {text!r}, so a step could not end there; use "
          "'\\n', or a tokenizer that keeps it in one token (such as Qwen2's or Llama 3's)")


def make_task(cfg: Mapping[str, Any]) -> Task:
  """The Task for `cfg` (a ConfigDict such as `config.task`, or a dict).

  `cfg.kind` picks the task: "chain" (fields of chain.ChainTaskConfig) or
  "math_jsonl" (fields of math_jsonl.MathJsonlConfig). Config errors raise
  ValueError naming the field; data is read or generated on first use.
  """
  kind = cfg.get("kind")
  if kind == "chain":
    config = config_schema.build(chain.ChainTaskConfig, _fields(cfg), "task")
    p = config.modulus
    return Task(
      name=_name(kind, config),
      vocab=chain.chain_vocabulary(p),
      load_splits=functools.cache(functools.partial(chain.generate_splits, config)),
      extract_answer=functools.partial(chain.extract_answer, modulus=p),
      is_correct=functools.partial(chain.is_correct, modulus=p),
      same_answer=chain.same_answer,
    )
  if kind == "math_jsonl":
    config = config_schema.build(math_jsonl.MathJsonlConfig, _fields(cfg), "task")
    if config.prompt_format == "chat" and config.tokenizer in TOKENIZERS:
      raise ValueError(f"task.prompt_format='chat' needs a chat template, which "
                       f"task.tokenizer={config.tokenizer!r} has not; set task.tokenizer to a "
                       "Hugging Face checkpoint directory, or task.prompt_format='plain'")
    task = Task(
      name=_name(kind, config),
      vocab=make_tokenizer(config.tokenizer),
      load_splits=functools.cache(functools.partial(math_jsonl.load_splits, config)),
      extract_answer=math_jsonl.extract_answer,
      is_correct=math_jsonl.is_correct,
      same_answer=math_jsonl.same_answer,
      step_delimiter=config.step_delimiter,
    )
    _check_step_delimiter(task, config.tokenizer)
    return task
  raise ValueError(f"task.kind={kind!r} is unknown; allowed: {', '.join(KINDS)}")
