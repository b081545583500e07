"""`tts run configs/math_hf.py` end to end: a tiny random Llama policy, a Qwen2 "14x" model
and a Llama causal-LM PRM saved with transformers, a BPE tokenizer and a handful of
MATH-format problems, all made here; paths on the command line.

Nothing else runs the pipeline on imported checkpoints: the HF tokenizer through seqio,
the policy stage's import path, the search with a Hugging Face PRM.
"""
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_models  # noqa: E402
from flax import nnx  # noqa: E402

from tts import cli  # noqa: E402
from tts.atomic_files import read_jsonl  # noqa: E402
from tts.data.hf_tokenizer import HFTokenizer  # noqa: E402
from tts.model import LoadedModel  # noqa: E402
from tts.stages.policy import load_policy  # noqa: E402
from tts.train.checkpoints import load_model  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "math_hf.py")
TINY = [
    "--config.task.test_fraction=0.4", "--config.policy_eval.num_questions=5",
    "--config.policy_eval.samples=2", "--config.policy_eval.max_new_tokens=12",
    "--config.policy_eval.batch_size=8", "--config.search.num_questions=4",
    "--config.search.budgets=(1, 4)", "--config.search.max_new_tokens=12",
    "--config.search.max_step_tokens=4", "--config.search.rows_per_batch=16",
    "--config.difficulty.samples=2", "--config.difficulty.num_bins=2",
    "--config.difficulty.max_new_tokens=12", "--config.difficulty.batch_size=8",
    "--config.flops.pretraining_tokens=1000000",
]


def _problems(path):
  rng = np.random.default_rng(0)
  with open(path, "w") as f:
    for i in range(12):
      a, b = rng.integers(1, 50, 2)
      solution = f"We add.\n{a} + {b} = {a + b}\n$\\boxed{{{a + b}}}$"
      f.write(json.dumps({"problem": f"What is {a} + {b}?", "level": f"Level {i % 5 + 1}",
                          "solution": solution}) + "\n")


@pytest.fixture(scope="module")
def math_hf_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("math_hf")
  _problems(root / "math.jsonl")
  texts = [json.loads(line)["solution"] for line in open(root / "math.jsonl")]
  tokenizer = hf_models.save_bpe_tokenizer(str(root / "tokenizer"), texts * 10, vocab_size=300)
  models = {"small": dict(kind="llama"), "large": dict(kind="qwen2", d_model=64, d_ff=128),
            "prm": dict(kind="llama", seed=1)}
  for name, spec in models.items():
    shutil.copytree(tokenizer, root / name)
    hf_models.save_tiny_model(str(root / name), vocab_size=300, **spec)
  workdir = root / "run"
  cli.main(["run", CONFIG, "--workdir", str(workdir), *_paths(root), *TINY])
  return root, workdir


def _paths(root):
  return [f"--config.task.path={root / 'math.jsonl'}",
          f"--config.policy.small.hf_path={root / 'small'}",
          f"--config.policy.large.hf_path={root / 'large'}",
          f"--config.search.verifiers.prm.path={root / 'prm'}"]


def test_runs_every_stage_with_imported_models(math_hf_run):
  root, workdir = math_hf_run
  summary = json.load(open(workdir / "summary.json"))["stages"]
  assert set(summary) == {"data", "policy", "search", "difficulty", "select", "flops", "report"}
  report = json.load(open(workdir / "report" / "summary.json"))
  assert set(report["efficiency_ratio"]) == {"search"}  # no revision files here
  assert os.path.exists(workdir / "report" / "summary.md")
  # The data stage tokenized through seqio with the checkpoint's tokenizer.
  vocab = HFTokenizer(str(root / "small"))
  for record in read_jsonl(str(workdir / "data" / "test.jsonl")):
    assert record["prompt_ids"] == vocab.encode(record["prompt"])
    assert record["target_ids"] == vocab.encode(record["solution"]) + [vocab.eos_id]
  assert summary["policy"]["large"]["params"] > summary["policy"]["small"]["params"]
  manifest = json.load(open(workdir / "search" / "manifest.json"))
  assert manifest["questions"] == 4 and set(manifest["methods"]) == {
      "best_of_n", "beam_sqrt", "beam4", "lookahead_sqrt_k1", "lookahead4_k3", "dvts4"}
  scores = []
  for method, per_budget in manifest["methods"].items():
    for n, entry in per_budget.items():
      for record in read_jsonl(str(workdir / "search" / entry["file"])):
        assert record["verifier"] == "prm" and len(record["candidates"]) <= int(n)
        scores += [s for c in record["candidates"] for s in c["step_scores"]]
  # A PRM head that was not imported (zeros) would read exactly 0.5 everywhere.
  assert scores and len(set(np.round(scores, 6))) > 5 and all(0 < s < 1 for s in scores)


