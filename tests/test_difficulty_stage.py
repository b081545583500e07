"""The difficulty stage and the scaling stages after it in the toy-scale demo pipeline:
records, compute accounting, determinism, the summary's keys and the CLI's last line."""
import filecmp
import glob
import json
import os

import numpy as np
import pytest
from tiny import DEMO, TINY, config

from tts import cli, experiment
from tts.atomic_files import read_jsonl
from tts.scaling import difficulty, flops
from tts.train.checkpoints import load_model_config


def _params(workdir, path):
  return load_model_config(os.path.join(workdir, path)).num_params


def test_records_bins_and_compute(tiny_run):
  records = read_jsonl(os.path.join(tiny_run, "difficulty", "questions.jsonl"))
  test = read_jsonl(os.path.join(tiny_run, "data", "test.jsonl"))
  assert [r["id"] for r in records] == [q["id"] for q in test[:5]]  # search.num_questions
  small, large = _params(tiny_run, "policy/small/final"), _params(tiny_run, "policy/large/final")
  prm = _params(tiny_run, "prm/final")
  prm_cfg = load_model_config(os.path.join(tiny_run, "prm/final"))
  pass1 = np.array([r["pass1"] for r in records])
  np.testing.assert_allclose(pass1 * 4, np.round(pass1 * 4), atol=1e-5)  # K = 4 samples
  np.testing.assert_array_equal([r["oracle_bin"] for r in records],
                                difficulty.quantile_bins(pass1, 2))
  np.testing.assert_array_equal([r["predicted_bin"] for r in records], difficulty.quantile_bins(
      [r["predicted_score"] for r in records], 2))
  for r, q in zip(records, test):
    e = r["estimation"]
    assert e["generations"] == 4 and 0.0 < r["predicted_score"] < 1.0
    assert e["policy_tokens"] > 4 * len(q["prompt_ids"])
    assert e["flops"] == 2 * small * e["policy_tokens"] + 2 * prm * e["verifier_tokens"]
    assert r["large_flops"] == 2 * large * r["large_tokens"] > 0
    # Attention: each sample its own sequence of prompt + sample tokens; by convexity the
    # (query, key) pairs are at least those of K equal sequences.
    mean = e["policy_tokens"] / 4
    assert e["policy_attention_pairs"] >= 4 * mean * (mean + 1) / 2
    p = r["prompt_estimation"]  # one PRM prefill of the prompt, no generation
    n = len(q["prompt_ids"])
    assert (p["generations"], p["policy_tokens"], p["verifier_tokens"]) == (0, 0, n)
    assert (p["policy_attention_pairs"], p["verifier_attention_pairs"]) == (0, n * (n + 1) // 2)
    assert p["flops"] == 2 * prm * n
    assert p["attention_flops"] == flops.attention_flops_per_pair(prm_cfg) * n * (n + 1) / 2
  manifest = json.load(open(os.path.join(tiny_run, "difficulty", "manifest.json")))
  assert manifest["estimation"]["generations"] == 20
  assert manifest["estimation"]["flops"] == sum(r["estimation"]["flops"] for r in records)
  assert manifest["prompt_estimation"]["generations"] == 0
  np.testing.assert_array_equal([r["prompt_bin"] for r in records], difficulty.quantile_bins(
      [r["prompt_score"] for r in records], 2))


def test_prompt_score_is_the_search_engines_reading_of_the_prompt(tiny_run):
  """The difficulty stage's prompt reading (verifier.final_readings) and the search
  records' prompt_score (the engine's score_prompts in its own padded batch) read the same
  position with the same verifier; rounding and padding leave 1e-5."""
  from tiny import config
  name = config().difficulty.verifier
  scores = {r["id"]: r["prompt_score"]
            for r in read_jsonl(os.path.join(tiny_run, "difficulty", "questions.jsonl"))}
  compared = 0
  for path in sorted(glob.glob(os.path.join(tiny_run, "search", "*", "n*.jsonl"))):
    for record in read_jsonl(path):
      if record["verifier"] == name:
        assert record["prompt_score"] == pytest.approx(scores[record["id"]], abs=1e-5), path
        compared += 1
  assert compared >= 5 * 3  # every question, at least best-of-N's three budgets
  assert len(set(scores.values())) > 1  # the reading differs between prompts


def test_prompt_bins_put_higher_readings_in_easier_bins():
  """Bin 1 is the easiest: the highest prompt reading, as for predicted scores."""
  np.testing.assert_array_equal(difficulty.quantile_bins([0.1, 0.9, 0.5, 0.7], 2), [2, 1, 2, 1])


def test_predicted_score_is_the_prm_reading_after_each_documented_sample(tiny_run):
  """Redraws question 0's samples with the keys WORKSPACE.md documents and reads the PRM
  once per sample, unpadded: a reading taken at padding or at the eos would differ."""
  import jax
  from tts.data.tasks import make_task
  from tts.search import sampler, verifier
  from tts.stages.policy import load_policy
  from tts.stages.search import load_verifier
  cfg = config()
  task = make_task(cfg.task)
  question = read_jsonl(os.path.join(tiny_run, "data", "test.jsonl"))[0]
  policy, prm = load_policy(tiny_run), load_verifier(tiny_run, "prm/final", "prm")
  base = jax.random.fold_in(jax.random.key(cfg.difficulty.seed), 0)
  keys = jax.vmap(lambda j: jax.random.fold_in(base, j))(np.arange(4))
  sampling = sampler.SamplingConfig(temperature=cfg.difficulty.temperature,
                                    max_new_tokens=cfg.difficulty.max_new_tokens)
  samples = sampler.sample_all(policy.graphdef, policy.params, [question["prompt_ids"]] * 4,
                               keys, sampling, (task.vocab.eos_id,), task.vocab.pad_id, 4)
  readings = []
  for s in samples:
    seq = question["prompt_ids"] + (s[:-1] if s[-1] == task.vocab.eos_id else s)
    out = verifier.score_prompts(prm.graphdef, prm.params, np.asarray([seq], np.int32),
                                 np.asarray([len(seq)], np.int32), len(seq))
    readings.append(float(out.probs[0, 0]))
  record = read_jsonl(os.path.join(tiny_run, "difficulty", "questions.jsonl"))[0]
  assert record["predicted_score"] == pytest.approx(np.mean(readings), abs=1e-5)
  assert record["pass1"] == np.mean([task.is_correct(task.vocab.decode(s), question)
                                     for s in samples])


def test_summary_carries_ratios_flops_differences_and_verdicts(tiny_run):
  summary = json.load(open(os.path.join(tiny_run, "report", "summary.json")))
  assert list(summary["difficulty_without_samples"]) == ["oracle", "predicted", "prompt"]
  pass1 = {r["pass1"] for r in read_jsonl(os.path.join(tiny_run, "difficulty",
                                                        "questions.jsonl"))}
  for kind in ("oracle", "predicted", "prompt"):
    row = summary["difficulty_without_samples"][kind]
    rho = row["rank_correlation"]  # undefined when every question has the same pass@1
    assert (rho is None) == (len(pass1) == 1)
    assert rho is None or rho["ci"][0] <= rho["value"] <= rho["ci"][1]
    lo, hi = row["agreement_with_oracle"]["ci"]
    assert lo <= row["agreement_with_oracle"]["value"] <= hi
    assert set(row["efficiency_charged"]) == {"search", "revisions"}
    findings = summary["findings"][kind]
    assert set(findings) == {"1_beam_search_vs_best_of_n", "2_compute_optimal_search",
                             "3_revisions", "4_flops_matched"}
    for finding in findings.values():
      assert finding["status"] in ("reproduced", "partly", "not reproduced", "not measurable")
    assert "efficiency" in findings["3_revisions"]  # revision files were read
  for family in ("search", "revisions"):
    head = summary["efficiency_ratio"][family]["oracle"]
    assert head["max"] is None or head["max_ci"][0] <= head["max"] <= head["max_ci"][1]
    matched = summary["flops_matched"][family]["oracle"]
    assert set(matched) == {"0.16", "0.79", "22"}
    assert set(matched["22"]["bins"]) == {"1", "2"}
    lo, hi = matched["22"]["all"]["ci"]
    assert lo <= matched["22"]["all"]["value"] <= hi
  for name in summary["figures"]:
    assert os.path.getsize(os.path.join(tiny_run, "report", name)) > 0
  assert os.path.exists(os.path.join(tiny_run, "report", "summary.md"))


def test_redone_stage_gives_the_same_files_and_the_cli_names_the_summary(tiny_run, copy_run,
                                                                        capsys):
  workdir = str(copy_run)
  experiment.run(config(), workdir, only="difficulty", force=True)
  for name in ("questions.jsonl", "manifest.json"):
    assert filecmp.cmp(os.path.join(workdir, "difficulty", name),
                       os.path.join(tiny_run, "difficulty", name), shallow=False), name
  cli.main(["run", DEMO, "--workdir", workdir, *TINY])
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last.endswith(f"findings in {os.path.join(workdir, 'report', 'summary.md')}")
