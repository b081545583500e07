"""Prompts and steps as off-the-shelf instruct models and PRMs expect them: task.prompt_format
"chat" is the tokenizer's own chat template, task.step_delimiter "\\n\\n" ends a step at a
blank line (search-and-learn) in the data, in labelling and in the search's stop tokens."""
import json
import re
import shutil

import ml_collections
import pytest

transformers = pytest.importorskip("transformers")

import hf_models  # noqa: E402
import test_math_hf  # noqa: E402

from tts import cli, config_check, experiment  # noqa: E402
from tts.atomic_files import read_jsonl  # noqa: E402
from tts.data.hf_tokenizer import HFTokenizer  # noqa: E402
from tts.data.tasks import make_task, task_config  # noqa: E402
from tts.data.vocab import NEWLINE, step_end_ids  # noqa: E402
from tts.stages import search  # noqa: E402
from tts.train import labelling  # noqa: E402

MATH_HF = test_math_hf.CONFIG
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
USER = "Solve the problem.\n\n{problem}"


def _solution(a: int, b: int) -> str:
  return f"We add.\n{a} + {b} = {a + b}\n$\\boxed{{{a + b}}}$"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """math.jsonl, and BPE tokenizers trained on its text with line and paragraph breaks:
  `chat` with a ChatML template and Qwen2's pre-tokenizer, `plain` with neither (GPT-2's
  pre-tokenizer, which splits "\\n\\n" before a word into two tokens)."""
  root = tmp_path_factory.mktemp("chat")
  pairs = [(a, 3 * a % 17 + 1) for a in range(1, 13)]
  with open(root / "math.jsonl", "w") as f:
    for a, b in pairs:
      f.write(json.dumps({"problem": f"What is {a} + {b}?", "solution": _solution(a, b),
                          "level": a % 5 + 1}) + "\n")
  texts = [_solution(a, b) + "\n" for a, b in pairs]
  texts += [t.replace("\n", "\n\n") for t in texts] + ["Solve the problem.\n\n"]
  hf_models.save_bpe_tokenizer(str(root / "chat"), texts * 10, vocab_size=300,
                               chat_template=hf_models.CHATML, qwen2_split=True)
  hf_models.save_bpe_tokenizer(str(root / "plain"), texts * 10, vocab_size=300)
  return root


def _task(files, **fields):
  return make_task(task_config("math_jsonl", path=str(files / "math.jsonl"),
                               tokenizer=str(files / "chat"), **fields))


def test_chat_prompt_is_what_apply_chat_template_makes(files):
  task = _task(files, prompt_format="chat", system_prompt=SYSTEM, user_template=USER)
  reference = transformers.AutoTokenizer.from_pretrained(str(files / "chat"))
  examples = task.examples("train") + task.examples("test")
  for ex in examples:
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": USER.replace("{problem}", ex["question"])}]
    assert ex["prompt"] == reference.apply_chat_template(messages, tokenize=False,
                                                         add_generation_prompt=True)
  ex = examples[0]
  assert ex["prompt"] == (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
                          f"Solve the problem.\n\n{ex['question']}<|im_end|>\n"
                          "<|im_start|>assistant\n")
  prompt_ids, _ = task.encode_example(ex)
  im_start = reference.convert_tokens_to_ids("<|im_start|>")
  assert prompt_ids.count(im_start) == 3  # one id per turn marker, as the model was tuned
  # No system prompt: we add no system turn (this template then adds its default one).
  bare = _task(files, prompt_format="chat").examples("test")[0]
  assert bare["prompt"] == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                            f"<|im_start|>user\n{bare['question']}<|im_end|>\n"
                            "<|im_start|>assistant\n")
  # The default format is unchanged.
  assert _task(files).examples("test")[0]["prompt"] == (
      f"Problem: {bare['question']}\nSolution:\n")


