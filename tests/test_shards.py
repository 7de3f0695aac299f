"""Pre-training shards: conversion from webdataset tars and CSV/JSONL folders with the
DataComp-style filters and their report, reading back, damaged records, the pipeline."""

import io
import json
import os
import tarfile

from array_record.python import array_record_module
import ml_collections
import numpy as np
import pytest
from PIL import Image

from sdict_jax.data import pipeline
from sdict_jax.data import shards
from sdict_jax.data import sources
from sdict_jax.data import tokenizer

FILTERS = shards.Filters(min_image_side=16, max_aspect_ratio=3.0, min_caption_words=2,
                         max_caption_words=8)


def _image(size=(40, 30), color=(0, 120, 240), fmt="JPEG"):
  buffer = io.BytesIO()
  Image.new("RGB", size, color).save(buffer, format=fmt)
  return buffer.getvalue()


def _write_tar(path, members):
  with tarfile.open(path, "w") as archive:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))


# (members of one pair, expected fate); img2dataset names pairs 000000000.*, ...
TAR_PAIRS = [
    ([("jpg", _image()), ("txt", b"a blue sky over the sea"), ("json", b"{}")], "kept"),
    ([("png", _image(fmt="PNG")), ("json", b'{"caption": "a png with json caption"}')],
     "kept"),
    ([("jpg", _image((10, 40))), ("txt", b"tall thin image here")], "image_too_small"),
    ([("jpg", _image()[:60]), ("txt", b"a truncated jpeg file")], "undecodable_image"),
    ([("jpg", _image()), ("txt", b"caf\xe9 au lait")], "non_utf8_caption"),
    ([("jpg", _image()), ("txt", b"short")], "caption_too_short"),
    ([("jpg", _image()), ("txt", b"   ")], "empty_caption"),
    ([("jpg", _image())], "missing_caption"),
    ([("txt", b"a caption without image")], "missing_image"),
    ([("jpg", _image((100, 30))), ("txt", b"a very wide panorama")], "extreme_aspect_ratio"),
    ([("jpg", _image()), ("txt", b"one two three four five six seven eight nine")],
     "caption_too_long"),
    ([("jpg", _image(color=(250, 250, 0))), ("txt", b"  a   yellow\nimage  ")], "kept"),
]


@pytest.fixture
def tar_path(tmp_path):
  members = [(f"{i:09d}.{extension}", data)
             for i, (pair, _) in enumerate(TAR_PAIRS) for extension, data in pair]
  path = str(tmp_path / "00000.tar")
  _write_tar(path, members)
  return path


def _expected_drops():
  drops = dict.fromkeys(shards.REASONS, 0)
  for _, fate in TAR_PAIRS:
    if fate != "kept":
      drops[fate] += 1
  return drops


def test_tar_conversion_filters_counts_and_reads_back(tar_path, tmp_path):
  out = str(tmp_path / "out")
  report = shards.convert(out, num_shards=2, tars=[tar_path], filters=FILTERS)
  assert report["seen"] == len(TAR_PAIRS) and report["written"] == 3
  assert report["dropped"] == _expected_drops()
  assert [s["records"] for s in report["shards"]] == [2, 1]
  with open(os.path.join(out, "data-report.json")) as f:
    assert json.load(f) == report

  source = shards.ShardSource(os.path.join(out, "*.array_record"))
  assert len(source) == 3
  # Round robin: shard 0 holds kept records 0 and 2, shard 1 record 1.
  captions = [source[i]["captions"] for i in range(3)]
  assert captions == [["a blue sky over the sea"], ["a yellow image"],
                      ["a png with json caption"]]
  example = source[1]
  assert example["image"].shape == (30, 40, 3) and example["image"].dtype == np.uint8
  assert example["image"][15, 20, 2] < 60  # yellow: little blue
  assert example["id"] == 1 and example["questions"] == [] and example["refexps"] == []
  assert sorted(source.texts()) == sorted(c[0] for c in captions)


