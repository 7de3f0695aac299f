"""COCO captions (Karpathy splits) from TFDS, as a random-access source of raw examples.

TFDS's `coco_captions` builder holds COCO 2014 in Karpathy & Li's split (images of
train2014 and val2014 re-divided): `train` (82,783 images), `restval` (30,504), `val`
(5,000) and `test` (5,000), each image with ~5 captions. Our splits, as in the
captioning literature:

  train      -> train+restval   (113,287 images)
  validation -> val
  test       -> test

Reading goes through `tfds.data_source` (ArrayRecord files, random access, what Grain
needs), so the dataset must be prepared once in the `array_record` file format:

  python -m sdict_jax.data.coco --data_dir=/data/tfds

(downloads COCO 2014 and the Karpathy split file, ~20 GB, then writes the dataset under
`/data/tfds/coco_captions/2014/1.1.0`). `tfds build coco_captions --data_dir=/data/tfds
--file_format=array_record` does the same where the `tfds` CLI works (in TFDS 4.9.10 it
fails to start without apache-beam installed). A dataset prepared in the default
`tfrecord` format cannot be read by random access; the error says so.

Raw example: `image` (uint8, as stored), `captions` (every reference caption; empty ones
dropped and counted, invalid UTF-8 replaced and counted), `id` (the COCO image id, so
evaluators can match COCO's caption annotations). A record that cannot be read or
decoded becomes an empty example (see `images.py`).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from sdict_jax.data import images

DATASET = "coco_captions"
# Our split name -> TFDS split expression.
SPLITS = {"train": "train+restval", "validation": "val", "test": "test"}


def tfds_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"Unknown COCO captions split {split!r}; valid: {sorted(SPLITS)}.")
  return SPLITS[split]


def _prepare_command(data_dir: str | None) -> str:
  flag = f" --data_dir={data_dir}" if data_dir else ""
  return f"python -m sdict_jax.data.coco{flag}"


def _missing_dataset_error(data_dir: str | None, cause: Exception) -> Exception:
  """A clear error for a dataset that cannot be opened for random access."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(DATASET, data_dir=data_dir)
  where = f"config.data.data_dir={data_dir!r}" if data_dir else (
      "the default TFDS data dir (config.data.data_dir is empty)")
  if not builder.is_prepared():
    return FileNotFoundError(
        f"COCO captions are not prepared in {where}: no dataset at {builder.data_dir}. "
        f"Prepare them once (downloads ~20 GB) with:\n  {_prepare_command(data_dir)}\n"
        "or set config.data.data_dir to the TFDS data dir that holds them.")
  formats = sorted(str(f.value) for f in builder.info.available_file_formats())
  if "array_record" not in formats:
    return ValueError(
        f"COCO captions in {builder.data_dir} are stored as {formats}; random access "
        "(Grain) needs the array_record format. Prepare them again into another data "
        f"dir:\n  {_prepare_command('NEW_DIR')}\nand set config.data.data_dir=NEW_DIR.")
  return RuntimeError(f"Cannot open COCO captions in {builder.data_dir}: "
                      f"{type(cause).__name__}: {cause}")


def tfds_records(split: str, data_dir: str | None = None):
  """The TFDS random-access data source of one split (decoded TFDS feature dicts)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_name = tfds_split(split)
  try:
    return tfds.data_source(DATASET, split=tfds_name, data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except
    # TFDS reports a missing dataset as a format error deep in its stack; say what
    # is missing and how to get it instead.
    raise _missing_dataset_error(data_dir, e) from None


def _caption_texts(record) -> list:
  captions = record.get("captions", {})
  texts = captions.get("text", []) if isinstance(captions, dict) else captions
  return list(np.asarray(texts, dtype=object).reshape(-1))


class CocoCaptionsSource:
  """Raw examples from TFDS coco_captions records (any random-access sequence of them).

  Args:
    records: `tfds_records(split, data_dir)`, or any sequence of dicts with TFDS's
      `image` (uint8 array or encoded bytes), `image/id` and `captions/text`.
  """

  def __init__(self, records, name: str = DATASET):
    self.records = records
    self.name = name
    self.bad_records = images.BadRecordLog(name)

  def __len__(self) -> int:
    return len(self.records)

  def __repr__(self) -> str:
    return f"CocoCaptionsSource({self.name!r}, {len(self)} images)"

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"Index {index} out of range for {self!r}.")
    try:
      # TFDS decodes the image while reading, so a corrupt image fails here too.
      record = self.records[index]
      image_id = int(record["image/id"])
    except Exception as e:  # pylint: disable=broad-except
      # One unreadable record must not end a run; see images.py for the policy.
      self.bad_records.count("unreadable_record", f"index {index}: {type(e).__name__}: {e}")
      return images.empty_example(index)
    try:
      image = images.decode_image(record["image"])
    except images.ImageDecodeError as e:
      self.bad_records.count("undecodable_image", f"image id {image_id}: {e}")
      return images.empty_example(image_id)
    captions = []
    for raw in _caption_texts(record):
      text, valid = images.decode_text(raw)
      if not valid:
        self.bad_records.count("non_utf8_caption", f"image id {image_id}: {text!r}")
      if text.strip():
        captions.append(text.strip())
      else:
        self.bad_records.count("empty_caption", f"image id {image_id}")
    return {**images.empty_example(image_id), "image": image, "captions": captions}


def load_source(split: str, data_dir: str | None = None) -> CocoCaptionsSource:
  """The COCO captions source of `split` ('train', 'validation' or 'test')."""
  return CocoCaptionsSource(tfds_records(split, data_dir), name=f"{DATASET}:{split}")


def prepare(data_dir: str | None, download_dir: str | None = None) -> str:
  """Downloads COCO 2014 + Karpathy splits and writes them as ArrayRecord TFDS data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(DATASET, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_dir=download_dir)
  return os.fspath(builder.data_dir)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description="Prepare TFDS coco_captions (Karpathy splits) for random access.")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  parser.add_argument("--download_dir", default=None,
                      help="where the raw downloads go (default: <data_dir>/downloads)")
  args = parser.parse_args(argv)
  print(f"Prepared {DATASET} in {prepare(args.data_dir, args.download_dir)}")


if __name__ == "__main__":
  main()