def test_saved_policy_is_the_checkpoint(math_hf_run):
  """policy/small/final holds the imported weights in the config's bfloat16: computed in
  float32, its logits equal transformers' on the checkpoint rounded to bfloat16."""
  import dataclasses

  import jax
  import transformers
  root, workdir = math_hf_run
  policy = load_policy(str(workdir))
  assert {str(x.dtype) for x in jax.tree.leaves(policy.params)} == {"bfloat16"}
  assert (policy.cfg.dtype, policy.cfg.kv_dtype) == ("bfloat16", "bfloat16")
  policy = LoadedModel.create(
      dataclasses.replace(policy.cfg, param_dtype="float32", dtype="float32"), policy.params)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(root / "small")).eval()
  with torch.no_grad():  # the weights rounded, not the rotary buffers
    for p in hf_model.parameters():
      p.copy_(p.to(torch.bfloat16).float())
  prompt = [read_jsonl(str(workdir / "data" / "test.jsonl"))[0]["prompt_ids"]]
  ours = np.asarray(nnx.merge(policy.graphdef, policy.params)(np.asarray(prompt)).logits)
  with torch.no_grad():
    expected = hf_model(torch.tensor(prompt)).logits.numpy()
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_export_and_import_commands_round_trip_exactly(math_hf_run, tmp_path):
  """tts export (policy/small/final, tokenizer from the config) then tts import: the same
  parameters bit for bit; the PRM import through the CLI builds the good-minus-bad head."""
  import jax
  root, workdir = math_hf_run
  cli.main(["export", CONFIG, "--workdir", str(workdir), "--model", "policy/small/final",
            "--out", str(tmp_path / "hf"), *_paths(root)])
  assert HFTokenizer(str(tmp_path / "hf")).encode("What is 3 + 4?") == HFTokenizer(
      str(root / "small")).encode("What is 3 + 4?")
  cli.main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")])
  before, after = load_policy(str(workdir)), load_model(str(tmp_path / "ours"))
  assert after.cfg == before.cfg
  for (path, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(before.params)[0],
                               jax.tree_util.tree_flatten_with_path(after.params)[0]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
  # The policy stage kept the checkpoint's tokenizer and config: no task config needed.
  cli.main(["export", "--workdir", str(workdir), "--model", "policy/small/final",
            "--out", str(tmp_path / "hf_no_config")])
  assert (tmp_path / "hf_no_config" / "tokenizer.json").read_bytes() == (
      root / "small" / "tokenizer.json").read_bytes()
  with open(tmp_path / "hf_no_config" / "config.json") as f:
    assert json.load(f)["max_position_embeddings"] == 512  # the checkpoint's own
  cli.main(["import", str(root / "prm"), "--out", str(tmp_path / "prm"), "--good_token=+",
            "--bad_token=-"])
  prm, vocab = load_model(str(tmp_path / "prm")), HFTokenizer(str(root / "prm"))
  (good,), (bad,) = vocab.encode("+"), vocab.encode("-")
  head = np.asarray(prm.params["lm_head"])
  np.testing.assert_array_equal(np.asarray(prm.params["value_w"])[:, 0],
                                head[:, good] - head[:, bad])