def test_truncated_tar_keeps_the_pairs_before_the_damage(tar_path, tmp_path):
  data = open(tar_path, "rb").read().rstrip(b"\0")  # drop the end-of-archive padding
  cut = str(tmp_path / "00001.tar")
  with open(cut, "wb") as f:
    f.write(data[:len(data) // 2])
  report = shards.convert(str(tmp_path / "out"), num_shards=1, tars=[cut],
                          filters=FILTERS)
  assert report["input_problems"]["unreadable_tar"] == 1
  assert 0 < report["seen"] < len(TAR_PAIRS) and report["written"] >= 1


def test_table_conversion_from_csv_and_jsonl_via_cli(tmp_path, capsys):
  folder = tmp_path / "images"
  folder.mkdir()
  (folder / "a.jpg").write_bytes(_image())
  (folder / "b.png").write_bytes(_image((50, 40), fmt="PNG"))
  (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  (tmp_path / "captions.csv").write_bytes(
      b"file,caption\n"
      b"a.jpg,a photo of a blue thing\n"
      b"b.png,\"a png, with a comma\"\n"
      b"missing.jpg,a file that is not there\n"
      b"broken.jpg,corrupt bytes in a jpg\n"
      b"a.jpg,na\xefve caption bytes\n")
  (tmp_path / "more.jsonl").write_text(
      '{"image": "a.jpg", "text": "the same photo again"}\n'
      'this line is not json\n'
      '{"image": "b.png", "text": "png from jsonl"}\n')
  out = str(tmp_path / "out")
  base = ["convert", "--output_dir", out, "--num_shards", "1", "--images_dir", str(folder),
          "--min_image_side", "16", "--min_caption_words", "2"]
  shards.main(base + ["--table", str(tmp_path / "captions.csv"), "--prefix", "csv"])
  printed = json.loads(capsys.readouterr().out)
  assert printed["written"] == 2 and printed["seen"] == 5
  assert printed["dropped"]["missing_image"] == 1
  assert printed["dropped"]["undecodable_image"] == 1
  assert printed["dropped"]["non_utf8_caption"] == 1
  shards.main(base + ["--table", str(tmp_path / "more.jsonl"), "--caption_key", "text",
                      "--prefix", "jsonl"])
  printed = json.loads(capsys.readouterr().out)
  assert printed["written"] == 2 and printed["input_problems"]["malformed_row"] == 1
  assert os.path.exists(os.path.join(out, "jsonl-report.json"))

  source = shards.ShardSource(out)  # a folder: every shard in it, sorted by name
  assert [source[i]["captions"][0] for i in range(len(source))] == [
      "a photo of a blue thing", "a png, with a comma", "the same photo again",
      "png from jsonl"]


def test_damaged_records_become_empty_counted_examples(tmp_path):
  path = str(tmp_path / "damaged.array_record")
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  writer.write(shards.encode_record(_image(), "a good record", "k0"))
  writer.write(b"\xc1 not msgpack")
  writer.write(shards.encode_record(_image()[:50], "a truncated image", "k2"))
  # Same length as "cafX", so the msgpack string header stays right; 0xE9 is invalid.
  writer.write(shards.encode_record(_image(), "cafX", "k3").replace(b"cafX", b"caf\xe9"))
  writer.close()
  source = shards.ShardSource(path)
  assert source[0]["captions"] == ["a good record"]
  for index in (1, 2):
    empty = source[index]
    assert empty["captions"] == [] and not empty["image"].any() and empty["id"] == index
  assert source[3]["captions"] == ["caf\ufffd"]
  assert dict(source.bad_records.counts) == {
      "malformed_record": 1, "undecodable_image": 1, "non_utf8_caption": 1}


def test_missing_shards_name_the_config_field(tmp_path):
  data = ml_collections.ConfigDict(dict(name="shards", train_shards="", tokenizer=""))
  with pytest.raises(ValueError, match="config.data.train_shards is empty"):
    sources.load_source(data, "train")
  data.train_shards = str(tmp_path / "nothing-*.array_record")
  with pytest.raises(FileNotFoundError, match="config.data.train_shards"):
    sources.load_source(data, "train")


def test_pipeline_batch_from_registered_source(tar_path, tmp_path):
  out = str(tmp_path / "out")
  shards.convert(out, num_shards=2, tars=[tar_path], filters=FILTERS)
  model = tokenizer.train_sentencepiece(["a blue sky over the sea", "a yellow image"] * 20,
                                        str(tmp_path / "spm"), 64, hard_vocab_limit=False)
  data = ml_collections.ConfigDict(dict(name="shards", train_shards=f"{out}/*.array_record",
                                        tokenizer=model))
  bundle = sources.load(data, "train")
  batch = next(iter(pipeline.make_dataset(
      bundle.source, tokenizer=bundle.tokenizer, answer_vocab=bundle.answer_vocab,
      image_size=32, batch_size=3, max_text_len=8, max_caption_len=12, seed=0, train=True,
      read_threads=1)))
  assert batch["image"].shape == (3, 32, 32, 3) and batch["caption_out"].shape == (3, 12)
  np.testing.assert_array_equal(batch["has_caption"], 1.0)
  np.testing.assert_array_equal(batch["has_vqa"], 0.0)
  np.testing.assert_array_equal(batch["has_box"], 0.0)
  np.testing.assert_array_equal(np.sort(batch["example_id"]), [0, 1, 2])
