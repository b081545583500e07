"""`search` stage: every configured method at every budget on the test questions.

Writes search/<method>/n<N>.jsonl (one record per question, schema in WORKSPACE.md) and
search/manifest.json (accuracy and mean counts per file). A file already written is read
back instead of recomputed, so a killed stage resumes where it stopped.
"""
import json
import os

import jax
import numpy as np
from tqdm import tqdm

from tts import config_schema
from tts.atomic_files import write_json_atomic, write_jsonl_atomic
from tts.data.tasks import make_task
from tts.search import methods, results, tree
from tts.search.methods import MethodConfig
from tts.search.sampler import SamplingConfig, pad_prompts
from tts.search.verifier import KINDS, STEP_AGGREGATIONS
from tts.stages.data import read_split
from tts.train.checkpoints import load_model


def load_verifier(workdir: str, path: str, field: str):
  """The value-head model at `path` (relative to the workdir unless absolute)."""
  model = load_model(os.path.join(workdir, path))
  if not model.cfg.value_head:
    raise ValueError(f"{field}={path!r}: the model in {os.path.join(workdir, path)} has no "
                     "value head, so it cannot score steps; point it at a PRM or ORM")
  return model


def make_decoder(cfg, task, workdir: str, questions: list[dict]) -> tree.Decoder:
  s = cfg.search
  if s.verifier_kind not in KINDS:
    raise ValueError(f"search.verifier_kind={s.verifier_kind!r}; use one of {KINDS}")
  if s.aggregation not in STEP_AGGREGATIONS:
    raise ValueError(f"search.aggregation={s.aggregation!r}; use one of {STEP_AGGREGATIONS}")
  if s.verifier_kind == "orm" and s.aggregation != "last":
    raise ValueError("search.aggregation must be 'last' with an ORM: only its reading after "
                     "the final step is trained")
  width = pad_prompts([q["prompt_ids"] for q in questions], task.vocab.pad_id)[0].shape[1]
  return tree.Decoder(
      policy=load_model(os.path.join(workdir, "policy", "small", "final")),
      verifier=load_verifier(workdir, s.verifier, "search.verifier"),
      sampling=SamplingConfig(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                              max_new_tokens=s.max_new_tokens),
      step_end_ids=tuple(sorted(task.vocab.step_end_ids)), eos_id=task.vocab.eos_id,
      pad_id=task.vocab.pad_id, prompt_width=width, max_step_tokens=s.max_step_tokens)


def method_configs(cfg) -> dict[str, MethodConfig]:
  return {name: config_schema.build(MethodConfig, fields, f"search.methods.{name}")
          for name, fields in cfg.search.methods.items()}


def question_keys(seed: int, questions: list[dict]):
  """One key per question, from its position in the test split: the same in every method
  (common random numbers make methods' differences less noisy)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(len(questions)))


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def run(ctx) -> dict:
  cfg = ctx.config
  s = cfg.search
  task = make_task(cfg.task)
  questions = read_split(ctx.workdir, "test")[:s.num_questions]
  decoder = make_decoder(cfg, task, ctx.workdir, questions)
  prompts = [q["prompt_ids"] for q in questions]
  keys = question_keys(s.seed, questions)
  sizes = (decoder.policy.cfg.num_params, decoder.verifier.cfg.num_params)
  directory = ctx.stage_dir("search")
  budgets = sorted(s.budgets)
  manifest, skipped = {}, []
  jobs = [(name, m) for name, m in method_configs(cfg).items()]
  progress = tqdm(total=len(jobs) * len(budgets), desc="search")
  for name, method in jobs:
    fitting = [n for n in budgets if methods.tree_shape(method, n) is not None]
    skipped += [f"{name}/n{n}" for n in budgets if n not in fitting]
    progress.update(len(budgets) - len(fitting))
    paths = {n: os.path.join(directory, name, f"n{n}.jsonl") for n in fitting}
    done = {n: _read_jsonl(paths[n]) for n in fitting if os.path.exists(paths[n])}
    progress.update(len(done))
    missing = [n for n in fitting if n not in done]
    # best-of-N: one run at the largest missing budget serves every smaller one.
    for n in (missing[-1:] if method.kind == "best_of_n" else missing):
      progress.set_postfix_str(f"{name} n={n}")
      found = methods.run(decoder, methods.tree_shape(method, n), prompts, keys,
                          s.rows_per_batch)
      for m in ([k for k in missing if k <= n] if method.kind == "best_of_n" else [n]):
        per_question = ([methods.first_samples(r, m) for r in found]
                        if method.kind == "best_of_n" else found)
        done[m] = [results.question_record(task, q, name, method, m, r, s.aggregation, *sizes)
                   for q, r in zip(questions, per_question)]
        if ctx.is_main:
          write_jsonl_atomic(paths[m], done[m])
        progress.update(1)
    manifest[name] = {str(n): {"file": os.path.relpath(paths[n], directory),
                               **results.summarize(done[n])} for n in fitting}
  progress.close()
  out = {"methods": manifest, "skipped": skipped, "questions": len(questions),
         "verifier": s.verifier, "verifier_kind": s.verifier_kind, "aggregation": s.aggregation}
  if ctx.is_main:
    write_json_atomic(os.path.join(directory, "manifest.json"), out)
  return {name: {n: v["weighted"] for n, v in per.items()} for name, per in manifest.items()}
