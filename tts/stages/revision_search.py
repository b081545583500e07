"""`revision_search` stage: sequential and parallel revisions at every budget and split.

The revision model writes chains of answers for the test questions (search.question_keys:
the same per-question keys scheme as the search stage); the revision ORM scores every
answer with its history in context. One run of the longest chains serves every budget N
and split into P chains of N / P (tts/search/revisions.py), stored in chains.jsonl so a
rerun reads it back. Writes revision_search/chains<P>/n<N>.jsonl in the search schema,
manifest.json (accuracy per file) and measurements.json (pass@1 per revision step, right
answers turning wrong, sequential vs parallel, accuracy per split and difficulty bin).
"""
import os

from tts.atomic_files import exists, write_json_atomic, write_jsonl_atomic
from tts.data.tasks import make_task
from tts.model.sharding import decode_sharding
from tts.search import revision_results, revisions
from tts.search.results import summarize
from tts.stages.data import read_split
from tts.stages.revision import chains_of_shares, chains_once, load_revision_model
from tts.stages.search import load_verifier, question_keys
from tts.stages.select import read_difficulty
from tts.train.checkpoints import load_model_config


def difficulty_bins(workdir: str) -> dict[str, int] | None:
  """Question id -> oracle difficulty bin, from the difficulty stage when it ran."""
  if not exists(os.path.join(workdir, "difficulty", "questions.jsonl")):
    return None
  return {r["id"]: r["oracle_bin"] for r in read_difficulty(workdir)}


def _make_chains(ctx, task, questions, path, sharding):
  """Every question's chains, scored by the revision ORM; each process makes those of its
  share of the questions on its own devices (decode_mesh)."""
  cfg = ctx.config
  r, s = cfg.revision_search, cfg.revision_sampling
  model = load_revision_model(ctx.workdir, sharding)

  def score(prompts, chains):
    orm = load_verifier(ctx.workdir, "revision_orm/final", "revision_search (revision_orm)",
                        sharding=sharding)
    revisions.score_chains(orm, task.vocab, prompts, chains, s.window, s.rows_per_batch)

  return chains_of_shares(ctx, model, task.vocab, [q["prompt_ids"] for q in questions],
                          question_keys(r.seed, questions),
                          revisions.chain_lengths(r.budgets, r.full_chains), path,
                          "revision chains", score)


def run(ctx) -> dict:
  cfg = ctx.config
  r = cfg.revision_search
  sharding = decode_sharding(cfg.decode_mesh, cfg.logical_axis_rules)  # a bad mesh: say first
  task = make_task(cfg.task)
  questions = read_split(ctx.workdir, "test")[:cfg.search.num_questions]  # as search
  directory = ctx.stage_dir("revision_search")
  path = os.path.join(directory, "chains.jsonl")
  chains = chains_once(path, lambda: _make_chains(ctx, task, questions, path, sharding),
                       ctx.is_main)
  graded = [revision_results.grade_chains(task, q, ch) for q, ch in zip(questions, chains)]
  sizes = tuple(load_model_config(os.path.join(ctx.workdir, name, "final")).num_params
                for name in ("revision", "revision_orm"))
  records, manifest = {}, {}
  for n in sorted(r.budgets):
    for p, length in revisions.budget_splits(n):
      records[(n, p)] = [revision_results.question_record(task, q, g, p, length, sizes)
                         for q, g in zip(questions, graded)]
      path = os.path.join(directory, f"chains{p}", f"n{n}.jsonl")
      if ctx.is_main:
        write_jsonl_atomic(path, records[(n, p)])
      manifest.setdefault(f"chains{p}", {})[str(n)] = {
          "file": os.path.relpath(path, directory), "chain_length": length,
          **summarize(records[(n, p)])}
  longest = max(r.budgets)
  table = revision_results.accuracy_table(records, difficulty_bins(ctx.workdir))
  measurements = {
      "full_chains": r.full_chains, "steps": longest,
      "pass1_by_step": [round(x, 4) for x in revision_results.pass1_by_step(
          graded, r.full_chains, longest)],
      "flips": revision_results.flip_rates(graded, r.full_chains, longest),
      "sequential_vs_parallel": revision_results.sequential_vs_parallel(table),
      "accuracy": table}
  if ctx.is_main:
    write_json_atomic(os.path.join(directory, "manifest.json"),
                      {"methods": manifest, "questions": len(questions)})
    write_json_atomic(os.path.join(directory, "measurements.json"), measurements)
  return {k: measurements[k] for k in ("pass1_by_step", "flips", "sequential_vs_parallel")}
