"""Hugging Face `tokenizers` behind our Tokenizer protocol, and our vocabularies as
tokenizer.json files.

`HFTokenizer` reads a local checkpoint's tokenizer.json (no hub): ids are the checkpoint's
own, so an imported model sees exactly what it was trained on. Like every Tokenizer here it
is pure Python (no TensorFlow); `tts.data.seqio_tasks.SeqioVocabulary` wraps it for seqio.
Prompts and solutions are encoded without special tokens (no BOS): the task code appends
eos itself.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from tts.atomic_files import read_json
from tts.data.vocab import NEWLINE, ByteVocabulary, Tokenizer, WordVocabulary

TOKENIZER_FILE = "tokenizer.json"


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  return read_json(path)


def _token_text(value) -> str | None:
  """tokenizer_config.json writes a special token as a string or as {"content": ...}."""
  return value.get("content") if isinstance(value, dict) else value


class HFTokenizer:
  """A checkpoint directory's tokenizer.json with its special ids.

  eos: config.json `eos_token_id` (the first, if a list), else tokenizer_config.json
  `eos_token`. pad: `pad_token_id` / `pad_token`, else eos (Llama has no pad token).
  """

  def __init__(self, directory: str):
    path = directory if directory.endswith(".json") else os.path.join(directory, TOKENIZER_FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} not found: a Hugging Face tokenizer needs a "
                              f"{TOKENIZER_FILE}; point the tokenizer at a checkpoint directory")
    self.path = os.path.abspath(path)
    self._tok = tokenizers.Tokenizer.from_file(path)
    folder = os.path.dirname(path)
    model_cfg = _read_json(os.path.join(folder, "config.json"))
    tok_cfg = _read_json(os.path.join(folder, "tokenizer_config.json"))

    def special(name: str) -> int | None:
      value = model_cfg.get(f"{name}_token_id")
      if isinstance(value, list):
        value = value[0] if value else None
      if value is None and _token_text(tok_cfg.get(f"{name}_token")) is not None:
        value = self._tok.token_to_id(_token_text(tok_cfg[f"{name}_token"]))
      return value

    eos = special("eos")
    if eos is None:
      raise ValueError(f"{folder}: no end-of-sequence token: set eos_token_id in config.json "
                       "or eos_token in tokenizer_config.json")
    self.eos_id = int(eos)
    pad = special("pad")
    self.pad_id = self.eos_id if pad is None else int(pad)
    self.bos_id = special("bos")
    unk = _token_text(tok_cfg.get("unk_token"))
    self.unk_id = None if unk is None else self._tok.token_to_id(unk)
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    kept = [int(i) for i in ids if int(i) not in (self.pad_id, self.eos_id)]
    return self._tok.decode(kept, skip_special_tokens=False)

  def save(self, directory: str):
    """Copies tokenizer.json and writes tokenizer_config.json with the special tokens."""
    save_tokenizer(self._tok, self, directory)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, HFTokenizer) and self.path == other.path

  def __hash__(self) -> int:
    return hash(self.path)

  def __repr__(self) -> str:
    return f"HFTokenizer({self.path})"


def _word_tokenizer(vocab: WordVocabulary) -> tokenizers.Tokenizer:
  """Whole words split on spaces, each newline its own token; decodes to the same text as
  WordVocabulary.decode (one space between words, none around newlines)."""
  tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab.words)},
                                              unk_token=vocab.words[vocab.unk_id]))
  tok.normalizer = normalizers.Replace(NEWLINE, f" {NEWLINE} ")
  tok.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
  tok.decoder = decoders.Sequence([
      decoders.Replace(tokenizers.Regex("^"), " "), decoders.Fuse(),  # " w1 w2 \n w3"
      decoders.Replace(tokenizers.Regex("^ "), ""),  # "^" matches at every line start
      decoders.Replace(f" {NEWLINE}", NEWLINE)])
  tok.add_special_tokens([vocab.words[i] for i in (vocab.pad_id, vocab.eos_id, vocab.unk_id)])
  return tok


def _byte_tokenizer() -> tokenizers.Tokenizer:
  """UTF-8 bytes at byte + 3, pad/eos/unk at 0/1/2: ByteVocabulary's ids, as a byte-level
  BPE without merges (GPT-2's byte-to-character table names the byte tokens)."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  table = {b: chr(b) for b in printable}  # printable bytes are their own character
  others = [b for b in range(256) if b not in table]  # the rest: chr(256 + n), byte order
  table.update({b: chr(256 + n) for n, b in enumerate(others)})
  vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
  vocab.update({table[b]: b + ByteVocabulary.OFFSET for b in range(256)})
  tok = tokenizers.Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<pad>", "<eos>", "<unk>"])
  return tok


def save_tokenizer(tok: tokenizers.Tokenizer, vocab: Tokenizer, directory: str):
  """tokenizer.json + tokenizer_config.json (PreTrainedTokenizerFast) in `directory`."""
  os.makedirs(directory, exist_ok=True)
  name = lambda i: None if i is None else tok.id_to_token(i)
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": name(vocab.eos_id),
            "pad_token": name(vocab.pad_id), "unk_token": name(vocab.unk_id),
            "bos_token": name(getattr(vocab, "bos_id", None)), "model_max_length": 1 << 20,
            "clean_up_tokenization_spaces": False}
  tok.save(os.path.join(directory, TOKENIZER_FILE))
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2)


def export_tokenizer(vocab: Tokenizer, directory: str):
  """Writes any of our tokenizers as a Hugging Face tokenizer with the same ids."""
  if isinstance(vocab, HFTokenizer):
    vocab.save(directory)
  elif isinstance(vocab, WordVocabulary):
    save_tokenizer(_word_tokenizer(vocab), vocab, directory)
  elif isinstance(vocab, ByteVocabulary):
    save_tokenizer(_byte_tokenizer(), vocab, directory)
  else:
    raise TypeError(f"cannot export a {type(vocab).__name__} as a Hugging Face tokenizer")
