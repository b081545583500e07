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

Prompts (task.*). An off-the-shelf instruct policy should see the turns it was tuned on:
  prompt_format  "plain" (default): "Problem: {problem}\\nSolution:\\n", what the demo's
                 policies are trained on. "chat": the tokenizer's chat template (its
                 tokenizer_config.json `chat_template` or chat_template.jinja), rendered by
                 transformers' apply_chat_template with add_generation_prompt=True, so the
                 prompt ends where the assistant's answer starts. A tokenizer without one
                 (or task.tokenizer=bytes) is an error naming the field.
  system_prompt  "chat" only: the system turn; "" (default) gives none (a template may then
                 add its own default, as Qwen2.5's does).
  user_template  "chat" only: the user turn, "{problem}" replaced by the problem (default
                 "{problem}"); other braces, such as \\boxed{}, are kept as they are.
  step_delimiter The text that ends a step (default "\\n", a line; search-and-learn uses
                 "\\n\\n", a blank line). The reference solutions' lines are joined with it,
                 and a step ends on every token whose text contains it (tts/data/vocab.py
                 step_end_ids: search, labelling and the revision ORM use that one rule). A
                 tokenizer that splits the delimiter over two tokens between words (GPT-2's
                 pre-tokenizer does for "\\n\\n", SentencePiece byte tokens always do) is
                 refused; Qwen2's and Llama 3's keep a run of line breaks in one token. A
                 sampled "\\n", "\\n" (two tokens where the tokenizer has one) is not a step end:
                 the step goes on to the next such token, eos or search.max_new_tokens. On a bash
                 command line write the delimiter as $'\\n\\n' ('\\n' is a backslash and an n,
                 and is refused).

PRM input (search.verifiers.<name>: path, kind, good_token, bad_token, and param_dtype /
dtype / cache_dtype for an imported checkpoint; other fields are an
error). Supported: the verifier reads the policy's own token stream, prompt (plain or chat,
as formatted above) and steps unchanged, through its own KV cache beside the policy's, and
is read after each step's last token (the one containing step_delimiter): a PRM trained
here (label / prm stages, from the imported policy), one exported with `tts export`, or a
causal LM with the policy's tokenizer read as P(good_token) against P(bad_token) after that
token. Not supported: a step tag inserted after each step and read there (Math-Shepherd's
released PRM, "ки" before each line break), a PRM with its own prompt or chat format (each
step a turn, as RLHFlow's PRMs; a separator token and a classification head, as
Qwen2.5-Math-PRM), or one with another tokenizer: each needs the verifier's text rebuilt
and re-read at every step rather than the policy's tokens appended once, which the search
(tts/search/tree.py), the difficulty stage and the verifier readings do not do.

An off-the-shelf instruct policy (Qwen2.5-Math-1.5B-Instruct style ChatML, steps as
paragraphs) with a PRM in the supported format:

  SYSTEM='Please reason step by step, and put your final answer within \\boxed{}.'
  tts run configs/math_hf.py --workdir runs/qwen_math \\
    --config.task.path=math.jsonl \\
    --config.policy.small.hf_path=/models/Qwen2.5-Math-1.5B-Instruct \\
    --config.policy.large.hf_path=/models/policy-large \\
    --config.task.prompt_format=chat \\
    --config.task.system_prompt="$SYSTEM" \\
    --config.task.step_delimiter=$'\\n\\n' \\
    --config.search.verifiers.prm.path=/models/prm \\
    --config.search.verifiers.prm.good_token=+ --config.search.verifiers.prm.bad_token=- \\
    --config.flops.pretraining_tokens=TOKENS  # the large model's

The policy stops at config.json's eos_token_id (one id; for a chat model it should end the
assistant's turn, <|im_end|> for Qwen2.5's instruct models).
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
  # max_len: training rows only
  c.data = dict(source="seqio", max_len=1024, pack=False, attend_across_examples=False)
  c.models = {}  # architectures come from the checkpoints' config.json
  # Decoding precision of the imported models (ModelConfig.param_dtype and dtype; the KV
  # cache follows dtype unless cache_dtype is set): bfloat16 weights, compute and cache,
  # half of float32's memory (a 7B model's weights: 14 GB, not 28). "" keeps the
  # checkpoint's own dtype; float32 widens. policy.<name>.scan_layers / remat set the layer
  # layout the revision model and the verifiers then train in (README, "A 7B fine-tune").
  bf16 = dict(param_dtype="bfloat16", dtype="bfloat16")
  c.policy = dict(small=dict(hf_path=small_path, **bf16), large=dict(hf_path="", **bf16))
  c.policy_eval = dict(base.policy_eval.to_dict(), num_questions=100, max_new_tokens=512,
                       batch_size=64)
  search = demo.search_section(process_verifier="prm")
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
