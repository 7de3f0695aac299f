"""SentencePiece tokenizer: special ids shared with the word tokenizer, encode/decode
round trip, pickling, bad models, the training CLI and its text readers."""

import json
import os
import pickle
import subprocess
import sys

import ml_collections
import pytest
import sentencepiece

from sdict_jax.data import shapes
from sdict_jax.data import sources
from sdict_jax.data import tokenizer
from sdict_jax.data import train_tokenizer

CORPUS = ["A man riding a wave on top of a surfboard.",
          "Two dogs play with a red frisbee in the park.",
          "A kitchen with a stove, a sink and white cabinets.",
          "A plate of food with broccoli and rice.",
          "A group of people standing around a table."] * 20


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp("spm") / "captions")
  return tokenizer.train_sentencepiece(CORPUS, prefix, 96, hard_vocab_limit=False)


def test_special_ids_match_the_word_tokenizer(model_path):
  tok = tokenizer.SentencePieceTokenizer(model_path)
  word = tokenizer.shapes_tokenizer()
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (
      word.pad_id, word.bos_id, word.eos_id, word.unk_id) == (0, 1, 2, 3)
  processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
  assert [processor.IdToPiece(i) for i in range(4)] == ["<pad>", "<bos>", "<eos>", "<unk>"]
  assert 4 < tok.vocab_size <= 96


def test_encode_decode_round_trip_without_bos_eos(model_path):
  tok = tokenizer.SentencePieceTokenizer(model_path)
  text = "Two dogs play in the kitchen."
  ids = tok.encode(text)
  assert ids and all(4 <= i < tok.vocab_size for i in ids)  # no specials in the words
  assert tok.decode(ids) == text.lower()  # the model folds case
  assert tok.decode([tok.bos_id] + ids + [tok.eos_id] + ids + [0, 0]) == text.lower()
  assert tok.decode([tok.bos_id, 0]) == ""
  assert tok.unk_id in tok.encode("Ω")  # a character never seen in training


def test_pickles_without_the_model_file(model_path, tmp_path):
  copy = tmp_path / "copy.model"
  copy.write_bytes(open(model_path, "rb").read())
  tok = tokenizer.SentencePieceTokenizer(str(copy))
  data = pickle.dumps(tok)
  os.remove(copy)  # a Grain worker may not see the path
  restored = pickle.loads(data)
  assert restored.encode("a dog") == tok.encode("a dog")
  assert restored.vocab_size == tok.vocab_size


def test_models_with_other_special_ids_or_paths_are_rejected(tmp_path):
  prefix = str(tmp_path / "default_ids")  # SentencePiece's defaults: unk 0, bos 1, eos 2
  sentencepiece.SentencePieceTrainer.Train(
      sentence_iterator=iter(CORPUS), model_prefix=prefix, vocab_size=40,
      hard_vocab_limit=False, minloglevel=2)
  with pytest.raises(ValueError, match="train_tokenizer"):
    tokenizer.SentencePieceTokenizer(prefix + ".model")
  with pytest.raises(FileNotFoundError, match="train_tokenizer"):
    tokenizer.SentencePieceTokenizer(str(tmp_path / "absent.model"))
  (tmp_path / "junk.model").write_bytes(b"not a model")
  with pytest.raises(ValueError, match="not a SentencePiece model"):
    tokenizer.SentencePieceTokenizer(str(tmp_path / "junk.model"))


def test_sources_name_the_tokenizer_field(tmp_path):
  data = ml_collections.ConfigDict(dict(name="shards", train_shards="x", tokenizer=""))
  with pytest.raises(ValueError, match="config.data.tokenizer is empty"):
    sources.load(data, "train")
  data.tokenizer = str(tmp_path / "absent.model")
  with pytest.raises(FileNotFoundError, match="config.data.tokenizer="):
    sources.load(data, "train")


def test_text_readers(tmp_path):
  (tmp_path / "t.txt").write_text("first line\nsecond line\n")
  (tmp_path / "t.jsonl").write_text('{"caption": "one"}\n\n{"caption": "two", "x": 1}\n')
  (tmp_path / "t.csv").write_text('file,caption\na.jpg,"three, four"\n')
  assert list(train_tokenizer.file_texts(str(tmp_path / "t.txt"))) == [
      "first line", "second line"]
  assert list(train_tokenizer.file_texts(str(tmp_path / "t.jsonl"))) == ["one", "two"]
  assert list(train_tokenizer.file_texts(str(tmp_path / "t.csv"))) == ["three, four"]
  with pytest.raises(ValueError, match="--text_key"):
    list(train_tokenizer.file_texts(str(tmp_path / "t.csv"), text_key="text"))
  source = shapes.ShapesSource("train", num_examples=2, image_size=32)
  texts = list(train_tokenizer.source_texts(source))
  raw = source[0]
  assert texts[:len(raw["captions"])] == raw["captions"]
  assert raw["questions"][0] in texts and raw["refexps"][0] in texts


def test_cli_trains_a_model_from_jsonl(tmp_path):
  corpus = tmp_path / "captions.jsonl"
  corpus.write_text("".join(json.dumps({"text": c}) + "\n" for c in CORPUS))
  prefix = tmp_path / "out" / "spm"
  result = subprocess.run(
      [sys.executable, "-m", "sdict_jax.data.train_tokenizer", f"--input={corpus}",
       "--text_key=text", f"--output={prefix}", "--vocab_size=64",
       "--nohard_vocab_limit"],
      capture_output=True, text=True, timeout=60,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr
  assert f"--config.data.tokenizer={prefix}.model" in result.stdout
  tok = tokenizer.SentencePieceTokenizer(f"{prefix}.model")
  assert tok.decode(tok.encode("A red frisbee")) == "a red frisbee"


def test_imports_next_to_train_without_flag_clashes():
  # Both are importable in one process (pytest workers, notebooks): the CLI's
  # --config is defined only when it runs as a program.
  from sdict_jax import train  # pylint: disable=g-import-not-at-top,unused-import
  import importlib  # pylint: disable=g-import-not-at-top
  importlib.reload(train_tokenizer)
