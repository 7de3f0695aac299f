"""Text tokenizers behind one interface.

Every tokenizer maps text to a list of ids and back, with the same special ids:
PAD = 0 (so zero-padded arrays need no mask bookkeeping), then BOS, EOS and UNK.
`encode` returns the words only, without BOS/EOS: the input pipeline adds them where a
task needs them (the caption decoder), and leaves them out where it does not (questions,
referring expressions).
"""

from __future__ import annotations

import re
from typing import Iterable, Protocol

from sdict_jax.data import shapes

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
# Lower-case words and numbers; punctuation ("?", ",", ";") is dropped, in encode as in
# the vocabulary, because it carries nothing the word order does not.
_WORD = re.compile(r"[a-z0-9]+")


class Tokenizer(Protocol):
  """What the input pipeline and the decoders need from a tokenizer."""
  pad_id: int
  bos_id: int
  eos_id: int
  unk_id: int

  @property
  def vocab_size(self) -> int:
    """Number of ids, special ids included; every id is in [0, vocab_size)."""

  def encode(self, text: str) -> list[int]:
    """Ids of the text's tokens, without BOS/EOS."""

  def decode(self, ids: Iterable[int]) -> str:
    """Text of the ids up to the first EOS; PAD and BOS are skipped."""


def split_words(text: str) -> list[str]:
  """The word tokens of `text`: lower-cased, split on whitespace and punctuation."""
  return _WORD.findall(text.lower())


class WordTokenizer:
  """Closed-vocabulary word tokenizer; words outside the vocabulary map to UNK."""
  pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

  def __init__(self, words: Iterable[str]):
    self.words = list(_SPECIAL_TOKENS)
    for word in words:
      word = word.lower()
      if split_words(word) != [word]:
        raise ValueError(f"Vocabulary entry {word!r} is not a single word token "
                         f"(expected letters and digits only).")
      if word not in self.words:
        self.words.append(word)
    self._ids = {w: i for i, w in enumerate(self.words)}

  @property
  def vocab_size(self) -> int:
    return len(self.words)

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(w, self.unk_id) for w in split_words(text)]

  def decode(self, ids: Iterable[int]) -> str:
    words = []
    for i in ids:
      i = int(i)
      if i == self.eos_id:
        break
      if i not in (self.pad_id, self.bos_id):
        words.append(self.words[i])
    return " ".join(words)


def shapes_tokenizer() -> WordTokenizer:
  """The tokenizer of the shapes dataset: its whole vocabulary, so no UNK ever."""
  return WordTokenizer(shapes.vocabulary())


# SentencePiece tokenizers (for COCO / web text) implement the same `Tokenizer` interface
# and belong here, below this line.
