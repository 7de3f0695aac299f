"""Training image augmentation: aspect-preserving random crop and RandAugment.

`make_image_transform(config.data)` returns the pipeline's `image_transform` hook,
`(uint8 [H, W, 3], np.random.Generator) -> uint8 [h, w, 3]`, or None. Every random choice
comes from the Generator that Grain derives for the record, so the augmented stream is
as deterministic and resumable as the rest of the pipeline.

config.data.augment: "" | "crop" | "randaugment" | "crop+randaugment"
  crop: a window of `s` times each side, `s ~ U[crop_min_scale, 1]` (default 0.5), at a
    uniform position: the aspect ratio is kept, and the pipeline's resize follows.
  randaugment: RandAugment (Cubuk et al. 2020): `randaugment_ops` (default 2) ops drawn
    uniformly with replacement from the paper's 14 (identity, autocontrast, equalize,
    rotate, solarize, color, posterize, contrast, brightness, sharpness, shear x/y,
    translate x/y), all at magnitude `randaugment_magnitude` M in [0, 10] (default 9;
    M = 10 applies the maxima `_MAX_*` below), the sign of signed ops drawn per op. No
    flips: captions say "left of".

The transforms move pixels, not annotations: use them for sources without boxes (COCO
captions, VQAv2, shards). On the shapes scenes the crop and the geometric ops would
misplace box targets, and the colour ops change answers to colour questions.

Why PIL ops and not a RandAugment library: the ops are single calls into PIL's
`ImageOps`/`ImageEnhance`/`Image.transform` (the same primitives torchvision's and timm's
PIL RandAugment call), PIL is already a dependency, and this file only adds the op table.
`keras.layers.RandAugment` (installed) draws its randomness from a stateful Keras
`SeedGenerator`, not from the per-record Generator, and runs each image through a Keras
backend (TF or JAX) inside the Grain worker; timm and torchvision need torch;
albumentations needs OpenCV and has no RandAugment of its own.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

AUGMENTS = ("crop", "randaugment")
MAX_MAGNITUDE = 10.0
# Strength of each op at magnitude MAX_MAGNITUDE.
_MAX_ROTATE_DEGREES = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 0.3  # fraction of the image side
_MAX_ENHANCE_DELTA = 0.9  # enhancement factor 1 +- delta
_MIN_POSTERIZE_BITS = 4
_FILL = (128, 128, 128)  # pixels that geometric ops move in from outside


def aspect_preserving_crop(image: np.ndarray, rng: np.random.Generator,
                           min_scale: float = 0.5) -> np.ndarray:
  """A random window of `s` times the height and the width, `s ~ U[min_scale, 1]`."""
  height, width = image.shape[:2]
  scale = rng.uniform(min_scale, 1.0)
  crop_h, crop_w = max(1, round(scale * height)), max(1, round(scale * width))
  top = int(rng.integers(height - crop_h + 1))
  left = int(rng.integers(width - crop_w + 1))
  return image[top:top + crop_h, left:left + crop_w]


def _signed(level: float, rng: np.random.Generator) -> float:
  return level if rng.random() < 0.5 else -level


def _affine(image: Image.Image, coefficients) -> Image.Image:
  # Image.transform maps output pixel (x, y) to input (a x + b y + c, d x + e y + f).
  return image.transform(image.size, Image.AFFINE, coefficients, Image.BILINEAR,
                         fillcolor=_FILL)


def _enhance(enhancer):
  return lambda image, level, rng: enhancer(image).enhance(
      1.0 + _signed(_MAX_ENHANCE_DELTA * level, rng))


# name -> (PIL image, level in [0, 1], rng) -> PIL image.
_OPS = {
    "identity": lambda image, level, rng: image,
    "autocontrast": lambda image, level, rng: ImageOps.autocontrast(image),
    "equalize": lambda image, level, rng: ImageOps.equalize(image),
    "rotate": lambda image, level, rng: image.rotate(
        _signed(_MAX_ROTATE_DEGREES * level, rng), Image.BILINEAR, fillcolor=_FILL),
    "solarize": lambda image, level, rng: ImageOps.solarize(
        image, threshold=256 - round(256 * level)),
    "color": _enhance(ImageEnhance.Color),
    "posterize": lambda image, level, rng: ImageOps.posterize(
        image, 8 - round((8 - _MIN_POSTERIZE_BITS) * level)),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": lambda image, level, rng: _affine(
        image, (1, _signed(_MAX_SHEAR * level, rng), 0, 0, 1, 0)),
    "shear_y": lambda image, level, rng: _affine(
        image, (1, 0, 0, _signed(_MAX_SHEAR * level, rng), 1, 0)),
    "translate_x": lambda image, level, rng: _affine(
        image, (1, 0, _signed(_MAX_TRANSLATE * level, rng) * image.width, 0, 1, 0)),
    "translate_y": lambda image, level, rng: _affine(
        image, (1, 0, 0, 0, 1, _signed(_MAX_TRANSLATE * level, rng) * image.height)),
}
OP_NAMES = tuple(_OPS)


def randaugment_op(name: str, image: np.ndarray, level: float,
                   rng: np.random.Generator) -> np.ndarray:
  """One RandAugment op on a uint8 image, at `level` in [0, 1] (1: strongest)."""
  return np.asarray(_OPS[name](Image.fromarray(image), level, rng), np.uint8)


def randaugment(image: np.ndarray, rng: np.random.Generator, *, num_ops: int = 2,
                magnitude: float = 9.0) -> np.ndarray:
  """RandAugment: `num_ops` uniformly drawn ops at magnitude in [0, MAX_MAGNITUDE]."""
  level = magnitude / MAX_MAGNITUDE
  pil = Image.fromarray(image)
  for op in rng.integers(len(OP_NAMES), size=num_ops):
    pil = _OPS[OP_NAMES[op]](pil, level, rng)
  return np.asarray(pil, np.uint8)


@dataclasses.dataclass(frozen=True)
class ImageAugment:
  """The pipeline's image transform: optional crop, then optional RandAugment.

  A plain picklable object (Grain may run it in worker processes).
  """
  crop: bool = False
  crop_min_scale: float = 0.5
  randaugment_ops: int = 0  # 0: no RandAugment
  randaugment_magnitude: float = 9.0

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if self.crop:
      image = aspect_preserving_crop(image, rng, self.crop_min_scale)
    if self.randaugment_ops:
      image = randaugment(image, rng, num_ops=self.randaugment_ops,
                          magnitude=self.randaugment_magnitude)
    return image


def make_image_transform(data_config) -> ImageAugment | None:
  """The training image transform named by `data_config.augment` (see module doc)."""
  spec = data_config.get("augment", "") or ""
  parts = [p.strip() for p in spec.split("+") if p.strip()]
  unknown = sorted(set(parts) - set(AUGMENTS))
  if unknown:
    raise ValueError(f"config.data.augment={spec!r} names unknown augmentations {unknown};"
                     f" use '', 'crop', 'randaugment' or 'crop+randaugment'.")
  if not parts:
    return None
  magnitude = float(data_config.get("randaugment_magnitude", 9))
  num_ops = int(data_config.get("randaugment_ops", 2))
  min_scale = float(data_config.get("crop_min_scale", 0.5))
  if not 0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f"config.data.randaugment_magnitude must be in [0, {MAX_MAGNITUDE:g}];"
                     f" got {magnitude}.")
  if "randaugment" in parts and num_ops < 1:
    raise ValueError(f"config.data.randaugment_ops must be >= 1; got {num_ops}.")
  if not 0 < min_scale <= 1:
    raise ValueError(f"config.data.crop_min_scale must be in (0, 1]; got {min_scale}.")
  return ImageAugment(crop="crop" in parts, crop_min_scale=min_scale,
                      randaugment_ops=num_ops if "randaugment" in parts else 0,
                      randaugment_magnitude=magnitude)