def _steps(task, text: str) -> list[str]:
  """The text of each step of `text` + eos, as labelling splits the tokens."""
  tokens = task.vocab.encode(text) + [task.vocab.eos_id]
  ends = labelling.step_ends(tokens, task.step_end_ids, task.vocab.eos_id)
  return [task.vocab.decode(tokens[a + 1:b + 1]) for a, b in zip([-1] + ends, ends)]


def test_a_blank_line_delimiter_ends_steps_at_paragraphs(files):
  lines, paragraphs = _task(files), _task(files, step_delimiter="\n\n")
  solution = paragraphs.examples("test")[0]["solution"]
  assert solution.count("\n\n") == 3 and solution.endswith("\n\n")  # each line a paragraph
  assert _steps(paragraphs, solution) == [s + "\n\n" for s in solution.split("\n\n")[:-1]]
  text = "We add.\n1 + 4 = 5\n\n$\\boxed{5}$"
  assert _steps(paragraphs, text) == ["We add.\n1 + 4 = 5\n\n", "$\\boxed{5}$"]
  assert _steps(lines, text) == ["We add.\n", "1 + 4 = 5\n\n", "$\\boxed{5}$"]
  vocab = paragraphs.vocab
  texts = {i: vocab.decode([i]) for i in range(vocab.vocab_size)}
  assert paragraphs.step_end_ids == {i for i, t in texts.items() if "\n\n" in t}
  assert lines.step_end_ids == step_end_ids(vocab, NEWLINE) == {
      i for i, t in texts.items() if "\n" in t} > paragraphs.step_end_ids


def test_the_search_stops_steps_at_the_tasks_delimiter(files, monkeypatch):
  """The search stage's decoder stops rows on Task.step_end_ids (and eos)."""
  task = _task(files, step_delimiter="\n\n")
  monkeypatch.setattr(search, "named_verifier", lambda *args: None)
  cfg = ml_collections.ConfigDict({"search": dict(
      temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8, max_step_tokens=4,
      verifiers=dict(prm=dict(path="", kind="prm")))})
  decoder = search.make_decoder(cfg, task, "", [{"prompt_ids": [5, 6]}], "prm", None)
  assert set(decoder.step_end_ids) == task.step_end_ids != step_end_ids(task.vocab, NEWLINE)


@pytest.fixture(scope="module")
def chat_run(files):
  """The data, policy and search stages of configs/math_hf.py with an imported tiny policy
  pair and PRM on the ChatML tokenizer, prompts in chat format and steps as paragraphs."""
  models = {"small": dict(kind="llama"), "large": dict(kind="qwen2", d_model=64, d_ff=128),
            "prm": dict(kind="llama", seed=1)}
  for name, spec in models.items():
    shutil.copytree(files / "chat", files / name)
    hf_models.save_tiny_model(str(files / name), vocab_size=300, **spec)
  config = cli.apply_overrides(cli.load_config(MATH_HF), [
      f"--config.task.path={files / 'math.jsonl'}",
      f"--config.policy.small.hf_path={files / 'small'}",
      f"--config.policy.large.hf_path={files / 'large'}",
      f"--config.search.verifiers.prm.path={files / 'prm'}",
      "--config.task.prompt_format=chat", f"--config.task.system_prompt={SYSTEM}",
      "--config.task.step_delimiter=\n\n", *test_math_hf.TINY], MATH_HF)
  for section in ("difficulty", "select", "flops", "report"):
    del config[section]
  experiment.run(config, str(files / "run"))
  return files / "run"


