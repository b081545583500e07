"""select, flops and report stages on hand-made result files (tests/scaling_files.py) whose
best setting per bin, efficiency ratio and FLOPs-matched numbers are known."""
import csv
import json
import math
import os

import pytest
import scaling_files
from scaling_files import LARGE, SMALL

from tts import pipeline
from tts.stages import flops, report, select


def _run(workdir, cfg, *stages):
  ctx = pipeline.Context(config=cfg, workdir=str(workdir))
  return [stage.run(ctx) for stage in stages]


def _json(workdir, *path):
  with open(os.path.join(workdir, *path)) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("scaling")
  scaling_files.write_run(str(workdir))
  _run(workdir, scaling_files.config(), select, flops, report)
  return workdir


def test_selection_finds_the_known_best_setting_per_bin_and_the_ratio(made_run):
  out = _json(made_run, "select", "selection.json")
  search = out["families"]["search"]
  assert search["budgets"] == [1, 2, 4, 8, 16]
  oracle = search["oracle"]
  at4 = {b: v["choices"][2] for b, v in oracle["by_bin"].items()}
  assert at4 == {"1": ["best_of_n/n1"] * 2, "2": ["best_of_n/n2"] * 2,
                 "3": ["best_of_n/n4"] * 2, "4": ["beam4/n4"] * 2, "5": ["beam4/n4"] * 2}
  assert oracle["compute_optimal"]["accuracy"] == [0.2, 0.4, 1.0, 1.0, 1.0]
  assert oracle["baseline"]["accuracy"] == [0.2, 0.4, 0.6, 0.8, 1.0]
  # Every question of a bin fares alike, so every resample keeps the ratio at 4.
  assert oracle["efficiency_ratio"] == {"max": 4.0, "at_budget": 4, "median": 1.0,
                                        "budgets_counted": [1, 2, 4, 8, 16], "lower_bounds": [],
                                        "max_ci": [4.0, 4.0], "median_ci": [1.0, 1.0]}
  assert oracle["compute_optimal"]["mean_flops"][2] == pytest.approx(
      (scaling_files.FLOPS_PER_GENERATION + scaling_files.ATTENTION_PER_GENERATION)
      * (1 + 2 + 4 + 4 + 4) / 5)
  revisions = out["families"]["revisions"]
  assert revisions["baseline"] == [f"chains{n}/n{n}" for n in (1, 2, 4, 8, 16)]
  assert revisions["oracle"]["efficiency_ratio"]["max"] == 4.0
  assert revisions["oracle"]["by_bin"]["5"]["choices"][2] == ["chains2/n4"] * 2
  # Predicted bins are another grouping of the same questions; the lookahead never wins.
  assert search["predicted"]["by_bin"].keys() == oracle["by_bin"].keys()
  settings = _json(made_run, "select", "settings.json")
  look = next(s for s in settings["search"] if s["method"] == "lookahead4_k3")
  assert look["generations"] == 16 and look["accuracy"] == 0.0 and look["lookahead"] == 3


def test_charging_difficulty_estimation_shrinks_the_ratio(tmp_path):
  scaling_files.write_run(str(tmp_path), revisions=False)
  _run(tmp_path, scaling_files.config(charge_difficulty=True), select)
  oracle = _json(tmp_path, "select", "selection.json")["families"]["search"]["oracle"]
  # 1.0 at 4 generations + 4 to estimate difficulty; best-of-N needs 16: ratio 2, not 4.
  assert oracle["efficiency_ratio"]["max"] == 2.0
  assert oracle["efficiency"]["headline"]["max"] == 4.0
  assert "revisions" not in _json(tmp_path, "select", "selection.json")["families"]


