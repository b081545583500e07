"""The `search` stage at toy scale: files per method and budget, schema, resume, determinism."""
import dataclasses
import importlib.util
import json
import os

import ml_collections
import pytest
from flax import nnx
from test_experiment import DEMO, _config

from tts import cli, experiment
from tts.model import Transformer
from tts.train.checkpoints import load_model_config, save_params

spec = importlib.util.spec_from_file_location("demo_config", DEMO)
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

BUDGETS = (1, 2, 4)


def _search_config():
  config = _config()
  section = demo.search_section(verifier="verifier")
  section.update(num_questions=5, budgets=BUDGETS, max_new_tokens=24, max_step_tokens=8,
                 rows_per_batch=8)
  section["methods"] = {k: section["methods"][k] for k in ("best_of_n", "beam_sqrt", "dvts4")}
  section["methods"]["dvts2"] = dict(section["methods"].pop("dvts4"), beam_width=2)
  section["methods"]["lookahead2_k1"] = dict(section["methods"]["beam_sqrt"],
                                             kind="lookahead", beam_width=2, lookahead=1)
  config.search = ml_collections.ConfigDict(section)
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("search"))
  experiment.run(_config(), directory)  # data and policy
  cfg = dataclasses.replace(
      load_model_config(os.path.join(directory, "policy", "small", "final")), value_head=True)
  params = nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(3))))
  save_params(os.path.join(directory, "verifier"), params, cfg)
  experiment.run(_search_config(), directory, only="search")
  return directory


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_every_method_and_budget_has_a_file_with_the_documented_record(workdir):
  policy = load_model_config(os.path.join(workdir, "policy", "small", "final")).num_params
  verifier = load_model_config(os.path.join(workdir, "verifier")).num_params
  manifest = json.load(open(os.path.join(workdir, "search", "manifest.json")))
  assert manifest["skipped"] == ["beam_sqrt/n2", "dvts2/n1", "lookahead2_k1/n1"]
  for method, per_budget in manifest["methods"].items():
    for n, summary in per_budget.items():
      records = _read(os.path.join(workdir, "search", summary["file"]))
      assert len(records) == 5 and summary["questions"] == 5
      for r in records:
        assert r["method"] == method and r["n"] == int(n)
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
  lookahead = _read(os.path.join(workdir, "search", "lookahead2_k1", "n4.jsonl"))
  assert all(r["counts"]["generations"] == 8 for r in lookahead)


def test_best_of_n_files_are_prefixes_of_the_largest(workdir):
  big = _read(os.path.join(workdir, "search", "best_of_n", "n4.jsonl"))
  two = _read(os.path.join(workdir, "search", "best_of_n", "n2.jsonl"))
  for b, t in zip(big, two):
    assert [c["text"] for c in t["candidates"]] == [c["text"] for c in b["candidates"][:2]]
    assert t["counts"]["generated_tokens"] == sum(c["num_tokens"] for c in t["candidates"])


def test_a_lost_file_is_redone_identically_and_the_rest_are_kept(workdir):
  search = os.path.join(workdir, "search")
  lost = os.path.join(search, "beam_sqrt", "n4.jsonl")
  kept = os.path.join(search, "dvts2", "n4.jsonl")
  with open(lost) as f:
    before = f.read()
  stamp = os.path.getmtime(kept)
  os.remove(lost)
  os.remove(os.path.join(search, "done.json"))
  experiment.run(_search_config(), workdir, only="search")
  with open(lost) as f:
    assert f.read() == before
  assert os.path.getmtime(kept) == stamp


def test_a_verifier_without_value_head_is_refused(workdir):
  config = _search_config()
  config.search.verifier = "policy/small/final"
  with pytest.raises(ValueError, match="search.verifier.*no value head"):
    experiment.run(config, workdir, only="search", force=True)


def test_stage_commands_are_the_stages():
  assert list(cli.STAGE_COMMANDS) == [s.name for s in experiment.STAGES]
