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


def define_flags() -> None:
  """The command-line flags, defined when run as a program only: train.py owns
  --config in any process that imports both (tests, notebooks)."""
  config_flags.DEFINE_config_file("config", None, "Config whose data source to read.")
  flags.DEFINE_list("input", [], "Text files: .txt, .jsonl or .csv.")
  flags.DEFINE_string("text_key", "caption", "Field of .jsonl / .csv inputs.")
  flags.DEFINE_string("split", "train", "Source split (with --config).")
  flags.DEFINE_string("output", None, "Model path prefix (writes .model, .vocab).")
  flags.DEFINE_integer("vocab_size", 16000, "Ids, the 4 special ids included.")
  flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "Algorithm.")
  flags.DEFINE_bool("lowercase", True, "Fold case in the model's normaliser.")
  flags.DEFINE_integer("max_texts", 2_000_000, "Read at most this many texts.")
  flags.DEFINE_bool("hard_vocab_limit", True,
                    "False: a small corpus may give fewer ids than --vocab_size.")


def main(argv) -> None:
  del argv
  args = flags.FLAGS
  if not args.output:
    raise app.UsageError("--output (the model path prefix) is required.")
  if bool(args.input) == (args.config is not None):
    raise app.UsageError("Give exactly one of --input (text files) or --config (a source).")
  if args.input:
    texts = itertools.chain.from_iterable(file_texts(p, args.text_key)
                                          for p in args.input)
  else:
    from sdict_jax.data import sources  # pylint: disable=g-import-not-at-top
    texts = source_texts(sources.load_source(args.config.data, args.split))
  path = train(texts, args.output, vocab_size=args.vocab_size,
               max_texts=args.max_texts, model_type=args.model_type,
               lowercase=args.lowercase, hard_vocab_limit=args.hard_vocab_limit)
  print(f"Wrote {path}; set --config.data.tokenizer={path}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
