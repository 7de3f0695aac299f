"""Text tokenizers behind one interface.

Every tokenizer maps text to a list of ids and back, with the same special ids:
PAD = 0 (so zero-padded arrays need no mask bookkeeping), then BOS, EOS and UNK.
`encode` returns the words only, without BOS/EOS: the input pipeline adds them where a
task needs them (the caption decoder), and leaves them out where it does not (questions,
referring expressions).
"""

from __future__ import annotations

import itertools
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


class SentencePieceTokenizer:
  """A trained SentencePiece model (see `train_sentencepiece`) as a `Tokenizer`.

  The model must reserve the same special ids as `WordTokenizer` (pad 0, bos 1, eos 2,
  unk 3); `train_sentencepiece` trains it so. Text normalisation (e.g. lower-casing) is
  part of the model, so encode needs no preprocessing here. Pickles as the serialized
  model, so Grain workers need no access to `model_path`.
  """
  pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

  def __init__(self, model_path: str):
    self.model_path = str(model_path)
    try:
      with open(self.model_path, "rb") as f:
        proto = f.read()
    except OSError as e:
      raise FileNotFoundError(
          f"Cannot read the SentencePiece model {self.model_path!r} ({e.strerror}). "
          "Train one with `python -m sdict_jax.data.train_tokenizer`.") from None
    self._load(proto)

  def _load(self, proto: bytes) -> None:
    import sentencepiece  # pylint: disable=g-import-not-at-top
    self._proto = proto
    self._sp = sentencepiece.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(proto)
    except RuntimeError as e:
      raise ValueError(f"{self.model_path!r} is not a SentencePiece model: {e}") from None
    found = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id())
    if found != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
      raise ValueError(
          f"SentencePiece model {self.model_path!r} has (pad, bos, eos, unk) ids {found}; "
          f"this codebase needs {(PAD_ID, BOS_ID, EOS_ID, UNK_ID)}. Retrain it with "
          "`python -m sdict_jax.data.train_tokenizer` (which sets them).")

  def __getstate__(self):
    return {"model_path": self.model_path, "proto": self._proto}

  def __setstate__(self, state):
    self.model_path = state["model_path"]
    self._load(state["proto"])

  @property
  def vocab_size(self) -> int:
    return self._sp.GetPieceSize()

  def encode(self, text: str) -> list[int]:
    return self._sp.EncodeAsIds(text)

  def decode(self, ids: Iterable[int]) -> str:
    kept = []
    for i in ids:
      i = int(i)
      if i == self.eos_id:
        break
      if i not in (self.pad_id, self.bos_id):
        kept.append(i)
    return self._sp.DecodeIds(kept)


def train_sentencepiece(texts: Iterable[str], model_prefix: str, vocab_size: int, *,
                        model_type: str = "unigram", lowercase: bool = True,
                        character_coverage: float = 0.9995,
                        max_sentences: int = 2_000_000,
                        hard_vocab_limit: bool = True) -> str:
  """Trains a SentencePiece model on `texts`; returns the `.model` path.

  Args:
    model_prefix: writes `<model_prefix>.model` and `<model_prefix>.vocab`.
    vocab_size: number of ids, the 4 special ids included.
    model_type: "unigram" or "bpe".
    lowercase: fold case in the model's normaliser (`nmt_nfkc_cf`), as the word
      tokenizer does; else NFKC only.
    character_coverage: fraction of characters covered; the rarest map to UNK.
    max_sentences: SentencePiece samples at most this many texts for training.
    hard_vocab_limit: False lets a small corpus give fewer than `vocab_size` ids
      (instead of an error).
  """
  import sentencepiece  # pylint: disable=g-import-not-at-top
  texts = (t for t in texts if t and t.strip())
  first = next(texts, None)
  if first is None:  # SentencePiece would fail with an internal assertion
    raise ValueError("No non-empty text to train the SentencePiece model on.")
  sentencepiece.SentencePieceTrainer.Train(
      sentence_iterator=itertools.chain([first], texts), model_prefix=str(model_prefix),
      vocab_size=int(vocab_size), model_type=model_type,
      character_coverage=character_coverage,
      normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
      pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
      pad_piece=_SPECIAL_TOKENS[PAD_ID], bos_piece=_SPECIAL_TOKENS[BOS_ID],
      eos_piece=_SPECIAL_TOKENS[EOS_ID], unk_piece=_SPECIAL_TOKENS[UNK_ID],
      input_sentence_size=int(max_sentences), shuffle_input_sentence=True,
      hard_vocab_limit=hard_vocab_limit,
      minloglevel=2)  # 2: warnings and errors only
  return f"{model_prefix}.model"