def test_flops_matched_rows_follow_the_formula(made_run):
  out = _json(made_run, "flops", "flops.json")
  m = LARGE.num_params / SMALL.num_params
  assert out["params"] == {"small": SMALL.num_params, "large": LARGE.num_params,
                           "ratio": round(m, 3)}
  assert out["pretraining_flops"]["large"] == 6 * LARGE.num_params * 10 * 4 * 32
  # By hand: 4 x 4 layers x 2 heads x head_dim 8 (LARGE keeps SMALL's) FLOPs a pair.
  assert out["attention_flops_per_pair"]["large"] == 256
  f = scaling_files.FLOPS_PER_GENERATION + scaling_files.ATTENTION_PER_GENERATION
  for r in (0.16, 0.79, 22.0):
    row = out["families"]["search"]["oracle"]["matched"][f"{r:g}"]
    assert row["multiplier"] == pytest.approx(m + 3 * (m - 1) / r, abs=1e-3)
    for b in ("1", "3", "5"):
      cell = row["bins"][b]
      t = 20 + int(b)  # large_tokens; the 14x model: 2 N T + 256 T (T + 1) / 2 FLOPs
      large = 2 * LARGE.num_params * t + 256 * t * (t + 1) / 2
      target = large + 6 * (LARGE.num_params - SMALL.num_params) * t / r
      assert cell["target_flops"] == pytest.approx(target, abs=0.1)
      assert cell["flops_ratio"] == pytest.approx(target / large, abs=1e-3)
      right = 1.0 if int(b) in scaling_files.LARGE_RIGHT_BINS else 0.0
      assert cell["large_accuracy"] == {"value": right, "ci": [right, right]}
      small = cell["small_accuracy"]["value"]
      # Past the curve's last point: inside the runs while the costliest setting at the
      # largest budget (16 generations, 16F) reaches the target, a lower bound beyond it.
      past = "at_largest_budget" if target <= 16 * f else "beyond_largest_run"
      assert cell["largest_run_flops"] == pytest.approx(16 * f, abs=0.1)
      if b == "1":  # best-of-1 is right: the curve is 1.0 at F FLOPs, every target beyond it
        assert (small, cell["where"]) == (1.0, past)
      elif target < 4 * f:  # bins 3, 5: wrong at F FLOPs (best-of-1), right at 4F (n = 4)
        assert cell["where"] == "interpolated"
        assert small == pytest.approx(math.log(target / f) / math.log(4), abs=1e-4)
      else:
        assert (small, cell["where"]) == (1.0, past)
      # Every question of a bin fares alike: zero-width intervals around the point.
      assert cell["absolute_difference"]["ci"] == [round(small - right, 4)] * 2
  matched = out["families"]["search"]["oracle"]["matched"]
  assert matched["22"]["bins"]["5"]["where"] == "interpolated"
  hard = matched["0.16"]["bins"]["5"]
  assert hard["relative_difference"] is None
  assert hard["absolute_difference"]["value"] == hard["small_accuracy"]["value"] == 1.0
  assert matched["0.16"]["easier"]["bins"] == ["1", "2", "3"]


def test_report_has_figures_tables_and_the_verdicts(made_run):
  directory = os.path.join(made_run, "report")
  summary = _json(directory, "summary.json")
  for name in summary["figures"]:
    assert os.path.getsize(os.path.join(directory, name)) > 5000, name
    with open(os.path.join(directory, name.replace(".png", ".csv"))) as f:
      assert len(list(csv.DictReader(f))) >= 2, name
  assert set(summary["figures"]) == {
      "search_methods.png", "search_compute_optimal.png", "revisions_methods.png",
      "revisions_compute_optimal.png", "revisions_ratio_by_bin.png", "flops_matched.png",
      "search_flops_tradeoff.png", "revisions_flops_tradeoff.png"}
  findings = summary["findings"]["oracle"]
  assert findings["2_compute_optimal_search"]["status"] == "reproduced"
  # At N = 16 the sequential-leaning splits (P = 1, 2) and the parallel-leaning ones (P = 8,
  # 16) are right on every question: no difference by difficulty, and the interval says so.
  three = findings["3_revisions"]
  assert three["sequential_advantage"]["easiest_minus_hardest"] == {"value": 0.0,
                                                                    "ci": [0.0, 0.0]}
  assert three["efficiency"]["status"] == "reproduced" and three["status"] == "partly"
  # beam4 is right on bins 4-5 only (0.4): behind best-of-N at every budget.
  one = _json(made_run, "select", "selection.json")["families"]["search"]["oracle"][
      "beam_minus_best_of_n"]
  assert (one["budgets"], one["gap"]) == ([4, 8, 16], [-0.2, -0.4, -0.6])
  assert one["small_gap"]["value"] == -0.2 and one["small_gap"]["ci"][0] < -0.2
  assert findings["1_beam_search_vs_best_of_n"]["status"] == (
      "not reproduced" if one["small_gap"]["ci"][1] <= 0 else "not measurable")
  assert summary["efficiency_ratio"]["search"]["oracle"]["max"] == 4.0
  gain = summary["compute_optimal_minus_baseline"]["search"]["oracle"]["4"]  # 1.0 vs 0.6
  assert gain["value"] == 0.4 and 0 < gain["ci"][0] < 0.4 < gain["ci"][1]
  assert set(summary["flops_matched"]["search"]["oracle"]) == {"0.16", "0.79", "22"}
  with open(os.path.join(directory, "summary.md")) as f:
    text = f.read()
  assert "| 2_compute_optimal_search | **reproduced** | **" in text
  assert all(f"![{name}]({name})" in text for name in summary["figures"])


def test_result_files_of_other_questions_are_refused(tmp_path):
  scaling_files.write_run(str(tmp_path), revisions=False, ids_offset=1)
  with pytest.raises(ValueError, match=r"search/beam4/n16.jsonl holds questions"):
    _run(tmp_path, scaling_files.config(), select)


