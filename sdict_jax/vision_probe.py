"""One-minute probes of what the vision encoder sees (`python -m sdict_jax.bench vision`).

A probe trains the model's own vision encoder (`SDictVLM.encode_image`), mean-pooled
and read out by one linear layer, on one visual question about a shapes image, and
records held-out accuracy as it learns:

  lone_shape   one object (random shape, colour, size, position): name its shape.
               Shape needs the relation of neighbouring patches (a small object
               spans 2×2 patches, a large one 3×3): no token mixing, no shape.
  left_shape   two objects of different shapes side by side: name the shape of the
               left one. Needs shape and where it is relative to the other object.

Both have five classes (chance 0.2). Training uses the project's optimizer
(`train.make_optimizer`), so a change to how parameters are stepped shows here
exactly as it would in training. Images are generated once per probe from fixed
seeds, fresh for every training step (no example repeats) and a separate held-out
set, so every mixer sees the same data in the same order.

`frozen_readout` asks the same question of a trained run without training it: how
well a ridge read-out of its frozen, pooled vision tokens names the shape. It tells
whether a multi-task run's vision encoder has learned what the probe learns alone.
It adds a third, per-object question that pooled tokens cannot answer:

  object_shape scenes of the dataset (1-4 objects): name each object's shape from
               the 3×3 vision tokens around the patch that holds its centre, the
               tokens the fusion and the per-token read-out work with.
               `--at_init` also reads out the run's model freshly initialised:
               a random encoder's tokens already hold some shape.

  python -m sdict_jax.vision_probe --workdirs runs/shapes[,runs/shapes_attn,…]
"""

import functools
import time
from typing import Optional

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sdict_jax import model as model_lib
from sdict_jax import restore
from sdict_jax import sharding
from sdict_jax import train
from sdict_jax.data import shapes
from sdict_jax.data import sources

TASKS = ("lone_shape", "left_shape")
FROZEN_TASKS = (*TASKS, "object_shape")
NUM_CLASSES = len(shapes.SHAPES)
# Parameters of the whole SDictVLM that the vision encoder uses.
VISION_PARAMS = ("patch_projection", "vision_position", "vision_omega", "vision_norm")


def _random_object(rng, shape, size=None):
  size = size or shapes._pick(rng, tuple(shapes.SIZES))  # pylint: disable=protected-access
  colour = shapes._pick(rng, tuple(shapes.COLOURS))  # pylint: disable=protected-access
  return shape, colour, size


def probe_example(task: str, rng: np.random.Generator,
                  image_size: int) -> tuple[np.ndarray, int]:
  """One (uint8 image [S, S, 3], label in [0, 5)) of the task."""
  if task == "lone_shape":
    label = int(rng.integers(NUM_CLASSES))
    specs = [_random_object(rng, shapes.SHAPES[label])]
  elif task == "left_shape":
    left, right = rng.choice(NUM_CLASSES, size=2, replace=False)
    label = int(left)
    specs = [_random_object(rng, shapes.SHAPES[left]),
             _random_object(rng, shapes.SHAPES[right])]
  else:
    raise ValueError(f"Unknown vision probe {task!r}; choose one of {TASKS}.")
  while True:  # placement: reject layouts where the two are not side by side
    centres = shapes._place([s for _, _, s in specs], rng)  # pylint: disable=protected-access
    objects = [shapes.ShapeObject(shape, colour, size, float(cy), float(cx))
               for (shape, colour, size), (cy, cx) in zip(specs, centres)]
    if len(objects) == 1 or "left" in shapes.relations(objects[0], objects[1]):
      break
  return shapes.render(objects, rng, image_size), label


