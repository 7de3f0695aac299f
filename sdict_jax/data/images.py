"""Safe decoding of images and text for the data readers, and the bad-record policy.

Policy for a record that cannot be used (corrupt image, malformed record):
- Offline conversion (`shards.py convert`) drops it and counts it in its report, so
  pre-training shards are clean.
- A reader that meets one anyway at read time (a corrupt COCO image, a VQAv2 image file
  that was truncated after indexing, a damaged shard) returns `empty_example(id)`: a
  black image and no captions, questions or objects. The pipeline then sets every has_*
  to 0, so the example adds nothing to any loss, and a multi-day run does not die on one
  bad file. The reader counts it in a `BadRecordLog`, which logs the first occurrence of
  each reason with its detail and then the running count every `log_every` records.
  Counts are per process (each Grain worker keeps its own).
A random-access source cannot skip at read time without changing its length, and
checking every image at index time would mean decoding the whole dataset up front; hence
the empty example.

Images are decoded with PIL, fully (a truncated JPEG fails here, not later), to uint8
RGB. Pixels are kept as stored (no EXIF rotation), as `tf.io.decode_jpeg` does, so
annotations made on the stored pixels stay valid.
"""

from __future__ import annotations

import collections
import io
import os
import threading
import warnings

from absl import logging
import numpy as np
from PIL import Image

# The image of an empty example: small (the pipeline resizes it) and black.
_EMPTY_IMAGE_SIDE = 32


class ImageDecodeError(ValueError):
  """The bytes or file are not an image PIL can decode completely."""


def decode_image(data) -> np.ndarray:
  """uint8 RGB [H, W, 3] from encoded bytes, a file path, or an image array.

  Raises:
    ImageDecodeError: the data is not a decodable image (corrupt, truncated, empty,
      too large for PIL's decompression-bomb guard, or not an image at all).
  """
  if isinstance(data, np.ndarray):  # already decoded (e.g. by TFDS)
    return _rgb_array(data)
  try:
    source = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) \
        else os.fspath(data)
    with warnings.catch_warnings():
      # Oversized images warn before they error; a warning per image floods the log.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(source) as image:
        image.load()  # decode now: PIL is lazy and a truncated file fails only here
        return np.asarray(image.convert("RGB"), np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # PIL signals bad data with OSError (UnidentifiedImageError, truncated files),
    # ValueError and, for some broken headers, SyntaxError.
    raise ImageDecodeError(f"{type(e).__name__}: {e}") from e


def _rgb_array(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ImageDecodeError(f"Expected a uint8 image array, got {image.dtype}.")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
    raise ImageDecodeError(f"Expected an image array [H, W, 1|3|4], got {image.shape}.")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[..., :3]


def decode_text(data) -> tuple[str, bool]:
  """(text, was_valid_utf8) from bytes or str; invalid bytes become U+FFFD.

  A str holding lone surrogates (what `errors="surrogateescape"` makes of invalid
  bytes) counts as invalid too.
  """
  if isinstance(data, (bytes, bytearray, np.bytes_)):
    raw = bytes(data)
  else:
    text = str(data)
    try:
      text.encode("utf-8")
      return text, True
    except UnicodeEncodeError:
      raw = text.encode("utf-8", errors="surrogateescape")
  try:
    return raw.decode("utf-8"), True
  except UnicodeDecodeError:
    return raw.decode("utf-8", errors="replace"), False


def empty_example(example_id: int) -> dict:
  """A raw example with no task: the pipeline gives it has_* = 0 (no loss)."""
  return {
      "image": np.zeros((_EMPTY_IMAGE_SIDE, _EMPTY_IMAGE_SIDE, 3), np.uint8),
      "captions": [],
      "questions": [],
      "answers": [],
      "answer_types": [],
      "boxes": np.zeros((0, 4), np.float32),
      "refexps": [],
      "id": int(example_id),
  }


class BadRecordLog:
  """Counts unusable records by reason; logs the first of each reason, then every
  `log_every`-th occurrence with the running count. Picklable (for Grain workers)."""

  def __init__(self, source_name: str, log_every: int = 1000):
    self.source_name = source_name
    self.log_every = log_every
    self.counts = collections.Counter()
    self._lock = threading.Lock()  # Grain reads with several threads

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def count(self, reason: str, detail: str = "") -> None:
    with self._lock:
      self.counts[reason] += 1
      n = self.counts[reason]
    if n == 1:
      logging.warning("%s: %s (first occurrence; later ones are counted): %s",
                      self.source_name, reason, detail)
    elif n % self.log_every == 0:
      logging.warning("%s: %d records so far with %s.", self.source_name, n, reason)
