r"""Trains the SentencePiece tokenizer that config.data.tokenizer points at.

From text files (.txt: one text per line; .jsonl / .csv: the `--text_key` field):

  python -m sdict_jax.data.train_tokenizer --input=captions.jsonl --text_key=caption \
      --output=/data/spm/coco --vocab_size=16000

or from a registered data source, configured as for training (its captions, questions
and referring expressions):

  python -m sdict_jax.data.train_tokenizer --config=configs/coco_caption.py \
      --config.data.data_dir=/data/tfds --output=/data/spm/coco --vocab_size=16000

Writes `<output>.model` (set `--config.data.tokenizer=<output>.model`) and
`<output>.vocab`. The model reserves pad 0, bos 1, eos 2, unk 3, as every tokenizer here.
Sources with a `texts()` method (VQAv2, shards) are read without decoding images; the
others (COCO via TFDS) decode every image, so cap them with `--max_texts`.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from typing import Iterable, Iterator

from absl import app
from absl import flags
from ml_collections import config_flags

from sdict_jax.data import tokenizer as tokenizer_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose data source to read.")
_INPUT = flags.DEFINE_list("input", [], "Text files: .txt, .jsonl or .csv.")
_TEXT_KEY = flags.DEFINE_string("text_key", "caption", "Field of .jsonl / .csv inputs.")
_SPLIT = flags.DEFINE_string("split", "train", "Source split (with --config).")
_OUTPUT = flags.DEFINE_string("output", None, "Model path prefix (writes .model, .vocab).")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 16000, "Ids, the 4 special ids included.")
_MODEL_TYPE = flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "Algorithm.")
_LOWERCASE = flags.DEFINE_bool("lowercase", True, "Fold case in the model's normaliser.")
_MAX_TEXTS = flags.DEFINE_integer("max_texts", 2_000_000, "Read at most this many texts.")
_HARD_VOCAB_LIMIT = flags.DEFINE_bool(
    "hard_vocab_limit", True, "False: a small corpus may give fewer ids than --vocab_size.")


def file_texts(path: str, text_key: str = "caption") -> Iterator[str]:
  """Texts of a .txt (one per line), .jsonl or .csv file (field `text_key`)."""
  with open(path, newline="", encoding="utf-8", errors="replace") as f:
    if path.endswith(".jsonl"):
      for line in f:
        if line.strip():
          value = json.loads(line).get(text_key)
          if isinstance(value, str):
            yield value
    elif path.endswith(".csv"):
      for row in csv.DictReader(f):
        if text_key not in row:
          raise ValueError(f"{path} has no column {text_key!r}; set --text_key to one of "
                           f"{sorted(row)}.")
        yield row[text_key]
    else:
      yield from (line.rstrip("\n") for line in f)


def source_texts(source) -> Iterator[str]:
  """The texts of a source: its `texts()` if it has one, else every caption, question and
  referring expression of every raw example."""
  if hasattr(source, "texts"):
    yield from source.texts()
    return
  for i in range(len(source)):
    raw = source[i]
    for field in ("captions", "questions", "refexps"):
      yield from raw.get(field, [])


def train(texts: Iterable[str], output: str, *, vocab_size: int, max_texts: int,
          model_type: str = "unigram", lowercase: bool = True,
          hard_vocab_limit: bool = True) -> str:
  """Trains on the first `max_texts` texts; returns the .model path."""
  if os.path.dirname(output):
    os.makedirs(os.path.dirname(output), exist_ok=True)
  return tokenizer_lib.train_sentencepiece(
      itertools.islice(texts, max_texts), output, vocab_size, model_type=model_type,
      lowercase=lowercase, max_sentences=max_texts, hard_vocab_limit=hard_vocab_limit)


def main(argv) -> None:
  del argv
  if not _OUTPUT.value:
    raise app.UsageError("--output (the model path prefix) is required.")
  if bool(_INPUT.value) == (_CONFIG.value is not None):
    raise app.UsageError("Give exactly one of --input (text files) or --config (a source).")
  if _INPUT.value:
    texts = itertools.chain.from_iterable(file_texts(p, _TEXT_KEY.value)
                                          for p in _INPUT.value)
  else:
    from sdict_jax.data import sources  # pylint: disable=g-import-not-at-top
    texts = source_texts(sources.load_source(_CONFIG.value.data, _SPLIT.value))
  path = train(texts, _OUTPUT.value, vocab_size=_VOCAB_SIZE.value,
               max_texts=_MAX_TEXTS.value, model_type=_MODEL_TYPE.value,
               lowercase=_LOWERCASE.value, hard_vocab_limit=_HARD_VOCAB_LIMIT.value)
  print(f"Wrote {path}; set --config.data.tokenizer={path}")


if __name__ == "__main__":
  app.run(main)
