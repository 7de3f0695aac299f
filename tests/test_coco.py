"""COCO captions through TFDS: Karpathy split mapping, raw examples from a mocked
`tfds.data_source`, bad records, the missing-dataset message, and the pipeline."""

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from sdict_jax.data import coco
from sdict_jax.data import pipeline
from sdict_jax.data import sources
from sdict_jax.data import tokenizer


def _jpeg(size=(24, 16)):
  buffer = io.BytesIO()
  Image.new("RGB", size, (200, 10, 10)).save(buffer, format="JPEG")
  return buffer.getvalue()


def test_unprepared_dataset_error_gives_the_prepare_command(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    coco.load_source("train", data_dir=str(tmp_path))
  message = str(error.value)
  assert "not prepared" in message
  assert f"python -m sdict_jax.data.coco --data_dir={tmp_path}" in message
  assert error.value.__cause__ is None and error.value.__suppress_context__


def test_splits_map_to_karpathy_splits(tmp_path):
  requested = []

  def as_data_source(builder, split, **kwargs):
    requested.append(split)
    return [{"image": np.zeros((4, 6, 3), np.uint8), "image/id": 7,
             "captions": {"text": ["a red square"], "id": [1]}}]
  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    for split in ("train", "validation", "test"):
      assert coco.load_source(split, data_dir=str(tmp_path))[0]["id"] == 7
  assert requested == ["train+restval", "val", "test"]
  with pytest.raises(ValueError, match="valid"):
    coco.tfds_split("restval")


def test_mocked_data_source_gives_raw_examples(tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    source = coco.load_source("validation", data_dir=str(tmp_path))
    assert len(source) == 3
    for i in range(3):
      example = source[i]
      assert example["image"].dtype == np.uint8 and example["image"].ndim == 3
      assert example["image"].shape[-1] == 3
      assert example["captions"] and all(isinstance(c, str) and c for c in example["captions"])
      assert isinstance(example["id"], int)
      assert example["questions"] == [] and example["refexps"] == []


class _Records:
  """TFDS-like records; reading index 1 fails as a damaged ArrayRecord chunk would."""

  def __init__(self):
    self.records = [
        {"image": np.full((8, 12, 3), 255, np.uint8), "image/id": 10,
         "captions": {"text": [b"A white wall.", b"caf\xe9 wall", b"  "]}},
        None,
        {"image": _jpeg()[:40], "image/id": 12, "captions": {"text": [b"truncated"]}},
        {"image": _jpeg(), "image/id": 13, "captions": {"text": ["a red image"]}},
    ]

  def __len__(self):
    return len(self.records)

  def __getitem__(self, index):
    if self.records[index] is None:
      raise ValueError("corrupt chunk")
    return self.records[index]


def test_bad_records_become_empty_examples_and_bad_text_is_counted():
  source = coco.CocoCaptionsSource(_Records())
  first = source[0]
  assert first["captions"] == ["A white wall.", "caf\ufffd wall"]  # blank caption dropped
  assert first["id"] == 10
  for index, expected_id in ((1, 1), (2, 12)):
    empty = source[index]
    assert empty["captions"] == [] and empty["id"] == expected_id
    assert empty["image"].dtype == np.uint8 and not empty["image"].any()
  assert source[3]["image"].shape == (16, 24, 3)
  assert dict(source.bad_records.counts) == {
      "non_utf8_caption": 1, "empty_caption": 1, "unreadable_record": 1,
      "undecodable_image": 1}
  with pytest.raises(IndexError):
    source[4]


def test_pipeline_batch_from_registered_source(tmp_path):
  model = tokenizer.train_sentencepiece(["a dog on the grass", "two cats"] * 30,
                                        str(tmp_path / "spm"), 64,
                                        hard_vocab_limit=False)
  data = ml_collections.ConfigDict(dict(name="coco_captions", data_dir=str(tmp_path),
                                        tokenizer=model))
  with tfds.testing.mock_data(num_examples=4):
    bundle = sources.load(data, "train")
    batch = next(iter(pipeline.make_dataset(
        bundle.source, tokenizer=bundle.tokenizer, answer_vocab=bundle.answer_vocab,
        image_size=32, batch_size=2, max_text_len=8, max_caption_len=10, seed=0,
        train=True, read_threads=1)))
  assert bundle.answer_vocab == []
  assert batch["image"].shape == (2, 32, 32, 3)
  assert batch["caption_in"].shape == (2, 10) and batch["answer_scores"].shape == (2, 0)
  np.testing.assert_array_equal(batch["has_caption"], 1.0)
  np.testing.assert_array_equal(batch["has_vqa"], 0.0)
  np.testing.assert_array_equal(batch["has_box"], 0.0)
  np.testing.assert_array_equal(batch["caption_in"][:, 0], bundle.tokenizer.bos_id)
