"""The text a policy is prompted with for a problem: our plain format, or the tokenizer's
chat template, so that an off-the-shelf instruct model sees the turns it was tuned on."""
from __future__ import annotations

import os
from typing import Callable

PROMPT_FORMATS = ("plain", "chat")
PROBLEM = "{problem}"  # where the problem goes in task.user_template


def plain_prompt(problem: str) -> str:
  return f"Problem: {problem}\nSolution:\n"


def chat_prompt(tokenizer: str, system_prompt: str, user_template: str) -> Callable[[str], str]:
  """problem -> the chat template of the Hugging Face tokenizer at `tokenizer` (a checkpoint
  directory or its tokenizer.json) applied to a system turn (none when `system_prompt` is
  empty: the template's default, if it has one) and a user turn (`user_template` with
  PROBLEM replaced), with the assistant's turn opened (add_generation_prompt). Rendered by
  transformers, the same code that renders it for the model's own users."""
  from transformers import AutoTokenizer  # the `hf` extra
  directory = tokenizer if os.path.isdir(tokenizer) else os.path.dirname(tokenizer)
  tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
  if not tok.chat_template:
    raise ValueError(
        f"task.prompt_format='chat': the tokenizer in {directory} has no chat template "
        "(tokenizer_config.json 'chat_template' or chat_template.jinja); set "
        "task.prompt_format='plain', or task.tokenizer to a checkpoint that has one")

  def prompt(problem: str) -> str:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_template.replace(PROBLEM, problem)})
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  return prompt
