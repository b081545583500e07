"""Pure-Python tokenizers behind one small interface.

The model, sampler and trainer only need ids for padding and end of sequence, the
vocabulary size and text <-> ids; `step_end_ids` says which tokens end a solution step
(the sampler stops a row there during step-level search). Keeping this pure Python keeps
TensorFlow out of every hot path; `tts.data.seqio_tasks` wraps these for seqio.
"""

from __future__ import annotations

import functools
from typing import Protocol, Sequence

NEWLINE = "\n"


class Tokenizer(Protocol):
  """What the rest of the code may assume about a tokenizer.

  `decode` does not stop at `eos_id`; it drops pad and eos ids wherever they
  are, so callers truncate first if they mean to.
  """

  pad_id: int
  eos_id: int
  unk_id: int | None
  vocab_size: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


class WordVocabulary:
  """A closed word list for the generated task: one token per word.

  Ids: 0 `<pad>`, 1 `<eos>`, 2 `<unk>`, then `words` in order. Text is split
  on single spaces and every newline is its own token, so
  "3 + 5 = 8\\n8 * 2 = 16\\n" -> 3 + 5 = 8 \\n 8 * 2 = 16 \\n. Decoding joins
  words with one space and none around newlines, which makes
  decode(encode(t)) == t for such canonical text.
  """

  SPECIALS = ("<pad>", "<eos>", "<unk>")
  pad_id, eos_id, unk_id = 0, 1, 2

  def __init__(self, words: Sequence[str]):
    for w in words:
      if not w or " " in w or (NEWLINE in w and w != NEWLINE):
        raise ValueError(
          f"word {w!r} cannot be a token: words are non-empty, "
          "without spaces, and a newline only as the word '\\n'"
        )
    self.words: tuple[str, ...] = self.SPECIALS + tuple(words)
    if len(set(self.words)) != len(self.words):
      raise ValueError(
        f"duplicate or reserved words in {list(words)}; "
        f"words must be unique and not one of {self.SPECIALS}"
      )
    self._ids = {w: i for i, w in enumerate(self.words)}
    self.vocab_size = len(self.words)

  def tokens(self, text: str) -> list[str]:
    """The words of `text`: newline-separated lines, each split on spaces."""
    out: list[str] = []
    for i, line in enumerate(text.split(NEWLINE)):
      if i:
        out.append(NEWLINE)
      out.extend(w for w in line.split(" ") if w)
    return out

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(w, self.unk_id) for w in self.tokens(text)]

  def decode(self, ids: Sequence[int]) -> str:
    parts: list[str] = []
    prev = NEWLINE  # no space at the start of the text
    for i in ids:
      i = int(i)
      if i in (self.pad_id, self.eos_id):
        continue
      w = self.words[i] if 0 <= i < self.vocab_size else self.SPECIALS[self.unk_id]
      if prev != NEWLINE and w != NEWLINE:
        parts.append(" ")
      parts.append(w)
      prev = w
    return "".join(parts)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, WordVocabulary) and self.words == other.words

  def __hash__(self) -> int:
    return hash(self.words)

  def __repr__(self) -> str:
    return f"WordVocabulary({len(self.words) - len(self.SPECIALS)} words)"


class ByteVocabulary:
  """UTF-8 bytes, for MATH-format text when no subword tokenizer is given.

  Same ids as seqio's ByteVocabulary: 0 pad, 1 eos, 2 unk, byte b at b + 3.
  Invalid UTF-8 (a sample cut mid-character) is dropped on decode.
  """

  OFFSET = 3
  pad_id, eos_id, unk_id = 0, 1, 2
  vocab_size = 256 + OFFSET

  def encode(self, text: str) -> list[int]:
    return [b + self.OFFSET for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    data = bytes(int(i) - self.OFFSET for i in ids if self.OFFSET <= int(i) < self.vocab_size)
    return data.decode("utf-8", errors="ignore")

  def __eq__(self, other: object) -> bool:
    return isinstance(other, ByteVocabulary)

  def __hash__(self) -> int:
    return hash(ByteVocabulary)

  def __repr__(self) -> str:
    return "ByteVocabulary()"


@functools.cache
def step_end_ids(vocab: Tokenizer, delimiter: str) -> frozenset[int]:
  """Ids of the tokens that end a solution step: those whose own text contains `delimiter`
  (NEWLINE: a step is a line; "\\n\\n", as search-and-learn: a paragraph).

  The sampler can only stop on a token id, so a step ends at a token boundary: the first one
  at or after the delimiter. "Contains" rather than "ends with" because byte-level BPE merges
  the delimiter with what is around it: ".\\n\\n" ends a step, and so does "\\n   " (a line
  break and the next line's indentation), whose step would otherwise run into the next
  line. A delimiter split over two tokens (".\\n" then "\\n", or a sampled "\\n", "\\n"
  where the tokenizer has "\\n\\n") is not a step end: the step goes on to the next token
  that contains the whole delimiter, eos or the length cap. With NEWLINE every tokenizer
  here has such tokens; a multi-character delimiter needs a subword vocabulary that keeps
  it in one token between words (`tasks.make_task` refuses one that does not, bytes too).
  """
  return frozenset(i for i in range(vocab.vocab_size) if delimiter in vocab.decode([i]))
