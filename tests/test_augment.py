"""Augmentation: determinism for a fixed generator, dtype/shape, the crop keeps the aspect
ratio, magnitude semantics of RandAugment, config parsing, and use in the pipeline."""

import pickle

import ml_collections
import numpy as np
import pytest

from sdict_jax.data import augment
from sdict_jax.data import pipeline
from sdict_jax.data import shapes
from sdict_jax.data import tokenizer


def _image(height=60, width=90, seed=0):
  # A smooth gradient plus noise: every op (even autocontrast, equalize) has work to do.
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width]
  base = np.stack([x * 2, y * 3, (x + y)], axis=-1) % 200 + 20
  return (base + rng.integers(0, 30, base.shape)).astype(np.uint8)


def _config(**data):
  return ml_collections.ConfigDict(data)


@pytest.mark.parametrize("spec", ["crop", "randaugment", "crop+randaugment"])
def test_same_generator_same_output_other_seed_other_output(spec):
  transform = augment.make_image_transform(_config(augment=spec))
  image = _image()
  a = transform(image, np.random.default_rng(7))
  b = transform(image, np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)
  others = [transform(image, np.random.default_rng(seed)) for seed in range(8, 12)]
  assert any(o.shape != a.shape or not np.array_equal(o, a) for o in others)
  assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3


def test_crop_keeps_aspect_ratio_and_stays_inside():
  image = _image(60, 90)
  for seed in range(20):
    crop = augment.aspect_preserving_crop(image, np.random.default_rng(seed), 0.5)
    height, width = crop.shape[:2]
    assert 30 <= height <= 60 and 45 <= width <= 90
    assert abs(width / height - 1.5) < 0.05  # rounding to whole pixels only
    # The crop is a window of the image: find it by its top-left pixels.
    matches = [(t, l) for t in range(61 - height) for l in range(91 - width)
               if np.array_equal(image[t:t + height, l:l + width], crop)]
    assert matches


def test_randaugment_keeps_shape_and_dtype_at_every_magnitude():
  image = _image()
  for magnitude in (0, 5, 10):
    out = augment.randaugment(image, np.random.default_rng(1), num_ops=3,
                              magnitude=magnitude)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_magnitude_zero_leaves_all_but_the_parameter_free_ops_as_identity():
  image = _image()
  for name in augment.OP_NAMES:
    out = augment.randaugment_op(name, image, level=0.0, rng=np.random.default_rng(0))
    if name in ("autocontrast", "equalize"):  # no magnitude: they always act
      assert not np.array_equal(out, image), name
    else:
      np.testing.assert_array_equal(out, image, err_msg=name)


def test_every_op_changes_the_image_at_full_magnitude():
  image = _image()
  for name in augment.OP_NAMES:
    out = augment.randaugment_op(name, image, level=1.0, rng=np.random.default_rng(0))
    assert out.shape == image.shape
    assert (name == "identity") == np.array_equal(out, image), name


def test_config_parsing():
  assert augment.make_image_transform(_config(augment="")) is None
  assert augment.make_image_transform(_config()) is None
  transform = augment.make_image_transform(_config(
      augment="crop+randaugment", randaugment_magnitude=5, randaugment_ops=1,
      crop_min_scale=0.8))
  assert transform == augment.ImageAugment(crop=True, crop_min_scale=0.8, randaugment_ops=1,
                                           randaugment_magnitude=5.0)
  assert pickle.loads(pickle.dumps(transform)) == transform  # Grain workers pickle it
  with pytest.raises(ValueError, match="config.data.augment"):
    augment.make_image_transform(_config(augment="crop+flip"))
  with pytest.raises(ValueError, match="randaugment_magnitude"):
    augment.make_image_transform(_config(augment="randaugment", randaugment_magnitude=11))


def test_pipeline_with_augmentation_is_deterministic():
  transform = augment.make_image_transform(_config(augment="crop+randaugment"))

  def first_batch():
    return next(iter(pipeline.make_dataset(
        shapes.ShapesSource("train", num_examples=8, image_size=48),
        tokenizer=tokenizer.shapes_tokenizer(), answer_vocab=shapes.answer_vocabulary(),
        image_size=32, batch_size=4, max_text_len=12, max_caption_len=24, seed=0,
        train=True, image_transform=transform, read_threads=2)))
  a, b = first_batch(), first_batch()
  assert a["image"].shape == (4, 32, 32, 3) and a["image"].dtype == np.float32
  np.testing.assert_array_equal(a["image"], b["image"])
