"""`label` stage: Monte-Carlo step labels for PRM training, written in shards.

label/shards/shard-<i>.jsonl holds the labelled solutions of questions
[i * questions_per_shard, (i + 1) * questions_per_shard) of the train split. A shard is
written atomically when complete; a rerun after a kill does only the missing shards. Each
process labels its share of the shards (tts/hosts.py) on its own devices (decode_mesh), and
writes them itself: shards are the unit of resumption. manifest.json sums the counts.
"""
import os

import jax
import numpy as np
from tqdm import tqdm

from tts import hosts, pipeline
from tts.atomic_files import exists, read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from tts.data.errors import DataError
from tts.data.tasks import make_task
from tts.model.sharding import decode_sharding
from tts.search import sampler
from tts.search.sampler import SamplingConfig, pad_prompts
from tts.stages.data import read_split
from tts.stages.policy import load_policy
from tts.train import labelling


def shard_path(workdir: str, index: int) -> str:
  return os.path.join(workdir, "label", "shards", f"shard-{index:05d}.jsonl")


def shard_counts(workdir: str, index: int) -> dict:
  """What shard `index` holds, as written beside it when it was complete."""
  return read_jsonl(shard_path(workdir, index) + ".counts")[0]


def read_shards(workdir: str, shards: int | None = None) -> list[dict]:
  """Every labelled solution, in question order; `shards` defaults to the manifest's. Each
  shard must hold the solutions its .counts file records."""
  if shards is None:
    shards = read_json(os.path.join(workdir, "label", "manifest.json"))["shards"]
  out = []
  for i in range(shards):
    path = shard_path(workdir, i)
    records, kept = read_jsonl(path), shard_counts(workdir, i)["solutions_kept"]
    if len(records) != kept:
      raise DataError(f"{path} holds {len(records)} solutions but {path}.counts records {kept}; "
                      f"the shard is damaged: delete both files and label/done.json, then "
                      "rerun --only label (it redoes missing shards)")
    out += records
  return out


def _label_shard(cfg, task, policy, examples, questions, width) -> tuple[list[dict], dict]:
  c = cfg.label
  sampling = SamplingConfig(temperature=c.temperature, max_new_tokens=c.max_new_tokens)
  key = jax.random.key(c.seed)
  solutions, sampled, tokens = labelling.sample_solutions(
      task, policy, examples, questions, c.solutions, sampling, jax.random.fold_in(key, 0),
      c.rows_per_batch)
  work = sampler.Work()
  rollout_tokens = labelling.label(task, policy, examples, solutions, c.rollouts, sampling,
                                   jax.random.fold_in(key, 1), c.rows_per_batch, width,
                                   work=work)
  records = [{
      "id": examples[s.question]["id"], "question": s.question,
      "prompt_ids": examples[s.question]["prompt_ids"], "sample": s.number,
      "solution_ids": s.tokens, "answer": s.answer, "correct": s.correct,
      "step_ends": s.step_ends, "labels": s.labels, "rollouts_correct": s.rollouts_correct,
  } for s in solutions]
  counts = {"questions": len(questions), "solutions_sampled": sampled,
            "solutions_kept": len(solutions),
            "steps": sum(len(s.step_ends) for s in solutions),
            "rollouts": sum((len(s.step_ends) - 1) * c.rollouts for s in solutions),
            "solution_tokens": tokens, "rollout_tokens": rollout_tokens,
            "rollout_row_tokens": work.row_tokens}
  return records, counts


def run(ctx) -> dict:
  cfg = ctx.config
  c = cfg.label
  sharding = decode_sharding(cfg.decode_mesh, cfg.logical_axis_rules)  # a bad mesh: say first
  task = make_task(cfg.task)
  examples = read_split(ctx.workdir, "train")[:c.num_questions]
  policy = load_policy(ctx.workdir, sharding=sharding)
  width = pad_prompts([e["prompt_ids"] for e in examples], task.vocab.pad_id)[0].shape[1]
  num_shards = -(-len(examples) // c.questions_per_shard)
  for i in tqdm(hosts.share(num_shards), desc="label", disable=not ctx.is_main):
    path = shard_path(ctx.workdir, i)
    if exists(path):
      continue
    questions = list(range(i * c.questions_per_shard,
                           min((i + 1) * c.questions_per_shard, len(examples))))
    records, counts = _label_shard(cfg, task, policy, examples, questions, width)
    write_jsonl_atomic(path + ".counts", [counts])
    write_jsonl_atomic(path, records)
  pipeline.sync("tts: label shards")
  counts = [shard_counts(ctx.workdir, i) for i in range(num_shards)]
  totals = {k: sum(c[k] for c in counts) for k in counts[0]
            if all(k in c for c in counts)}  # a shard from before a count existed lacks it
  records = read_shards(ctx.workdir, num_shards)
  labels = np.asarray([x for r in records for x in r["labels"]])
  summary = {**totals, "shards": num_shards, "mean_label": round(float(labels.mean()), 4),
             "solution_accuracy": round(float(np.mean([r["correct"] for r in records])), 4),
             # of the row-tokens the rollouts' decoding computed, the share live rows added
             "rollout_live_fraction": (round(totals["rollout_tokens"] /
                                             totals["rollout_row_tokens"], 4)
                                       if totals.get("rollout_row_tokens") else None)}
  if ctx.is_main:
    write_json_atomic(os.path.join(ctx.workdir, "label", "manifest.json"), summary)
  return summary
