"""The `search` stage at toy scale: files per method and budget, schema, resume, determinism."""
import json
import os

import numpy as np
import pytest
from search_models import solution_log_probs
from tiny import config

from tts import cli, experiment
from tts.data.tasks import make_task
from tts.search import results
from tts.stages.data import read_split
from tts.train.checkpoints import load_model, load_model_config


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_every_method_and_budget_has_a_file_with_the_documented_record(tiny_run):
  policy = load_model_config(os.path.join(tiny_run, "policy", "small", "final")).num_params
  search = config().search
  verifier_params = {name: load_model_config(os.path.join(tiny_run, v.path)).num_params
                     for name, v in search.verifiers.items()}
  manifest = json.load(open(os.path.join(tiny_run, "search", "manifest.json")))
  assert sorted(manifest["skipped"]) == sorted([
      "beam_sqrt/n2", "beam4/n1", "beam4/n2", "lookahead_sqrt_k1/n2", "lookahead4_k3/n1",
      "lookahead4_k3/n2", "dvts4/n1", "dvts4/n2"])
  for method, per_budget in manifest["methods"].items():
    for n, summary in per_budget.items():
      records = _read(os.path.join(tiny_run, "search", summary["file"]))
      assert len(records) == 5 and summary["questions"] == 5
      for r in records:
        assert r["method"] == method and r["n"] == int(n)
        assert r["verifier"] == search.methods[method].verifier
        verifier = verifier_params[r["verifier"]]
        assert 1 <= len(r["candidates"]) <= int(n)
        assert set(r["selected"]) == {"argmax", "weighted", "majority"}
        c = r["counts"]
        on_paths = [x["num_tokens"] for x in r["candidates"]]  # tree paths share prefixes
        if r["kind"] == "best_of_n":
          assert c["generated_tokens"] == sum(on_paths)
        assert c["generated_tokens"] >= max(on_paths)
        assert c["policy_flops"] == 2 * policy * (c["prompt_tokens"] + c["generated_tokens"])
        assert c["verifier_flops"] == 2 * verifier * c["verifier_tokens"]
        assert c["rounds"] >= 1 and c["candidates"] == len(r["candidates"])
        for x in r["candidates"]:
          assert all(0.0 <= s <= 1.0 for s in x["step_scores"])
      assert summary["weighted"] == pytest.approx(
          sum(r["selected"]["weighted"]["correct"] for r in records) / 5, abs=1e-4)
      assert 0 < summary["live_row_fraction"] <= 1  # every file was decoded by this run
  work = manifest["decode_work"]
  assert work["live_row_fraction"] == pytest.approx(work["live_row_tokens"] / work["row_tokens"])
  lookahead = _read(os.path.join(tiny_run, "search", "lookahead4_k3", "n4.jsonl"))
  assert all(r["counts"]["generations"] == 16 for r in lookahead)


def test_verifier_comparison_recomputes_the_files_selection(tiny_run):
  table = json.load(open(os.path.join(tiny_run, "search", "verifier_comparison.json")))
  assert table["prm_method"] == "best_of_n" and table["orm_method"] == "best_of_n_orm"
  for n in ("1", "2", "4"):
    records = _read(os.path.join(tiny_run, "search", "best_of_n", f"n{n}.jsonl"))
    row = table["accuracy_by_n"][n]
    assert row["prm_last_weighted"] == pytest.approx(
        sum(r["selected"]["weighted"]["correct"] for r in records) / len(records), abs=1e-4)
    assert set(row) >= {"prm_min_argmax", "prm_prod_weighted", "orm_weighted", "majority"}


def test_verifier_check_reads_the_largest_budget_with_intervals(tiny_run):
  """The ordering the method needs, from the best-of-N files: accuracies and differences
  with intervals, recomputable from the records; the summary shows it."""
  check = json.load(open(os.path.join(tiny_run, "search", "verifier_comparison.json")))[
      "checks"]["4"]
  records = _read(os.path.join(tiny_run, "search", "best_of_n", "n4.jsonl"))
  first = sum(r["candidates"][0]["correct"] for r in records) / len(records)
  weighted = sum(r["selected"]["weighted"]["correct"] for r in records) / len(records)
  assert check["accuracy"]["one_sample"]["value"] == pytest.approx(first, abs=1e-4)
  assert check["accuracy"]["lm_weighted"]["value"] == pytest.approx(weighted, abs=1e-4)
  diff = check["differences"]["lm_weighted - majority"]
  lo, hi = diff["ci"]
  assert lo <= diff["value"] <= hi
  assert set(check["within_question_auroc"]) == {"lm", "prm", "orm"}
  prm = _read(os.path.join(tiny_run, "search", "best_of_n_prm", "n4.jsonl"))
  assert check["accuracy"]["prm_weighted"]["value"] == pytest.approx(
      sum(r["selected"]["weighted"]["correct"] for r in prm) / len(prm), abs=1e-4)
  summary = open(os.path.join(tiny_run, "report", "summary.md")).read()
  assert "## Verifiers on best-of-N samples" in summary and "At N = 4" in summary


