"""`data` stage: the task's splits, tokenized, as JSONL in workdir/data/.

With data.source = "seqio" the token ids come from the registered seqio Task (TensorFlow is
imported here and nowhere on a hot path); with "python" from the same tokenizer directly.
Later stages read these files, not the task generator.
"""
import os

from tts.atomic_files import exists, make_dirs, read_jsonl, write_json_atomic, write_jsonl_atomic
from tts.data.errors import DataError
from tts.data.tasks import SPLITS, make_task


def _tokenized(cfg, split: str) -> list[dict]:
  if cfg.data.source == "seqio":
    from tts.data import seqio_tasks
    return seqio_tasks.materialize(cfg.task, split)
  if cfg.data.source != "python":
    raise ValueError(f"data.source={cfg.data.source!r} is unknown; use 'seqio' or 'python'")
  task = make_task(cfg.task)
  out = []
  for example in task.examples(split):
    prompt_ids, target_ids = task.encode_example(example)
    out.append(dict(example, prompt_ids=prompt_ids, target_ids=target_ids))
  return out


def read_split(workdir: str, split: str) -> list[dict]:
  path = os.path.join(workdir, "data", f"{split}.jsonl")
  if not exists(path):
    raise FileNotFoundError(f"{path} not found; run the data stage first "
                            f"(tts run CONFIG --workdir {workdir} --only data)")
  examples = read_jsonl(path)
  if not examples:
    raise DataError(f"{path} holds no examples; the {split} split is empty: give it examples "
                    f"(task.num_{split} or the data file) and redo the data stage (--only data "
                    "--force)")
  return examples


def run(ctx) -> dict:
  directory = ctx.stage_dir("data")
  counts = {}
  if ctx.is_main:
    make_dirs(directory)
    for split in SPLITS:
      records = _tokenized(ctx.config, split)
      write_jsonl_atomic(os.path.join(directory, f"{split}.jsonl"), records)
      lengths = [len(r["prompt_ids"]) + len(r["target_ids"]) for r in records]
      counts[split] = {"examples": len(records), "max_tokens": max(lengths),
                       "mean_tokens": round(sum(lengths) / len(lengths), 1)}
    write_json_atomic(os.path.join(directory, "manifest.json"), counts)
  return counts
