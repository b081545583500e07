"""Revision model stages (docs/paper.md, "Revision model").

`revision_data`: samples `samples` answers per train question from the small policy at a
higher temperature, drops those without a parsable answer, and builds one trajectory per
right answer: up to 4 wrong answers of the same question in context (the closest to the
target by edit distance last), the right one as the target (tts/data/revisions.py).
`revision`: supervised fine-tuning of the policy on the targets only (the prompt, i.e. the
question and the earlier answers, is masked), through the one trainer; the checkpoint is
chosen `evals_after_best` evaluations after the lowest validation loss.
`revision_orm`: the revision model writes chains of answers on other train questions; an
ORM (the revision model plus a value head) learns each answer's correctness with its
history in context, so it can judge answers as the revision search produces them.
"""
import collections
import dataclasses
import os

import jax
import numpy as np
from tqdm import tqdm

from tts import config_schema, hosts
from tts.atomic_files import exists, read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from tts.data import revisions as revision_format
from tts.data.tasks import make_task
from tts.model.sharding import decode_sharding, make_mesh
from tts.search import revisions
from tts.search.sampler import SamplingConfig
from tts.stages.data import read_split
from tts.stages.policy import lm_arrays, load_policy
from tts.stages.search import question_keys
from tts.stages.verifiers import fit_value_model, split_questions
from tts.train import labelling
from tts.train.checkpoints import load_model, save_params
from tts.train.config import TrainConfig
from tts.train.objectives import NextTokenLoss
from tts.train.trainer import Trainer


def load_revision_model(workdir: str, sharding=None):
  return load_model(os.path.join(workdir, "revision", "final"), sharding)


def sampling_config(cfg) -> SamplingConfig:
  """How the revision model samples its chains (revision_orm and revision_search alike)."""
  s = cfg.revision_sampling
  return SamplingConfig(temperature=s.temperature, max_new_tokens=s.max_new_tokens)


def _with_eos(tokens: list[int], eos_id: int) -> list[int]:
  return tokens if tokens and tokens[-1] == eos_id else tokens + [eos_id]


def _sample_answers(ctx, task, examples: list[dict], sharding
                    ) -> tuple[list[labelling.Solution], int, int]:
  """labelling.sample_solutions over every question: each process samples its share on the
  decode mesh; all get every question's solutions (in question order) and the totals."""
  c = ctx.config.revision_data
  policy = load_policy(ctx.workdir, sharding=sharding)
  mine = hosts.share(len(examples))
  sampling = SamplingConfig(temperature=c.temperature, max_new_tokens=c.max_new_tokens)
  with tqdm(total=len(mine) * c.samples, desc="revision_data", disable=not ctx.is_main) as bar:
    solutions, sampled, tokens = labelling.sample_solutions(
        task, policy, examples, list(mine), c.samples, sampling, jax.random.key(c.seed),
        c.rows_per_batch, bar.update)
  shares = hosts.all_records(
      os.path.join(ctx.stage_dir("revision_data"), "solutions.jsonl"),
      [{"solutions": [dataclasses.asdict(s) for s in solutions], "sampled": sampled,
        "tokens": tokens}])
  return ([labelling.Solution(**s) for share in shares for s in share["solutions"]],
          sum(share["sampled"] for share in shares), sum(share["tokens"] for share in shares))