def test_within_question_auroc_ranks_answers_inside_each_question():
  def record(*scored):
    return {"candidates": [{"correct": c, "step_scores": [0.5, s]} for c, s in scored]}
  records = [record((True, 0.9), (False, 0.2), (False, 0.3)),  # right above both wrong: 1
             record((True, 0.1), (False, 0.6)),  # right below: 0
             record((True, 0.4), (False, 0.4)),  # tie: 0.5
             record((True, 0.9), (True, 0.8))]  # one class only: left out
  assert results.within_question_auroc(records, "last").tolist() == [1.0, 0.0, 0.5]
  both_half = [record((True, 0.9), (False, 0.6))]  # min reads the first step's 0.5 for both
  assert results.within_question_auroc(both_half, "last").tolist() == [1.0]
  assert results.within_question_auroc(both_half, "min").tolist() == [0.5]


def test_best_of_n_files_are_prefixes_of_the_largest(tiny_run):
  big = _read(os.path.join(tiny_run, "search", "best_of_n", "n4.jsonl"))
  two = _read(os.path.join(tiny_run, "search", "best_of_n", "n2.jsonl"))
  orm = _read(os.path.join(tiny_run, "search", "best_of_n_orm", "n4.jsonl"))
  for b, t, o in zip(big, two, orm):
    assert [c["text"] for c in t["candidates"]] == [c["text"] for c in b["candidates"][:2]]
    assert t["counts"]["generated_tokens"] == sum(c["num_tokens"] for c in t["candidates"])
    assert [c["text"] for c in o["candidates"]] == [c["text"] for c in b["candidates"]]


def test_a_lost_file_is_redone_identically_and_the_rest_are_kept(copy_run):
  workdir = str(copy_run)
  search = os.path.join(workdir, "search")
  lost = os.path.join(search, "beam_sqrt", "n4.jsonl")
  kept = os.path.join(search, "dvts4", "n4.jsonl")
  with open(lost) as f:
    before = f.read()
  stamp = os.path.getmtime(kept)
  os.remove(lost)
  os.remove(os.path.join(search, "done.json"))
  experiment.run(config(), workdir, only="search")
  with open(lost) as f:
    assert f.read() == before
  assert os.path.getmtime(kept) == stamp


def test_a_verifier_without_value_head_is_refused(copy_run):
  with pytest.raises(ValueError, match="search.verifiers.prm.path.*no value head"):
    experiment.run(config("--config.search.verifiers.prm.path=policy/small/final"),
                   str(copy_run), only="search", force=True)


def test_a_likelihood_verifier_reads_its_lm_probability_of_every_step(copy_run):
  """The policy read as a likelihood verifier (min reading): each candidate's step scores are
  the lowest probability the policy gives any of its tokens so far, from one teacher-forced
  pass over the whole text; the ORM's method now scores with it."""
  workdir = str(copy_run)
  experiment.run(config("--config.search.verifiers.orm.kind=likelihood",
                        "--config.search.verifiers.orm.path=policy/small/final",
                        "--config.search.verifiers.orm.likelihood_reading=min"),
                 workdir, only="search", force=True)
  lm = load_model(os.path.join(workdir, "policy", "small", "final"))
  task = make_task(config().task)
  prompts = {q["id"]: q["prompt_ids"] for q in read_split(workdir, "test")}
  records = _read(os.path.join(workdir, "search", "best_of_n_orm", "n4.jsonl"))
  checked = 0
  for r in records:
    assert r["verifier_kind"] == "likelihood"
    assert r["counts"]["verifier_flops"] == 2 * lm.cfg.num_params * r["counts"]["verifier_tokens"]
    for c in r["candidates"]:
      prompt, solution = prompts[r["id"]], task.vocab.encode(c["text"])
      if len(solution) + c["finished"] != c["num_tokens"]:
        continue  # the toy policy drew a token its text does not keep (pad, say)
      read = solution_log_probs(lm, prompt, solution)
      ends = [i for i, t in enumerate(solution) if t in task.step_end_ids]
      expected = [float(np.exp(read[:e + 1].min())) for e in ends]
      np.testing.assert_allclose(c["step_scores"][:len(expected)], expected, rtol=1e-4)
      checked += len(expected)
  assert checked >= 10


def test_stage_commands_are_the_stages():
  assert list(cli.STAGE_COMMANDS) == [s.name for s in experiment.STAGES]