def test_the_pipeline_prompts_in_chat_and_searches_by_paragraph(files, chat_run):
  vocab = HFTokenizer(str(files / "small"))
  reference = transformers.AutoTokenizer.from_pretrained(str(files / "small"))
  for record in read_jsonl(str(chat_run / "data" / "test.jsonl")):
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": record["question"]}]
    assert record["prompt"] == reference.apply_chat_template(messages, tokenize=False,
                                                             add_generation_prompt=True)
    assert record["prompt_ids"] == vocab.encode(record["prompt"])
    assert record["solution"].endswith("\n\n") and "\n\n" in record["solution"][:-2]
  manifest = json.load(open(chat_run / "search" / "manifest.json"))
  steps = []
  for per_budget in manifest["methods"].values():
    for entry in per_budget.values():
      for record in read_jsonl(str(chat_run / "search" / entry["file"])):
        for c in record["candidates"]:
          # Each step but the last ends on a token holding a whole "\n\n" of the text.
          assert len(c["step_scores"]) <= c["text"].count("\n\n") + 1, c
          steps.append(len(c["step_scores"]))
  assert max(steps) > 1  # steps did end inside solutions


def _run(capsys, files, tmp_path, *overrides) -> str:
  """`tts run configs/math_hf.py` with the plain tokenizer, in a new workdir; returns its
  error line."""
  workdir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
  with pytest.raises(SystemExit):
    cli.main(["run", MATH_HF, "--workdir", str(workdir),
              f"--config.task.path={files / 'math.jsonl'}",
              f"--config.policy.small.hf_path={files / 'plain'}", *overrides])
  err = capsys.readouterr().err.splitlines()[-1]
  assert err.startswith("tts: error: ")
  return err


def test_a_tokenizer_without_a_chat_template_is_named(files, tmp_path, capsys):
  err = _run(capsys, files, tmp_path, "--config.task.prompt_format=chat")
  assert "task.prompt_format='chat'" in err and "has no chat template" in err
  assert str(files / "plain") in err
  err = _run(capsys, files, tmp_path, "--config.task.prompt_format=chat",
             "--config.task.tokenizer=bytes")
  assert "task.tokenizer='bytes' has not; set task.tokenizer" in err


def test_a_delimiter_the_tokenizer_splits_is_named(files, tmp_path, capsys):
  """Bytes, and GPT-2's pre-tokenizer before a word, put "\\n\\n" in two tokens: no step
  could end there."""
  err = _run(capsys, files, tmp_path, "--config.task.step_delimiter=\n\n")
  assert (f"task.step_delimiter='\\n\\n': task.tokenizer='{files / 'plain'}' splits it "
          "over several tokens in 'We add\\n\\nThen'") in err
  err = _run(capsys, files, tmp_path, "--config.task.step_delimiter=\n\n",
             "--config.task.tokenizer=bytes")
  assert "task.step_delimiter='\\n\\n': task.tokenizer='bytes' splits it" in err
  err = _run(capsys, files, tmp_path, "--config.task.step_delimiter=\\n\\n")  # bash: '\n\n'
  assert "task.step_delimiter='\\\\n\\\\n'" in err and "$'\\n\\n'" in err


@pytest.mark.parametrize("fields, needle", [
    (dict(prompt_format="chatml"), "task.prompt_format='chatml' is unknown"),
    (dict(system_prompt="Be brief."), "task.system_prompt is set but task.prompt_format="),
    (dict(prompt_format="chat", user_template="Solve it."), "task.user_template='Solve it.' "
     "has no {problem}"),
    (dict(step_delimiter=""), "task.step_delimiter='' must be the text that ends a step"),
])
def test_bad_prompt_fields_are_named(files, fields, needle):
  with pytest.raises(ValueError, match=re.escape(needle)):
    _task(files, **fields)


@pytest.mark.parametrize("field, value, needle", [
    ("step_tag", "ки", "unknown config field search.verifiers.prm.step_tag; allowed: path, "
     "kind, good_token, bad_token"),
    ("kind", "rm",
     "config search.verifiers.prm: kind='rm'; use one of ('prm', 'orm', 'likelihood')"),
])
def test_verifier_fields_are_checked_before_any_stage(field, value, needle):
  """A PRM input format that is not supported (configs/math_hf.py) is named, not ignored."""
  config = cli.load_config(MATH_HF)
  config.search.verifiers.prm[field] = value
  with pytest.raises(ValueError, match=re.escape(needle)):
    config_check.check_config(config)