def test_best_of_n_running_further_than_the_other_methods(tmp_path):
  """Best-of-N to N = 256, beam to 16 (the demo's split): best-of-N is right on bins
  <= log2(N)/2 + 1, so only N = 256 reaches compute-optimal's 1.0 at 16 generations (beam4
  on bins 4-5, best-of-16 on 1-3). Within budgets to 16 that ratio was a lower bound; with
  best-of-N at 256 it is measured: 256 / 16."""
  budgets = tuple(2 ** i for i in range(9))
  scaling_files.write_run(str(tmp_path), revisions=False, bon_budgets=budgets,
                          bon_bins=lambda n: math.log2(n) / 2 + 1)
  _run(tmp_path, scaling_files.config(), select, flops, report)
  search = _json(tmp_path, "select", "selection.json")["families"]["search"]
  assert search["budgets"] == list(budgets)
  oracle = search["oracle"]
  assert oracle["compute_optimal"]["accuracy"][4:] == [1.0] * 5
  at16 = oracle["efficiency"]["rows"][4]
  assert (at16["ratio"], at16["lower_bound"], at16["lower_bound_share"]) == (16.0, False, 0.0)
  assert oracle["beam_minus_best_of_n"]["budgets"] == [4, 8, 16]
  assert oracle["by_bin"]["3"]["choices"][8] == ["best_of_n/n16"] * 2  # cheapest right one
  matched = _json(tmp_path, "flops", "flops.json")["families"]["search"]["oracle"]["matched"]
  # Compute-optimal needs no more than 16 generations there, but best-of-256 was run and
  # reaches the target: not a lower bound.
  assert matched["0.16"]["bins"]["3"]["where"] == "at_largest_budget"
  summary = _json(tmp_path, "report", "summary.json")
  assert summary["findings"]["oracle"]["2_compute_optimal_search"]["status"] == "reproduced"


def test_same_files_and_seed_give_the_same_intervals(made_run, tmp_path):
  """The bootstrap is seeded (select.seed): redoing the stages gives identical files."""
  scaling_files.write_run(str(tmp_path))
  _run(tmp_path, scaling_files.config(), select, flops, report)
  for path in (("select", "selection.json"), ("select", "per_question.json"),
               ("flops", "flops.json"), ("report", "summary.json"), ("report", "summary.md")):
    with open(os.path.join(made_run, *path)) as a, open(os.path.join(tmp_path, *path)) as b:
      assert a.read() == b.read(), path
  _run(tmp_path, scaling_files.config(seed=1), select)
  assert _json(tmp_path, "select", "selection.json")["families"]["search"]["predicted"][
      "compute_optimal"]["accuracy_ci"] != _json(made_run, "select", "selection.json")[
      "families"]["search"]["predicted"]["compute_optimal"]["accuracy_ci"]


def test_difficulty_without_samples_table(made_run):
  """Oracle, predicted and prompt bins side by side: agreement with oracle bins, Spearman
  of the bin score with pass@1 (checked against scipy), estimation cost, and the charged
  efficiency headline; every bin kind gets its verdicts."""
  from scipy import stats
  questions = [json.loads(line) for line in open(os.path.join(made_run, "difficulty",
                                                              "questions.jsonl"))]
  summary = _json(made_run, "report", "summary.json")
  table = summary["difficulty_without_samples"]
  assert list(table) == ["oracle", "predicted", "prompt"]
  pass1 = [q["pass1"] for q in questions]
  for kind, score in (("oracle", "pass1"), ("predicted", "predicted_score"),
                      ("prompt", "prompt_score")):
    row = table[kind]
    same = sum(q[f"{kind}_bin"] == q["oracle_bin"] for q in questions) / len(questions)
    assert row["agreement_with_oracle"]["value"] == round(same, 4)
    rho = stats.spearmanr([q[score] for q in questions], pass1).statistic
    assert row["rank_correlation"]["value"] == pytest.approx(rho, abs=1e-4)
    for key in ("agreement_with_oracle", "rank_correlation"):
      lo, hi = row[key]["ci"]
      assert lo <= row[key]["value"] <= hi
    assert set(summary["findings"][kind]) == set(summary["findings"]["oracle"])
    assert set(row["efficiency_charged"]) == {"search", "revisions"}
  assert table["oracle"]["agreement_with_oracle"] == {"value": 1.0, "ci": [1.0, 1.0]}
  assert 0 < table["prompt"]["agreement_with_oracle"]["value"] < 1
  assert table["predicted"]["rank_correlation"]["ci"][0] < table["predicted"][
      "rank_correlation"]["value"] < 1
  assert (table["oracle"]["estimation_generations"], table["oracle"]["estimation_flops"]) == (
      scaling_files.ESTIMATION_GENERATIONS,
      scaling_files.ESTIMATION_FLOPS + scaling_files.ESTIMATION_ATTENTION)
  assert (table["prompt"]["estimation_generations"], table["prompt"]["estimation_flops"]) == (
      0, scaling_files.PROMPT_ESTIMATION_FLOPS)
  # Oracle: 1.0 at 4 generations + 4 to estimate; best-of-N needs 16: charged ratio 2.
  assert table["oracle"]["efficiency_charged"]["search"]["max"] == 2.0
  selection = _json(made_run, "select", "selection.json")
  prompt = selection["families"]["search"]["prompt"]
  assert prompt["efficiency_charged"] == prompt["efficiency"]  # nothing to charge
  assert table["prompt"]["efficiency_charged"]["search"] == prompt["efficiency"]["headline"]
  with open(os.path.join(made_run, "report", "summary.md")) as f:
    text = f.read()
  assert "## Difficulty without samples" in text
  assert "| finding | oracle bins | predicted bins | prompt bins |" in text
  assert "| prompt | prompt_score | 0 | 300 | " in text


