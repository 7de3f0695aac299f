"""COCO captions (Karpathy splits) from TFDS, as a random-access source of raw examples.

TFDS's `coco_captions` builder holds COCO 2014 in Karpathy & Li's split (images of
train2014 and val2014 re-divided): `train` (82,783 images), `restval` (30,504), `val`
(5,000) and `test` (5,000), each image with ~5 captions. Our splits, as in the
captioning literature:

  train      -> train+restval   (113,287 images)
  validation -> val
  test       -> test
  val2014    -> restval+val+test (all 40,504 val2014 images: the server's val2014 file)

and, outside TFDS, the official test images (no captions; the server scores them):

  test2014   -> <coco_dir>/annotations/image_info_test2014.json (the image list,
                from image_info_test2014.zip) and <coco_dir>/test2014/ (40,775 images)

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
decoded becomes an empty example (see `images.py`). On test2014 a listed image whose
file is missing is an error naming it and the fix (`missing_images="error"`, the
default: every image needs a caption), or a black image with "blank".

`subset` on a source names its results file (`submission.caption_results_file`):
the Karpathy validation and test images are val2014 images.
"""

from __future__ import annotations

import argparse
import json
import os

from absl import logging
import numpy as np

from sdict_jax.data import images

DATASET = "coco_captions"
# Our split name -> TFDS split expression.
SPLITS = {"train": "train+restval", "validation": "val", "test": "test",
          "val2014": "restval+val+test"}
TEST_SPLIT = "test2014"  # the official test images, read from files (no captions)
# Our split -> the subset its results file is named after (train mixes two).
RESULTS_SUBSETS = {"validation": "val2014", "test": "val2014", "val2014": "val2014",
                   TEST_SPLIT: "test2014"}
IMAGE_INFO_FILE = "annotations/image_info_test2014.json"
MISSING_IMAGES = ("error", "blank")  # the results file needs every listed image
_TEST_DOWNLOAD = ("http://images.cocodataset.org/zips/test2014.zip and "
                  "http://images.cocodataset.org/annotations/image_info_test2014.zip")


def tfds_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"Unknown COCO captions split {split!r}; valid: "
                     f"{sorted(SPLITS) + [TEST_SPLIT]}.")
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

  def __init__(self, records, name: str = DATASET, subset: str | None = None):
    self.records = records
    self.name = name
    self.subset = subset  # of the results file; None: no single subset
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
  """The COCO captions source of a TFDS `split` (see SPLITS)."""
  return CocoCaptionsSource(tfds_records(split, data_dir), name=f"{DATASET}:{split}",
                            subset=RESULTS_SUBSETS.get(split))


class CocoImagesSource:
  """Raw examples of listed COCO images without captions (the official test set).

  Args:
    coco_dir: the COCO root; `images` are (image id, path relative to it).
  An image that cannot be read gives a black image with its id (so it still gets a
  caption in the results file), counted in `bad_records`.
  """

  def __init__(self, coco_dir: str, images_list: list[tuple[int, str]], *,
               name: str = f"{DATASET}:{TEST_SPLIT}", subset: str = "test2014"):
    self.coco_dir = coco_dir
    self.images = images_list
    self.image_ids = [image_id for image_id, _ in images_list]
    self.name = name
    self.subset = subset
    self.bad_records = images.BadRecordLog(name)

  def __len__(self) -> int:
    return len(self.images)

  def __repr__(self) -> str:
    return f"CocoImagesSource({self.name!r}, {len(self)} images)"

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"Index {index} out of range for {self!r}.")
    image_id, path = self.images[index]
    example = images.empty_example(image_id)
    try:
      example["image"] = images.decode_image(os.path.join(self.coco_dir, path))
    except images.ImageDecodeError as e:
      self.bad_records.count("undecodable_image", f"{path}: {e}")
    return example


def load_test_images(coco_dir: str, missing_images: str = "error") -> CocoImagesSource:
  """The official test2014 images, as listed in <coco_dir>/{IMAGE_INFO_FILE}."""
  if missing_images not in MISSING_IMAGES:
    raise ValueError(f"missing_images={missing_images!r}; use one of {MISSING_IMAGES}.")
  info_path = os.path.join(coco_dir, IMAGE_INFO_FILE)
  if not os.path.isfile(info_path):
    raise FileNotFoundError(
        f"COCO test image list {info_path} not found. Set config.data.coco_dir (or "
        f"evaluate's --coco_dir) to the COCO root holding {IMAGE_INFO_FILE} and "
        f"{TEST_SPLIT}/ (from {_TEST_DOWNLOAD}).")
  with open(info_path) as f:
    listed = [(int(i["id"]), os.path.join(TEST_SPLIT, i["file_name"]))
            for i in json.load(f)["images"]]
  folder = os.path.join(coco_dir, TEST_SPLIT)
  present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
  missing = [path for _, path in listed if os.path.basename(path) not in present]
  name = f"{DATASET}:{TEST_SPLIT}"
  if missing and missing_images == "error":
    raise FileNotFoundError(
        f"{name}: {len(missing)} of the {len(listed)} images of {info_path} have no file "
        f"under {coco_dir}, e.g. {os.path.join(coco_dir, missing[0])}; every image needs "
        f"a caption. Put the images there ({_TEST_DOWNLOAD}), or pass "
        f"--missing_images=blank to caption a black image in their place.")
  if missing:
    logging.warning("%s: %d of %d listed images are missing under %s (e.g. %s); they "
                    "are captioned from a black image.", name, len(missing), len(listed),
                    coco_dir, missing[0])
  return CocoImagesSource(coco_dir, listed, name=name)


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