def probe_data(task: str, count: int, *, seed: int,
               image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """`count` examples: uint8 images [count, S, S, 3] and int32 labels [count]."""
  rng = np.random.default_rng([seed, TASKS.index(task)])
  pairs = [probe_example(task, rng, image_size) for _ in range(count)]
  return (np.stack([image for image, _ in pairs]),
          np.asarray([label for _, label in pairs], np.int32))


def relative_change(initial, params, names) -> Optional[float]:
  """‖θ − θ₀‖ / ‖θ₀‖ over the vision blocks' leaves called one of `names`.

  How far training has moved the filters, or the Dense kernels, from where they
  started: the measurement behind the filters' step size (README).
  """
  moved, start = 0.0, 0.0
  flat_initial = jax.tree_util.tree_flatten_with_path(initial)[0]
  for (path, before), after in zip(flat_initial, jax.tree.leaves(params)):
    keys = [getattr(k, "key", "") for k in path]
    if keys[-1] in names and any(str(k).startswith("vision_") for k in keys):
      moved += float(jnp.sum((after - before)**2))
      start += float(jnp.sum(before**2))
  return float(np.sqrt(moved / start)) if start else None


class VisionProbe(nn.Module):
  """The VLM's vision encoder → mean over patches → linear classifier."""
  vlm: model_lib.SDictVLM

  @nn.compact
  def __call__(self, images, train=False):
    tokens = self.vlm.encode_image(images, train=train)
    return nn.Dense(NUM_CLASSES, name="readout")(tokens.mean(axis=1))


def vision_parameter_count(vlm: model_lib.SDictVLM, image_size: int) -> int:
  """Parameters the vision encoder uses (jax.eval_shape: nothing is allocated)."""
  images = jnp.zeros((1, image_size, image_size, 3))
  shapes_tree = jax.eval_shape(
      lambda: vlm.init(jax.random.PRNGKey(0), images,
                       method=model_lib.SDictVLM.encode_image))["params"]
  return sum(int(np.prod(leaf.shape)) for name, subtree in shapes_tree.items()
             if name.startswith("vision_") or name in VISION_PARAMS
             for leaf in jax.tree.leaves(subtree))


def build_vlm(model_config: ml_collections.ConfigDict, image_size: int):
  # Only the vision encoder runs: the vocabularies' sizes do not matter.
  return model_lib.from_config(model_config, vocab_size=8, num_answers=1,
                               image_size=image_size, max_caption_len=8)


def equal_vision_width(model_config, target: int, image_size: int) -> int:
  """The width at which this mixer's vision encoder has `target` parameters."""
  def count(width):
    changed = ml_collections.ConfigDict(model_config.to_dict())
    changed.width = width
    return vision_parameter_count(build_vlm(changed, image_size), image_size)
  return model_lib.equal_parameter_width(
      None, target, image_size, multiple=2 * model_config.num_heads, count=count)


def run_probe(task: str, model_config: ml_collections.ConfigDict,
              optim_config: ml_collections.ConfigDict, *, steps: int, batch_size: int,
              eval_every: int, eval_examples: int, image_size: int, seed: int = 0,
              data: Optional[tuple] = None) -> dict:
  """Trains one probe; returns its learning curve and cost.

  data: (train images, train labels, eval images, eval labels), to share one
  draw between mixers; generated from `seed` when None.
  """
  if data is None:
    data = (*probe_data(task, steps * batch_size, seed=seed, image_size=image_size),
            *probe_data(task, eval_examples, seed=seed + 1, image_size=image_size))
  train_images, train_labels, eval_images, eval_labels = data
  model = VisionProbe(build_vlm(model_config, image_size))
  optimizer, _ = train.make_optimizer(optim_config, steps)
  to_float = lambda images: jnp.asarray(images, jnp.float32) / 255.0
  params = model.init(jax.random.PRNGKey(seed), to_float(eval_images[:1]))["params"]
  opt_state = optimizer.init(params)

  def loss_fn(params, images, labels):
    logits = model.apply({"params": params}, images, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def step_fn(params, opt_state, images, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def correct(params, images, labels):
    logits = model.apply({"params": params}, images)
    return jnp.sum(jnp.argmax(logits, -1) == labels)

  def accuracy(params):
    hits = sum(int(correct(params, to_float(eval_images[i:i + 256]),
                           eval_labels[i:i + 256]))
               for i in range(0, len(eval_labels), 256))
    return hits / len(eval_labels)

  initial = params
  curve, train_seconds, losses = [], 0.0, []
  start = time.perf_counter()
  for step in range(1, steps + 1):
    rows = slice((step - 1) * batch_size, step * batch_size)
    params, opt_state, loss = step_fn(params, opt_state, to_float(train_images[rows]),
                                      train_labels[rows])
    losses.append(loss)
    if step % eval_every == 0 or step == steps:
      jax.block_until_ready(params)
      train_seconds += time.perf_counter() - start
      curve.append({"step": step, "accuracy": accuracy(params),
                    "train_loss": float(np.mean(jax.device_get(losses))),
                    "seconds": train_seconds,
                    "filter_change": relative_change(initial, params, train.FILTER_PARAMS),
                    "kernel_change": relative_change(initial, params, ("kernel",))})
      losses = []
      start = time.perf_counter()
  return {"task": task, "curve": curve,
          "vision_params": vision_parameter_count(model.vlm, image_size),
          "width": model_config.width}


# ---------------------------------------------------------------------------
# Frozen read-out of a trained run.
# ---------------------------------------------------------------------------


def pooled_features(encode, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
  """Mean ⊕ max over the tokens of encode(float images) → [count, 2d]."""
  pooled = []
  for i in range(0, len(images), batch_size):
    tokens = np.asarray(encode(jnp.asarray(images[i:i + batch_size], jnp.float32) / 255))
    pooled.append(np.concatenate([tokens.mean(1), tokens.max(1)], -1))
  return np.concatenate(pooled)


def ridge_readout_accuracy(train_x, train_y, eval_x, eval_y, *,
                           ridge_per_feature: float = 10.0) -> float:
  """Held-out accuracy of ridge regression onto one-hot labels (closed form)."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
  dim = train_x.shape[1]
  weights = np.linalg.solve(train_x.T @ train_x + ridge_per_feature * dim * np.eye(dim),
                            train_x.T @ np.eye(NUM_CLASSES)[train_y])
  return float(np.mean(np.argmax(eval_x @ weights, 1) == eval_y))


def object_data(count: int, *, seed: int, image_size: int, patch_size: int):
  """`count` scenes of the shapes generator: uint8 images [count, S, S, 3], and per
  object its image and centre patch [objects, 3] (image, row, column) and shape."""
  rng = np.random.default_rng([seed, FROZEN_TASKS.index("object_shape")])
  grid = image_size // patch_size
  images, where, labels = [], [], []
  for i in range(count):
    scene = shapes.sample_scene(rng)
    images.append(shapes.render(scene.objects, rng, image_size))
    for obj in scene.objects:
      where.append((i, min(int(obj.cy * grid), grid - 1), min(int(obj.cx * grid), grid - 1)))
      labels.append(shapes.SHAPES.index(obj.shape))
  return np.stack(images), np.asarray(where), np.asarray(labels, np.int32)


def neighbourhood_features(encode, images: np.ndarray, where: np.ndarray,
                           grid: int, batch_size: int = 250) -> np.ndarray:
  """The 3×3 tokens around each (image, row, column), concatenated → [objects, 9d]
  (zeros beyond the image's edge)."""
  tokens = np.concatenate([
      np.asarray(encode(jnp.asarray(images[i:i + batch_size], jnp.float32) / 255))
      for i in range(0, len(images), batch_size)])
  tokens = np.pad(tokens.reshape(len(images), grid, grid, -1),
                  ((0, 0), (1, 1), (1, 1), (0, 0)))
  image, row, column = where[:, 0], where[:, 1] + 1, where[:, 2] + 1
  return np.concatenate([tokens[image, row + dr, column + dc]
                         for dr in (-1, 0, 1) for dc in (-1, 0, 1)], -1)


def _readout_data(task, *, image_size, patch_size, train_examples, eval_examples):
  """(encoder → its (fit, held-out) features, fit labels, held-out labels, ridge per
  feature) for one task: the images are generated once, whatever the number of
  encoders read out."""
  if task == "object_shape":  # counts scenes: 2.5 objects a scene on average
    grid = image_size // patch_size
    fit, held_out = (object_data(count, seed=seed, image_size=image_size,
                                 patch_size=patch_size)
                     for seed, count in ((0, train_examples), (1, eval_examples)))
    features = lambda encode, data: neighbourhood_features(encode, data[0], data[1],
                                                           grid)
    # 9d features: a lighter ridge than the pooled read-outs' (0.1 read more
    # than 1; docs/experiments.md, session 14).
    ridge = 0.1
  else:
    fit, held_out = (probe_data(task, count, seed=seed, image_size=image_size)
                     for seed, count in ((0, train_examples), (1, eval_examples)))
    features = lambda encode, data: pooled_features(encode, data[0])
    ridge = 10.0
  return (lambda encode: (features(encode, fit), features(encode, held_out)),
          fit[-1], held_out[-1], ridge)


def frozen_readout(workdir: str, tasks=FROZEN_TASKS, *, train_examples: int = 3000,
                   eval_examples: int = 1000, at_init: bool = False) -> list[dict]:
  """[{step, task: accuracy}] of a ridge read-out of the run's frozen vision tokens;
  at_init adds the same model freshly initialised with the run's seed (step 0; a
  random encoder, not necessarily the run's own starting point), read out on the
  same images."""
  config = restore.load_config(workdir)
  mesh = sharding.make_mesh(config.mesh)
  jax.set_mesh(mesh)
  run = restore.load(workdir, config, sources.load(config.data, "validation"), mesh)
  size = config.data.image_size
  encoders = [(run.step, run.params)]
  if at_init:
    encoders.append((0, run.model.init(jax.random.PRNGKey(config.seed),
                                       jnp.zeros((1, size, size, 3)),
                                       method=model_lib.SDictVLM.encode_image)["params"]))
  encode = jax.jit(lambda params, images: run.model.apply(
      {"params": params}, images, method=model_lib.SDictVLM.encode_image))
  scores = [{"step": step} for step, _ in encoders]
  for task in tasks:
    features, fit_labels, held_out_labels, ridge = _readout_data(
        task, image_size=size, patch_size=config.model.patch_size,
        train_examples=train_examples, eval_examples=eval_examples)
    for (_, params), row in zip(encoders, scores):
      fit_x, held_out_x = features(functools.partial(encode, params))
      row[task] = ridge_readout_accuracy(fit_x, fit_labels, held_out_x,
                                         held_out_labels, ridge_per_feature=ridge)
  return scores


def main(argv):
  del argv
  unknown = sorted(set(flags.FLAGS.tasks) - set(FROZEN_TASKS))
  if unknown:
    raise app.UsageError(f"Unknown --tasks {unknown}; choose from {FROZEN_TASKS}.")
  for workdir in flags.FLAGS.workdirs:
    try:
      readouts = frozen_readout(workdir, tasks=flags.FLAGS.tasks,
                                at_init=flags.FLAGS.at_init)
    except restore.RestoreError as error:
      raise app.UsageError(str(error)) from error
    for scores in readouts:
      print(f"{workdir} (step {scores.pop('step')}): " + ", ".join(
          f"{task} {accuracy:.3f}" for task, accuracy in scores.items()), flush=True)


if __name__ == "__main__":
  # Defined here, not at import: bench.py imports this module beside train.py.
  flags.DEFINE_list("workdirs", None, "Trained runs to read out, comma-separated.")
  flags.DEFINE_list("tasks", list(FROZEN_TASKS), f"Read-outs, of {FROZEN_TASKS}.")
  flags.DEFINE_bool("at_init", False, "Also read out each run's model freshly "
                    "initialised with its seed (step 0): what training added.")
  flags.mark_flags_as_required(["workdirs"])
  app.run(main)