def test_charged_estimation_flops_follow_the_bin_kind(tmp_path):
  """With charge_difficulty each bin kind's curve carries its own estimate's FLOPs,
  attention included: K samples for oracle and predicted bins, a prompt prefill for prompt
  bins (and no generations)."""
  scaling_files.write_run(str(tmp_path), revisions=False)
  _run(tmp_path, scaling_files.config(), select, flops)
  free = _json(tmp_path, "flops", "flops.json")["families"]["search"]
  _run(tmp_path, scaling_files.config(charge_difficulty=True), select, flops)
  charged = _json(tmp_path, "flops", "flops.json")["families"]["search"]
  extra = {"oracle": scaling_files.ESTIMATION_FLOPS + scaling_files.ESTIMATION_ATTENTION,
           "predicted": scaling_files.ESTIMATION_FLOPS + scaling_files.ESTIMATION_ATTENTION,
           "prompt": scaling_files.PROMPT_ESTIMATION_FLOPS}
  for kind, cost in extra.items():
    got = charged[kind]["curves"]["all"]["flops"]
    want = free[kind]["curves"]["all"]["flops"]
    assert got == pytest.approx([f + cost for f in want], abs=0.1), kind
  selection = _json(tmp_path, "select", "selection.json")
  assert selection["difficulty_cost_generations"] == {"oracle": 4.0, "predicted": 4.0,
                                                      "prompt": 0.0}
  prompt = selection["families"]["search"]["prompt"]
  assert prompt["efficiency_judged"] == "efficiency_charged"
  assert prompt["efficiency_charged"]["headline"] == prompt["efficiency"]["headline"]


def test_headline_on_prompt_bins(tmp_path):
  """select.bins=prompt drives the headline, the figures and the FLOPs-matched table."""
  scaling_files.write_run(str(tmp_path), revisions=False)
  _run(tmp_path, scaling_files.config(bins="prompt"), select, flops, report)
  summary = _json(tmp_path, "report", "summary.json")
  assert summary["bins"] == "prompt"
  assert summary["findings"]["prompt"]["2_compute_optimal_search"]["status"] in (
      "reproduced", "partly", "not reproduced", "not measurable")
  assert "(prompt bins, cross-validated" in open(
      os.path.join(tmp_path, "report", "summary.md")).read()


def test_difficulty_files_without_prompt_bins_are_refused(tmp_path):
  scaling_files.write_run(str(tmp_path), revisions=False)
  path = os.path.join(tmp_path, "difficulty", "questions.jsonl")
  lines = [json.loads(line) for line in open(path)]
  for q in lines:
    del q["prompt_bin"], q["prompt_estimation"]
  with open(path, "w") as f:
    f.writelines(json.dumps(q) + "\n" for q in lines)
  with pytest.raises(ValueError, match=r"lacks prompt_bin, prompt_estimation.attention_flops"
                                       r" .*redo the difficulty stage"):
    _run(tmp_path, scaling_files.config(), select)


def test_rank_correlation_without_spread_is_null(tmp_path):
  """Every question with the same pass@1: no rank correlation to report (not 0, not NaN)."""
  scaling_files.write_run(str(tmp_path), revisions=False)
  path = os.path.join(tmp_path, "difficulty", "questions.jsonl")
  lines = [{**json.loads(line), "pass1": 0.0} for line in open(path)]
  with open(path, "w") as f:
    f.writelines(json.dumps(q) + "\n" for q in lines)
  _run(tmp_path, scaling_files.config(), select, flops, report)
  table = _json(tmp_path, "report", "summary.json")["difficulty_without_samples"]
  assert [table[k]["rank_correlation"] for k in table] == [None] * 3
  assert "| prompt | prompt_score | 0 | 300 | +0.375 [+0.225, +0.525] | n/a |" in open(
      os.path.join(tmp_path, "report", "summary.md")).read()
