"""The revision stages at toy scale (the shared tiny_run): trajectories in the documented
format, the checkpoint rule, one result file per budget split, and identical files when the
search stage is redone from scratch."""
import dataclasses
import json
import os

from tiny import config

from tts import experiment
from tts.atomic_files import read_jsonl
from tts.data.revisions import WINDOW
from tts.data.tasks import make_task
from tts.search import revisions
from tts.stages.revision import orm_records


def _json(*parts):
  with open(os.path.join(*parts)) as f:
    return json.load(f)


def test_trajectories_are_revision_prompts_with_incorrect_answers_then_a_right_one(tiny_run):
  cfg = config()
  task = make_task(cfg.task)
  vocab = task.vocab
  train_questions = {e["id"]: e for e in read_jsonl(os.path.join(tiny_run, "data", "train.jsonl"))}
  records = [r for s in ("train", "val")
             for r in read_jsonl(os.path.join(tiny_run, "revision_data", f"{s}.jsonl"))]
  manifest = _json(tiny_run, "revision_data", "manifest.json")
  assert sum(manifest["trajectories"].values()) == len(records) == manifest["correct"]
  attempt, revise = vocab.encode("<attempt>\n"), vocab.encode("<revise>\n")
  for r in records:
    example = train_questions[r["id"]]
    assert 0 <= r["k"] <= 4
    if r["k"]:
      tail = revise + example["prompt_ids"]
      assert r["prompt_ids"][-len(tail):] == tail
      assert r["prompt_ids"][:len(attempt)] == attempt
    else:
      assert r["prompt_ids"] == example["prompt_ids"]  # a first answer: the policy's prompt
    assert r["target_ids"][-1] == vocab.eos_id
    assert task.is_correct(vocab.decode(r["target_ids"]), example)
  summary = _json(tiny_run, "revision", "done.json")["summary"]
  steps = sorted(int(s) for s in summary["val_losses"])
  best = steps.index(summary["best_step"])
  assert summary["chosen_step"] == steps[min(best + 1, len(steps) - 1)]  # one eval after best


def test_revision_search_writes_every_split_of_every_budget(tiny_run):
  cfg = config()
  directory = os.path.join(tiny_run, "revision_search")
  chains = read_jsonl(os.path.join(directory, "chains.jsonl"))
  lengths = revisions.chain_lengths(cfg.revision_search.budgets, cfg.revision_search.full_chains)
  assert [[len(c) for c in q["chains"]] for q in chains] == [lengths] * len(chains)
  manifest = _json(directory, "manifest.json")["methods"]
  for n in cfg.revision_search.budgets:
    for p, length in revisions.budget_splits(n):
      records = read_jsonl(os.path.join(directory, f"chains{p}", f"n{n}.jsonl"))
      assert manifest[f"chains{p}"][str(n)]["chain_length"] == length
      assert len(records) == len(chains) == cfg.search.num_questions
      for record, stored in zip(records, chains):
        assert record["kind"] == "revision" and record["counts"]["generations"] == n
        got = [(c["chain"], c["step"], c["num_tokens"]) for c in record["candidates"]]
        assert got == [(c, t, len(stored["chains"][c][t]["tokens"]))
                       for c in range(p) for t in range(length)]
  measurements = _json(directory, "measurements.json")
  assert len(measurements["pass1_by_step"]) == max(cfg.revision_search.budgets)
  assert set(measurements["sequential_vs_parallel"]) == {"2", "4"}
  assert "revisions" in _json(tiny_run, "select", "settings.json")
  assert WINDOW == cfg.revision_sampling.window == 4


def test_revision_search_redone_from_scratch_gives_identical_files(copy_run, tiny_run):
  experiment.run(config(), str(copy_run), only="revision_search", force=True)
  old_dir = os.path.join(tiny_run, "revision_search")
  new_dir = os.path.join(copy_run, "revision_search")
  names = sorted(os.path.relpath(os.path.join(d, f), old_dir)
                 for d, _, files in os.walk(old_dir) for f in files
                 if f not in ("done.json", "started.json"))
  assert "chains.jsonl" in names and "chains1/n4.jsonl" in names
  for name in names:
    with open(os.path.join(old_dir, name), "rb") as a, open(os.path.join(new_dir, name), "rb") as b:
      assert a.read() == b.read(), name


def test_orm_records_split_steps_by_the_tasks_delimiter():
  """The revision ORM's training records split answers into steps by Task.step_end_ids, the
  rule search and labelling use (here "=", not the newline)."""
  task = make_task(config().task)
  example = task.examples("train")[0]
  tokens = task.vocab.encode(example["solution"]) + [task.vocab.eos_id]
  examples = [{**example, "prompt_ids": task.vocab.encode(example["prompt"])}]
  chains = [[[revisions.Answer(tokens, 0)]]]
  equals = dataclasses.replace(task, step_delimiter="=")
  (record,) = orm_records(equals, examples, chains, WINDOW)
  ends = [i for i, t in enumerate(tokens[:-1]) if task.vocab.decode([t]) == "="]
  assert record["step_ends"] == ends + [len(tokens) - 2] and record["correct"]
  (by_line,) = orm_records(task, examples, chains, WINDOW)
  assert by_line["step_ends"] != record["step_ends"]
