"""Tiny Hugging Face checkpoints built by the tests: random Llama / Qwen2 weights saved with
transformers, and a byte-level BPE tokenizer trained on a few lines (no hub, no downloads)."""
import json
import os

import tokenizers
import torch
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

SPECIALS = ("<pad>", "<eos>", "<unk>")


# Qwen2.5-Instruct's ChatML template, cut to system / user / assistant turns: a default
# system turn when none is given, the assistant's turn opened by add_generation_prompt.
CHATML = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
CHAT_SPECIALS = ("<|im_start|>", "<|im_end|>")
# Qwen2's (and Llama 3's) pre-tokenizer split: a run of line breaks stays one piece, so
# "\n\n" before a word can be one token (GPT-2's splits it into "\n", "\n").
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def save_bpe_tokenizer(directory: str, texts, vocab_size: int = 320,
                       chat_template: str | None = None, qwen2_split: bool = False) -> str:
  """A byte-level BPE trained on `texts` (merges across spaces and newlines stay apart):
  ids 0, 1, 2 are pad, eos, unk. With a `chat_template` (such as CHATML), also its
  CHAT_SPECIALS as special tokens and the template in tokenizer_config.json; qwen2_split:
  Qwen2's pre-tokenizer instead of GPT-2's. Returns the directory."""
  specials = list(SPECIALS) + (list(CHAT_SPECIALS) if chat_template else [])
  tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT), "isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ]) if qwen2_split else pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(list(texts), trainer)
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>",
            "eos_token": "<eos>", "unk_token": "<unk>"}
  if chat_template:
    config["chat_template"] = chat_template
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  return directory


def _randomize(model, seed: int):
  """Weights large enough that a layout mistake moves the logits by far more than the
  tolerance (transformers' default init, std 0.02, makes every logit nearly 0)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * noise)
      elif p.ndim == 1:  # q/k/v biases
        p.copy_(0.3 * noise)
      else:
        p.copy_(noise * p.shape[-1] ** -0.5)


def save_tiny_model(directory: str, kind: str = "llama", vocab_size: int = 320, seed: int = 0,
                    num_layers: int = 2, d_model: int = 32, num_heads: int = 4,
                    num_kv_heads: int = 2, d_ff: int = 64, tie: bool = False,
                    rope_theta: float = 10_000.0, eos_id: int = 1, pad_id: int = 0):
  """A random `kind` ("llama" or "qwen2") causal LM saved as safetensors in `directory`."""
  common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff,
                num_hidden_layers=num_layers, num_attention_heads=num_heads,
                num_key_value_heads=num_kv_heads, rms_norm_eps=1e-6, rope_theta=rope_theta,
                tie_word_embeddings=tie, eos_token_id=eos_id, pad_token_id=pad_id,
                bos_token_id=None, max_position_embeddings=512)
  if kind == "llama":
    config, cls = transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
  elif kind == "qwen2":
    config, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
  else:
    raise ValueError(kind)
  torch.manual_seed(seed)
  model = cls(config).eval()
  _randomize(model, seed)
  model.save_pretrained(directory)
  return model