def run_data(ctx) -> dict:
  cfg = ctx.config
  c = cfg.revision_data
  sharding = decode_sharding(cfg.decode_mesh, cfg.logical_axis_rules)  # a bad mesh: say first
  task = make_task(cfg.task)
  vocab = task.vocab
  examples = read_split(ctx.workdir, "train")[:c.num_questions]
  solutions, sampled, tokens = _sample_answers(ctx, task, examples, sharding)
  by_question = collections.defaultdict(list)
  for s in solutions:
    by_question[s.question].append(
        {"tokens": s.tokens, "text": vocab.decode(s.tokens), "correct": s.correct})
  records = []
  for q, samples in sorted(by_question.items()):
    rng = np.random.default_rng([c.seed, q])  # per question: independent of the others
    for t in revision_format.build_trajectories(samples, rng, c.max_in_context):
      context = [samples[i]["tokens"] for i in t["context"]]
      records.append({
          "id": examples[q]["id"], "question": q, "k": len(context),
          "prompt_ids": revision_format.revision_prompt(vocab, examples[q]["prompt_ids"],
                                                        context, window=c.max_in_context),
          "target_ids": _with_eos(samples[t["target"]]["tokens"], vocab.eos_id)})
  train_q, val_q = split_questions(records, c.heldout_fraction, c.seed) if records else ((), ())
  directory = ctx.stage_dir("revision_data")
  splits = {"train": [r for r in records if r["question"] in train_q],
            "val": [r for r in records if r["question"] in val_q]}
  if not splits["train"] or not splits["val"]:
    raise ValueError(
        f"revision_data: {len(records)} trajectories from {sum(s.correct for s in solutions)} "
        f"right answers of {sampled} samples ({len(examples)} questions) leave no "
        f"{'training' if not splits['train'] else 'validation'} trajectory: raise "
        "revision_data.samples or revision_data.num_questions")
  summary = {"questions": len(examples), "samples": sampled, "parsable": len(solutions),
             "correct": sum(s.correct for s in solutions), "solution_tokens": tokens,
             "trajectories": {k: len(v) for k, v in splits.items()},
             "context_sizes": dict(sorted(collections.Counter(
                 str(r["k"]) for r in records).items())),
             "longest": max(len(r["prompt_ids"]) + len(r["target_ids"]) for r in records)}
  if ctx.is_main:
    for name, rows in splits.items():
      write_jsonl_atomic(os.path.join(directory, f"{name}.jsonl"), rows)
    write_json_atomic(os.path.join(directory, "manifest.json"), summary)
  return summary


