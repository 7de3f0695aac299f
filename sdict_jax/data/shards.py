"""Web-scale image–text pre-training data as ArrayRecord shards: converter and reader.

Record format: one msgpack map per record,
  {"image": <encoded image bytes, as found in the input>, "caption": <str>, "key": <str>}
msgpack (a dependency of flax) because a record is two fields, one binary: it needs no
schema and no TensorFlow to parse, unlike tf.train.Example, and carries bytes without
the base64 that JSON would need. Images are not re-encoded (no quality loss; resizing
belongs to the downloader, e.g. img2dataset's `--image_size`).

Conversion (`python -m sdict_jax.data.shards convert ...`) reads either
  (a) a table (CSV, or JSONL with one object per line) with an image file column
      (`file` or `image`, or `--image_key`) and a `caption` column (`--caption_key`),
      image paths relative to `--images_dir` (default: the table's folder), or
  (b) webdataset tars as img2dataset writes them: `00000.tar` holding `000000000.jpg`,
      `000000000.txt` (the caption) and optionally `000000000.json` (whose `caption` is
      used when there is no .txt),
applies DataComp-style filters (Gadre et al. 2023, "basic filtering" without the language
and NSFW models), each drop counted by its first failing reason:
  missing_image / missing_caption   the pair is incomplete
  non_utf8_caption                  caption bytes are not valid UTF-8
  empty_caption, caption_too_short, caption_too_long   (words after whitespace split)
  undecodable_image                 PIL cannot decode it fully
  image_too_small                   shorter side < --min_image_side
  extreme_aspect_ratio              longer / shorter side > --max_aspect_ratio
and writes the kept records round-robin into `--num_shards` files
`<prefix>-00000-of-000NN.array_record` (group_size 1: one record per chunk, for random
access). The report (counts per reason, records per shard) is printed and written to
`<output_dir>/<prefix>-report.json`. One process converts; for web scale, run one
conversion per group of tars with distinct `--prefix` into one folder: the reader takes
globs.

Reader: `ShardSource(patterns)` reads every matching file (sorted, so the record order
and hence `id` = global record index are stable) through Grain's ArrayRecordDataSource
and yields raw examples with `captions=[caption]`. Multi-host input needs nothing here:
the pipeline takes indices `shard_index::shard_count` of the one global index.
Converted shards are clean; a damaged record met at read time gives an empty example
(see `images.py`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import json
import os
import tarfile
from typing import Iterable, Iterator, NamedTuple

import msgpack

from sdict_jax.data import images

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif")
REASONS = ("missing_image", "missing_caption", "non_utf8_caption", "empty_caption",
           "caption_too_short", "caption_too_long", "undecodable_image", "image_too_small",
           "extreme_aspect_ratio")
# Problems with an input as a whole (a damaged tar, an unparsable table row).
INPUT_REASONS = ("unreadable_tar", "malformed_row")


# ----------------------------------------------------------------------------------
# Record format.
# ----------------------------------------------------------------------------------
def encode_record(image: bytes, caption: str, key: str) -> bytes:
  return msgpack.packb({"image": bytes(image), "caption": caption, "key": key},
                       use_bin_type=True)


def decode_record(data: bytes) -> dict:
  """The record's fields; invalid UTF-8 in strings survives as lone surrogates, for
  `images.decode_text` to detect.

  Raises:
    ValueError: the bytes are not a record.
  """
  try:
    record = msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")
  except (ValueError, TypeError) as e:  # TypeError: a map key of an unhashable type
    raise ValueError(f"not msgpack ({type(e).__name__}: {e})") from e
  if not isinstance(record, dict) or not isinstance(record.get("image"), bytes) or (
      not isinstance(record.get("caption"), str)):
    raise ValueError("not a {'image': bytes, 'caption': str, ...} map")
  return record


# ----------------------------------------------------------------------------------
# Inputs: (key, image bytes or None, caption bytes/str or None) candidates.
# ----------------------------------------------------------------------------------
class Candidate(NamedTuple):
  key: str
  image: bytes | None
  caption: bytes | str | None  # bytes from tars; str (maybe with surrogates) from tables


def _webdataset_key(name: str) -> tuple[str, str]:
  """(key, extension): webdataset splits the file name at its first dot."""
  folder, base = os.path.split(name)
  stem, _, extension = base.partition(".")
  return os.path.join(folder, stem), extension.lower()


def _candidate_from_files(key: str, files: dict[str, bytes]) -> Candidate:
  image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
  caption = files.get("txt")
  if caption is None and "json" in files:
    try:
      caption = json.loads(files["json"]).get("caption")
    except (ValueError, AttributeError):
      caption = None
  return Candidate(key, image, caption)


def tar_candidates(path: str, problems: dict) -> Iterator[Candidate]:
  """Candidates of one webdataset tar; a damaged tar ends early and is counted."""
  key, files = None, {}
  try:
    with tarfile.open(path, "r|*") as archive:
      for member in archive:
        if not member.isfile():
          continue
        member_key, extension = _webdataset_key(member.name)
        if member_key != key and key is not None:
          yield _candidate_from_files(f"{path}:{key}", files)
          files = {}
        key = member_key
        files[extension] = archive.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError):
    problems["unreadable_tar"] += 1
  if key is not None and files:
    yield _candidate_from_files(f"{path}:{key}", files)


def _table_rows(path: str, problems: dict) -> Iterator[dict]:
  # surrogateescape keeps invalid bytes (as lone surrogates) for the UTF-8 filter.
  with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
    if path.endswith(".jsonl"):
      for line in f:
        if line.strip():
          try:
            row = json.loads(line)
          except ValueError:
            row = None
          if isinstance(row, dict):
            yield row
          else:
            problems["malformed_row"] += 1
    else:
      yield from csv.DictReader(f)


def table_candidates(path: str, problems: dict, *, images_dir: str | None = None,
                     image_key: str | None = None,
                     caption_key: str = "caption") -> Iterator[Candidate]:
  """Candidates of a CSV / JSONL table of image files and captions."""
  images_dir = images_dir or os.path.dirname(os.path.abspath(path))
  column = image_key
  for row in _table_rows(path, problems):
    if column is None:  # the first row decides: a misnamed column fails at once
      column = next((k for k in ("file", "image") if k in row), None)
      if column is None:
        raise ValueError(f"{path}: no 'file' or 'image' column in {sorted(row)}; name "
                         "the image column with --image_key.")
    name = row.get(column)
    image = None
    if isinstance(name, str) and name:
      try:
        with open(os.path.join(images_dir, name), "rb") as f:
          image = f.read()
      except OSError:
        pass
    yield Candidate(f"{path}:{name}", image, row.get(caption_key))


# ----------------------------------------------------------------------------------
# Filters.
# ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Filters:
  """DataComp-style basic filters (defaults: DataComp's >2 words, side >= 200, <= 3:1)."""
  min_image_side: int = 200
  max_aspect_ratio: float = 3.0
  min_caption_words: int = 3
  max_caption_words: int = 128

  def rejection(self, candidate: Candidate) -> tuple[str | None, str]:
    """(first failing reason or None, the cleaned caption)."""
    if candidate.image is None:
      return "missing_image", ""
    if not isinstance(candidate.caption, (str, bytes)):  # absent, or JSON null/number
      return "missing_caption", ""
    caption, valid = images.decode_text(candidate.caption)
    if not valid:
      return "non_utf8_caption", ""
    words = caption.split()
    caption = " ".join(words)
    if not words:
      return "empty_caption", caption
    if len(words) < self.min_caption_words:
      return "caption_too_short", caption
    if len(words) > self.max_caption_words:
      return "caption_too_long", caption
    try:
      height, width = images.decode_image(candidate.image).shape[:2]
    except images.ImageDecodeError:
      return "undecodable_image", caption
    if min(height, width) < self.min_image_side:
      return "image_too_small", caption
    if max(height, width) / min(height, width) > self.max_aspect_ratio:
      return "extreme_aspect_ratio", caption
    return None, caption


# ----------------------------------------------------------------------------------
# Conversion.
# ----------------------------------------------------------------------------------
def shard_paths(output_dir: str, prefix: str, num_shards: int) -> list[str]:
  return [os.path.join(output_dir, f"{prefix}-{i:05d}-of-{num_shards:05d}.array_record")
          for i in range(num_shards)]


def write_shards(candidates: Iterable[Candidate], output_dir: str, *, num_shards: int,
                 filters: Filters = Filters(), prefix: str = "data",
                 problems: dict | None = None) -> dict:
  """Filters `candidates` into `num_shards` ArrayRecord files; returns the report."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if num_shards < 1:
    raise ValueError(f"--num_shards must be >= 1; got {num_shards}.")
  os.makedirs(output_dir, exist_ok=True)
  paths = shard_paths(output_dir, prefix, num_shards)
  dropped = dict.fromkeys(REASONS, 0)
  first_dropped = {}  # reason -> key of its first drop, to find the cause quickly
  per_shard = [0] * num_shards
  seen = written = 0
  writers = [array_record_module.ArrayRecordWriter(p, "group_size:1") for p in paths]
  try:
    for candidate in candidates:
      seen += 1
      reason, caption = filters.rejection(candidate)
      if reason:
        dropped[reason] += 1
        first_dropped.setdefault(reason, candidate.key)
        continue
      shard = written % num_shards  # round robin: balanced without knowing the total
      writers[shard].write(encode_record(candidate.image, caption, candidate.key))
      per_shard[shard] += 1
      written += 1
  finally:
    for writer in writers:
      writer.close()
  return {
      "seen": seen, "written": written, "dropped": dropped, "first_dropped": first_dropped,
      "input_problems": dict(problems or {}),
      "filters": dataclasses.asdict(filters),
      "shards": [{"file": os.path.basename(p), "records": n}
                 for p, n in zip(paths, per_shard)],
  }


def convert(output_dir: str, *, num_shards: int, tars: Iterable[str] = (),
            tables: Iterable[str] = (), images_dir: str | None = None,
            image_key: str | None = None, caption_key: str = "caption",
            filters: Filters = Filters(), prefix: str = "data") -> dict:
  """Converts tars and/or tables into shards; writes and returns the report."""
  tars = [p for pattern in tars for p in sorted(glob.glob(pattern)) or [pattern]]
  tables, problems = list(tables), dict.fromkeys(INPUT_REASONS, 0)
  for path in tars + tables:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"Input {path} not found.")
  if not tars and not tables:
    raise ValueError("Nothing to convert: give --tar and/or --table inputs.")

  def candidates():
    for path in tars:
      yield from tar_candidates(path, problems)
    for path in tables:
      yield from table_candidates(path, problems, images_dir=images_dir,
                                  image_key=image_key, caption_key=caption_key)

  report = write_shards(candidates(), output_dir, num_shards=num_shards, filters=filters,
                        prefix=prefix, problems=problems)
  report["inputs"] = tars + tables
  with open(os.path.join(output_dir, f"{prefix}-report.json"), "w") as f:
    json.dump(report, f, indent=2)
  return report


# ----------------------------------------------------------------------------------
# Reader.
# ----------------------------------------------------------------------------------
def resolve_paths(patterns, what: str = "shard patterns") -> list[str]:
  """Sorted files matching comma-separated globs (a folder: its *.array_record)."""
  if isinstance(patterns, str):
    patterns = [p for p in patterns.split(",") if p.strip()]
  paths = set()
  for pattern in patterns:
    pattern = pattern.strip()
    if os.path.isdir(pattern):
      pattern = os.path.join(pattern, "*.array_record")
    paths.update(glob.glob(pattern))
  if not paths:
    raise FileNotFoundError(
        f"No ArrayRecord shards match {what}={list(patterns)!r}; point it at files "
        "written by `python -m sdict_jax.data.shards convert` (globs and folders work).")
  return sorted(paths)


class ShardSource:
  """Raw examples from ArrayRecord shards (Grain random-access protocol)."""

  def __init__(self, patterns, name: str = "shards", what: str = "shard patterns"):
    import grain  # pylint: disable=g-import-not-at-top
    self.paths = resolve_paths(patterns, what)
    self.records = grain.sources.ArrayRecordDataSource(self.paths)
    self.name = name
    self.bad_records = images.BadRecordLog(name)

  def __len__(self) -> int:
    return len(self.records)

  def __repr__(self) -> str:
    return f"ShardSource({self.name!r}, {len(self.paths)} files, {len(self)} records)"

  def texts(self) -> Iterator[str]:
    """Every caption, for tokenizer training (no image decoding)."""
    for i in range(len(self)):
      try:
        yield images.decode_text(decode_record(self.records[i])["caption"])[0]
      except ValueError:
        continue

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"Index {index} out of range for {self!r}.")
    try:
      record = decode_record(self.records[index])
    except ValueError as e:
      self.bad_records.count("malformed_record", f"record {index}: {type(e).__name__}: {e}")
      return images.empty_example(index)
    try:
      image = images.decode_image(record["image"])
    except images.ImageDecodeError as e:
      self.bad_records.count("undecodable_image", f"{record.get('key')}: {e}")
      return images.empty_example(index)
    caption, valid = images.decode_text(record["caption"])
    if not valid:
      self.bad_records.count("non_utf8_caption", f"{record.get('key')}: {caption!r}")
    caption = caption.strip()
    if not caption:
      self.bad_records.count("empty_caption", f"{record.get('key')}")
    return {**images.empty_example(index), "image": image,
            "captions": [caption] if caption else []}


# ----------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------
def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  c = commands.add_parser("convert", help="filter image–caption pairs into shards")
  c.add_argument("--output_dir", required=True)
  c.add_argument("--num_shards", type=int, required=True)
  c.add_argument("--prefix", default="data", help="shard file name prefix")
  c.add_argument("--tar", action="append", default=[],
                 help="webdataset tar file or glob (repeatable)")
  c.add_argument("--table", action="append", default=[],
                 help="CSV or JSONL file of image files + captions (repeatable)")
  c.add_argument("--images_dir", default=None, help="root of the tables' image paths")
  c.add_argument("--image_key", default=None, help="image column (default: file or image)")
  c.add_argument("--caption_key", default="caption")
  defaults = Filters()
  for field in dataclasses.fields(Filters):
    c.add_argument(f"--{field.name}", type=type(getattr(defaults, field.name)),
                   default=getattr(defaults, field.name))
  args = parser.parse_args(argv)
  filters = Filters(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Filters)})
  report = convert(args.output_dir, num_shards=args.num_shards, tars=args.tar,
                   tables=args.table, images_dir=args.images_dir, image_key=args.image_key,
                   caption_key=args.caption_key, filters=filters, prefix=args.prefix)
  print(json.dumps(report, indent=2))
  if not report["written"]:
    raise SystemExit("No record passed the filters; see 'first_dropped' in the report "
                     "for an example of each reason.")


if __name__ == "__main__":
  main()
