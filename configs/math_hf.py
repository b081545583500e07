"""The method on MATH-format problems with imported Hugging Face models (local files only).

  tts run configs/math_hf.py --workdir runs/math \\
    --config.task.path=math.jsonl \\
    --config.policy.small.hf_path=/models/policy-small \\
    --config.policy.large.hf_path=/models/policy-large \\
    --config.search.verifiers.prm.path=/models/prm \\
    --config.flops.pretraining_tokens=2000000000000

The policy stage imports both checkpoints instead of training them (they share one
tokenizer; task.tokenizer follows policy.small.hf_path). The search scores steps with an
imported causal-LM PRM in the Math-Shepherd convention (tts/interop/hf_import.py): the
probability of `good_token` against `bad_token` as the next token after each step. It must
use the policy's tokenizer. A verifier written by `tts export` is read through its
value_head.safetensors instead (the tokens are then unused). To train verifiers from the
imported policy instead, add the demo's label, verifiers, prm and orm sections and point
search.verifiers at prm/final and orm/final. Difficulty, compute-optimal selection, the
FLOPs-matched comparison and the report follow (report/summary.md); the revision stages are
off (a revision model is trained, not imported: add the demo's revision sections to train
one from the imported policy). Everything else is the demo's (configs/demo.py).
"""
import importlib.util
import os

import ml_collections

from tts.config_schema import all_fields
from tts.data.math_jsonl import MathJsonlConfig


def _demo():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py")
  spec = importlib.util.spec_from_file_location("tts_demo_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config() -> ml_collections.ConfigDict:
  demo = _demo()
  base = demo.get_config()
  c = ml_collections.ConfigDict()
  c.seed = base.seed
  c.mesh = base.mesh
  c.decode_mesh = base.decode_mesh
  c.logical_axis_rules = base.logical_axis_rules
  small_path = ml_collections.FieldReference("", field_type=str)  # given on the command line
  # One JSONL file split by test_fraction, or train_path + test_path.
  c.task = dict(kind="math_jsonl", **all_fields(MathJsonlConfig, tokenizer=small_path))
  c.data = dict(source="seqio", max_len=1024, pack=False)  # max_len: training rows only
  c.models = {}  # architectures come from the checkpoints' config.json
  # Decoding precision of the imported models (ModelConfig.param_dtype and dtype; the KV
  # cache follows dtype unless cache_dtype is set): bfloat16 weights, compute and cache,
  # half of float32's memory (a 7B model's weights: 14 GB, not 28). "" keeps the
  # checkpoint's own dtype; float32 widens.
  bf16 = dict(param_dtype="bfloat16", dtype="bfloat16")
  c.policy = dict(small=dict(hf_path=small_path, **bf16), large=dict(hf_path="", **bf16))
  c.policy_eval = dict(base.policy_eval.to_dict(), num_questions=100, max_new_tokens=512,
                       batch_size=64)
  search = demo.search_section()
  search["verifiers"] = dict(prm=dict(path="", kind="prm", good_token="+", bad_token="-",
                                      **bf16))
  search["methods"].pop("best_of_n_orm")  # no ORM is imported
  search.update(num_questions=100, max_new_tokens=512, max_step_tokens=128, rows_per_batch=256)
  c.search = search
  # Compute-optimal selection over the search results, the FLOPs-matched comparison with the
  # large model (its pretraining tokens are not in any config: give flops.pretraining_tokens)
  # and the report. Difficulty is predicted with the imported PRM (search.verifiers.prm).
  c.difficulty = dict(base.difficulty.to_dict(), max_new_tokens=512, batch_size=64)
  c.select = base.select
  c.flops = base.flops
  c.report = base.report
  return c