def run_train(ctx) -> dict:
  cfg = ctx.config
  task = make_task(cfg.task)
  directory = ctx.stage_dir("revision_data")
  train, val = (read_jsonl(os.path.join(directory, f"{s}.jsonl")) for s in ("train", "val"))
  longest = max(len(r["prompt_ids"]) + len(r["target_ids"]) for r in train + val)
  width = -(-longest // 64) * 64  # packed rows: the longest trajectory fits one
  pad = task.vocab.pad_id
  policy = load_policy(ctx.workdir)
  train_cfg = config_schema.build(TrainConfig, cfg.revision, "revision")
  if not train_cfg.keep_best:
    raise ValueError("revision.keep_best=False: the revision model's checkpoint is chosen on "
                     "validation loss (docs/paper.md); set revision.keep_best=True")
  trainer = Trainer(policy.cfg, train_cfg, NextTokenLoss(), make_mesh(cfg.mesh),
                    cfg.logical_axis_rules)
  out = ctx.stage_dir("revision")
  params, history = trainer.fit(lm_arrays(train, width, pad, packed=True), out,
                                val_data=lm_arrays(val, width, pad, packed=True),
                                init_params=jax.device_get(policy.params), desc="revision")
  save_params(os.path.join(out, "final"), params, policy.cfg)
  chosen = read_json(os.path.join(out, "best", "best.json"))["step"]
  losses = [h["val_loss"] for h in history]
  return {"chosen_step": chosen, "best_step": history[int(np.argmin(losses))]["step"],
          "row_length": width, "val_loss_at_best": round(min(losses), 5),
          "val_loss_at_chosen": round(next(h["val_loss"] for h in history
                                           if h["step"] == chosen), 5),
          "val_losses": {str(h["step"]): round(h["val_loss"], 5) for h in history}}


def chains_record(per_question: list[list[revisions.Answer]]) -> dict:
  """One question's chains of answers (tokens, prompt length, score) as a JSON record."""
  return {"chains": [[dataclasses.asdict(a) for a in chain] for chain in per_question]}


def chains_from_record(record: dict) -> list[list[revisions.Answer]]:
  return [[revisions.Answer(**a) for a in chain] for chain in record["chains"]]


def save_chains(path: str, chains: list[list[list[revisions.Answer]]]):
  """One JSON line per question: its chains (chains_record)."""
  write_jsonl_atomic(path, map(chains_record, chains))


def load_chains(path: str) -> list[list[list[revisions.Answer]]]:
  return [chains_from_record(r) for r in read_jsonl(path)]


def chains_once(path: str, make, is_main: bool):
  """The chains stored at `path`, or `make()`'s, stored there: a rerun after a kill (say,
  in training that follows) does not sample them again."""
  if exists(path):
    return load_chains(path)
  chains = make()
  if is_main:
    save_chains(path, chains)
  return chains


def chains_of_shares(ctx, model, vocab, prompts: list[list[int]], keys, lengths: list[int],
                     path: str, desc: str, score=None) -> list[list[list[revisions.Answer]]]:
  """revisions.run_chains over every question: each process makes the chains of its share
  of the questions with `model` (on its decode mesh) and `score(prompts, chains)`s them if
  given; all get every question's chains, joined from part files beside `path`."""
  s = ctx.config.revision_sampling
  mine = hosts.share(len(prompts))
  prompts = prompts[mine.start:mine.stop]
  bar = tqdm(total=max(lengths), desc=desc, disable=not ctx.is_main)
  chains = revisions.run_chains(model, vocab, prompts, keys[mine.start:mine.stop], lengths,
                                sampling_config(ctx.config), s.window, s.rows_per_batch,
                                progress=lambda done, _: bar.update(done - bar.n))
  bar.close()
  if score is not None:
    score(prompts, chains)
  return [chains_from_record(x)
          for x in hosts.all_records(path, [chains_record(c) for c in chains])]


def orm_records(task, examples, chains, window: int) -> list[dict]:
  """The chains' parsable answers as ORM training solutions: the revision prompt the answer
  was sampled from (its history), the answer, and whether it is right."""
  vocab = task.vocab
  out = []
  for q, per_question in enumerate(chains):
    for chain in per_question:
      for t, a in enumerate(chain):
        text = vocab.decode(a.tokens)
        ends = labelling.step_ends(a.tokens, task.step_end_ids, vocab.eos_id)
        if task.extract_answer(text) is None or not ends:
          continue
        out.append({"question": q, "step": t, "solution_ids": a.tokens, "step_ends": ends,
                    "prompt_ids": revision_format.revision_prompt(
                        vocab, examples[q]["prompt_ids"], [b.tokens for b in chain[:t]],
                        window),
                    "correct": bool(task.is_correct(text, examples[q]))})
  return out


def run_orm(ctx) -> dict:
  cfg = ctx.config
  c, s = cfg.revision_orm_data, cfg.revision_sampling
  sharding = decode_sharding(cfg.decode_mesh, cfg.logical_axis_rules)  # a bad mesh: say first
  task = make_task(cfg.task)
  first = cfg.revision_data.num_questions  # questions the revision model was not trained on
  examples = read_split(ctx.workdir, "train")[first:first + c.num_questions]
  if len(examples) < c.num_questions:
    raise ValueError(f"revision_orm_data.num_questions={c.num_questions}: the train split "
                     f"has only {len(examples)} questions after the {first} of revision_data; "
                     "lower one of them or raise task.num_train")
  model = load_revision_model(ctx.workdir, sharding)
  path = os.path.join(ctx.stage_dir("revision_orm"), "chains.jsonl")
  chains = chains_once(path, lambda: chains_of_shares(
      ctx, model, task.vocab, [e["prompt_ids"] for e in examples],
      question_keys(c.seed, examples), [c.chain_length] * c.chains, path,
      "revision_orm chains"), ctx.is_main)
  records = orm_records(task, examples, chains, s.window)
  summary = fit_value_model(ctx, "revision_orm", "orm", records, model,
                            config_schema.build(TrainConfig, cfg.revision_orm, "revision_orm"))
  by_step = collections.defaultdict(list)
  for r in records:
    by_step[r["step"]].append(r["correct"])
  return {"answers": sum(len(ch) for per_q in chains for ch in per_q),
          "parsable": len(records),
          "accuracy_by_step": [round(float(np.mean(by_step[t])), 4) for t in sorted(by_step)],
          **summary}
