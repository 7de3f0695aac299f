r"""Trains SDict-VLM (or a baseline) on captioning, VQA and grounding at once.

  python -m sdict_jax.train --config configs/shapes.py --workdir runs/shapes \
      [--config.model.mixer=attention] [--config.train.steps=500]

Resumes from the newest readable checkpoint in --workdir; a run whose workdir has
none starts from --config.init_from=<another run's workdir> when set (fine-tuning,
sdict_jax/init_from.py). Writes <workdir>/metrics.jsonl, TensorBoard events and
checkpoints.
"""

import functools
import math
import os
import re
import signal
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax

from sdict_jax import checkpointing
from sdict_jax import config_checks
from sdict_jax import distributed
from sdict_jax import evaluators
from sdict_jax import init_from
from sdict_jax import losses
from sdict_jax import metric_writers
from sdict_jax import model as model_lib
from sdict_jax import sharding
from sdict_jax.data import augment
from sdict_jax.data import pipeline
from sdict_jax.data import sources

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and metrics go here.")


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf."""


def build_model(config, bundle, *, decode=False) -> model_lib.SDictVLM:
  """The configured model; baselines get the width that matches SDict's size."""
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  build = lambda mc, dec=decode: model_lib.from_config(
      mc, vocab_size=bundle.tokenizer.vocab_size,
      num_answers=len(bundle.answer_vocab), image_size=config.data.image_size,
      max_caption_len=config.data.max_caption_len, decode=dec,
      compute_dtype=config.train.compute_dtype)
  target = config.model.get("match_parameters_of", "sdict")
  if target and model_config.mixer != target:
    reference = ml_collections.ConfigDict(config.model.to_dict())
    reference.mixer = target
    model_config.width = model_lib.equal_parameter_width(
        lambda width: build(_with(model_config, width=width), False),
        model_lib.count_parameters(build(reference, False), config.data.image_size),
        config.data.image_size, multiple=model_config.num_heads * 2)
  return build(model_config)


def _with(model_config, **changes):
  changed = ml_collections.ConfigDict(model_config.to_dict())
  changed.update(changes)
  return changed


# The SDict filter's per-atom, per-channel parameters (SDictMixer's `gain` and
# `phase_bias`, [K, d]); see make_optimizer.
FILTER_PARAMS = ("gain", "phase_bias")
# Parameters that are not weights to shrink: atoms, filters, norms, biases.
_NO_DECAY = FILTER_PARAMS + ("omega", "vision_omega", "amp", "phase", "decay",
                             "skip", "scale", "bias")


def make_optimizer(optim, steps: int):
  """AdamW, linear warm-up then cosine decay, global-norm clipping.

  Weight decay applies to weight matrices only: not to atoms, filters, norms or
  biases. `optim.filter_lr_mult` multiplies the step of the SDict filters
  (FILTER_PARAMS): Adam moves every parameter by about the learning rate, but a
  filter entry reaches its output through one atom of one channel, where a Dense
  weight's output sums d such steps; at the same learning rate the filters
  (and so all token mixing) learn tens of times slower than everything around
  them (README, "Why SDict vision learned late"). 1 is the paper's plain AdamW.

  `optim.lr_mults`, ((regex, factor), ...), multiplies the step of every parameter
  whose path ('vision_0/mlp_in/kernel') fully matches a regex by the first match's
  factor (on top of filter_lr_mult): e.g. a trunk that steps slower than the heads
  reading it, so that its features stop drifting away from a read-out that has not
  yet found its signal (README, "Reading the answer out"). A factor of 0 freezes
  (weight decay included)."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, optim.lr, warmup_steps=min(optim.warmup_steps, steps // 2),
      decay_steps=steps,
      end_value=optim.lr * 0.01)
  def leaf_name(path):
    return getattr(path[-1], "key", str(path[-1]))
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim >= 2 and leaf_name(path) not in _NO_DECAY, params)
  filter_mult = optim.get("filter_lr_mult", 1.0)
  lr_mults = [(re.compile(pattern), factor)
              for pattern, factor in optim.get("lr_mults", ()) or ()]
  def scale(path, _):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    factor = next((f for pattern, f in lr_mults if pattern.fullmatch(name)), 1.0)
    return factor * (filter_mult if leaf_name(path) in FILTER_PARAMS else 1.0)
  step_scale = lambda params: jax.tree_util.tree_map_with_path(scale, params)
  return optax.chain(
      optax.clip_by_global_norm(optim.clip_norm),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2,
                  weight_decay=optim.weight_decay, mask=decay_mask),
      _scale_by_tree(step_scale)), schedule


def _scale_by_tree(scales_fn):
  """Multiplies each update by the matching leaf of scales_fn(params)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * s, updates, scales_fn(updates)), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def example_batch(config, batch_size: int, num_answers: int) -> dict:
  """A batch of zeros shaped like the training pipeline's (for init and tracing)."""
  return model_lib.dummy_batch(
      batch_size, config.data.image_size, config.data.max_text_len,
      config.data.max_caption_len, max(num_answers, 1),
      config.data.get("questions_per_image", 1),
      config.data.get("regions_per_image", 0))


def jit_train_step(model, optimizer, config, base_rng, state_shardings, mesh):
  """train_step jitted as the program runs it: state sharded and donated, batch
  split over the data axes, metrics replicated (compile_check and bench use it)."""
  return jax.jit(
      functools.partial(train_step, model=model, optimizer=optimizer, config=config,
                        base_rng=base_rng),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))


def make_train_data(config, bundle):
  """This process's share of the training stream (bench train times it too)."""
  return pipeline.make_dataset(
      bundle.source, tokenizer=bundle.tokenizer, answer_vocab=bundle.answer_vocab,
      image_size=config.data.image_size,
      batch_size=config.train.batch_size // jax.process_count(),
      max_text_len=config.data.max_text_len,
      max_caption_len=config.data.max_caption_len, seed=config.seed, train=True,
      image_transform=augment.make_image_transform(config.data),
      questions_per_image=config.data.get("questions_per_image", 1),
      regions_per_image=config.data.get("regions_per_image", 0),
      region_text=config.data.get("region_text", "refexps"),
      shard_index=jax.process_index(),
      shard_count=jax.process_count(), worker_count=config.data.worker_count)


def make_init_state(model, optimizer, example):
  """rng → a fresh train state {'params', 'opt_state', 'step'}.

  Pure, so it can be traced for shapes (jax.eval_shape) and jitted with the
  state's out_shardings to create every array already sharded.
  """
  def init_state(rng):
    params = model.init({"params": rng, "noise": rng}, example, train=False)["params"]
    return {"params": params, "opt_state": optimizer.init(params),
            "step": jnp.zeros((), jnp.int32)}
  return init_state


def train_step(state, batch, *, model, optimizer, config, base_rng):
  """One optimizer update; the batch is split into accum_steps micro-batches."""
  step = state["step"]
  accum = config.optim.accum_steps

  def loss_fn(params, micro_batch, rng):
    outputs, aux = model.apply({"params": params}, micro_batch, train=True,
                               rngs={"noise": rng}, mutable=["aux"])
    return losses.total_loss(outputs, micro_batch, aux.get("aux", {}), step,
                             config.loss)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  micro = jax.tree.map(
      lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)
  step_rng = jax.random.fold_in(base_rng, step)

  def accumulate(carry, inputs):
    index, micro_batch = inputs
    (_, parts), grads = grad_fn(state["params"], micro_batch,
                                jax.random.fold_in(step_rng, index))
    return jax.tree.map(jnp.add, carry, (grads, parts)), None

  parts_shape = jax.eval_shape(lambda: loss_fn(
      state["params"], jax.tree.map(lambda x: x[0], micro), step_rng)[1])
  zeros = (jax.tree.map(jnp.zeros_like, state["params"]),
           jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), parts_shape))
  (grads, parts), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accum), micro))
  grads, parts = jax.tree.map(lambda x: x / accum, (grads, parts))
  updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
  new_state = {"params": optax.apply_updates(state["params"], updates),
               "opt_state": opt_state, "step": step + 1}
  parts["grad_norm"] = optax.global_norm(grads)
  return new_state, parts


def main(argv):
  del argv
  config, workdir = _CONFIG.value, _WORKDIR.value
  if config is None or workdir is None:
    raise app.UsageError("Pass --config configs/<experiment>.py and --workdir <dir>.")

  # ---------------------------------------------------------------- Devices, checks
  distributed.initialize()
  try:
    config_checks.validate(config, num_devices=jax.device_count(),
                           num_processes=jax.process_count(),
                           num_local_devices=jax.local_device_count())
  except config_checks.ConfigError as error:
    sys.exit(f"ERROR: {error}")
  logging.info("%d processes, %d devices (%s)", jax.process_count(), jax.device_count(),
               jax.devices()[0].platform)
  mesh = sharding.make_mesh(config.mesh)
  jax.set_mesh(mesh)  # read by the model's sharding constraints and shard_maps

  # ---------------------------------------------------------------- Input
  bundle = sources.load(config.data, "train")
  train_data = make_train_data(config, bundle)
  train_iter = iter(train_data)

  # ---------------------------------------------------------------- Model, optimizer
  model = build_model(config, bundle)
  decode_model = build_model(config, bundle, decode=True)
  optimizer, schedule = make_optimizer(config.optim, config.train.steps)
  base_rng = jax.random.PRNGKey(config.seed)
  example = example_batch(config, config.train.batch_size // config.optim.accum_steps,
                          len(bundle.answer_vocab))

  init_state = make_init_state(model, optimizer, example)

  # ---------------------------------------------------------------- Sharding
  # Shapes first (nothing allocated), then a jitted init that creates every array
  # directly in its sharded layout.
  abstract_state = jax.eval_shape(init_state, base_rng)
  state_shardings = sharding.named_shardings(abstract_state, mesh)
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_state, state_shardings)
  num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(abstract_state["params"]))
  logging.info("Model %s: %s parameters", config.model.mixer, f"{num_params:,}")

  update = jit_train_step(model, optimizer, config, base_rng, state_shardings, mesh)

  # ---------------------------------------------------------------- Checkpoint load
  # The run's own newest checkpoint wins: a stopped fine-tuning run resumes from
  # its workdir, not from init_from again. init_from is read before anything is
  # written, so a bad one leaves both workdirs as they were.
  fresh_state = lambda: jax.jit(init_state, out_shardings=state_shardings)(base_rng)
  checkpoint_dir = os.path.join(workdir, "checkpoints")

  def start_from_init_from():
    try:
      return init_from.initial_state(config, abstract_state, fresh_state)[0]
    except init_from.InitFromError as error:
      sys.exit(f"ERROR: {error}")

  initial = None
  if config.get("init_from") and not checkpointing.steps_in(checkpoint_dir):
    initial = start_from_init_from()
  writer = metric_writers.MetricWriter(workdir)
  if jax.process_index() == 0:  # evaluate / predict rebuild the model from it
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json())
  checkpointer = checkpointing.Checkpointer(checkpoint_dir,
                                            keep=config.train.keep_checkpoints)
  state, start_step = checkpointer.restore_latest(abstract_state, train_iter)
  if state is None:
    if initial is None and config.get("init_from"):  # its own were all unreadable
      initial = start_from_init_from()
    state = initial if initial is not None else fresh_state()
    writer.write(0, {"num_params": num_params})
  else:
    logging.info("Resumed from step %d", start_step)
    print(f"Resuming from the checkpoint at step {start_step}.", flush=True)

  # ---------------------------------------------------------------- Evaluator
  evaluator = evaluators.Evaluator(model, decode_model, sources.load(
      config.data, "validation"), config, mesh)

  def evaluate(step):
    scores, _ = evaluator.run(state["params"])
    writer.write(step, scores)
    print(f"\nstep {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()
                                        if "/" not in k), flush=True)

  # ---------------------------------------------------------------- Loop
  preempted = []
  signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  pending = []  # (step, per-step losses on device) since the last finiteness check

  def check_finite():
    """Raises TrainingDiverged naming the first step whose loss is NaN/Inf."""
    values = jax.device_get([(s, p["loss"]) for s, p in pending])
    for s, loss in values:
      if not np.isfinite(loss):
        raise TrainingDiverged(
            f"Loss is {loss} at step {s}. Stopped; the last good checkpoint "
            f"(step {max(checkpointer.all_steps() or [0])}) is kept in {workdir}. "
            f"Lower config.optim.lr or raise config.optim.warmup_steps, then rerun "
            f"the same command to resume from that checkpoint.")

  bar = metric_writers.progress_bar(config.train.steps, start_step)
  interval_start = time.perf_counter()
  step = start_step
  try:
    while step < config.train.steps:
      batch = sharding.global_batch(next(train_iter), mesh)
      state, parts = update(state, batch)
      step += 1
      pending.append((step, parts))
      bar.update(1)
      if step % config.train.log_every == 0 or step == config.train.steps:
        check_finite()
        means = jax.tree.map(lambda *v: float(np.mean(v)),
                             *jax.device_get([p for _, p in pending]))
        elapsed = time.perf_counter() - interval_start
        means.update(steps_per_second=len(pending) / elapsed,
                     learning_rate=float(schedule(step)))
        writer.write(step, means)
        bar.set_postfix(loss=f"{means['loss']:.4f}")
        pending.clear()
        interval_start = time.perf_counter()
      if step % config.train.checkpoint_every == 0 or step == config.train.steps or \
          preempted:
        check_finite()
        checkpointer.save(step, state, train_iter, force=True)
      if step % config.train.eval_every == 0 or step == config.train.steps:
        evaluate(step)
        interval_start = time.perf_counter()
      if preempted:
        print(f"SIGTERM: saved step {step}; exiting. Rerun to resume.", flush=True)
        break
  except TrainingDiverged as error:
    bar.close()
    checkpointer.close()
    writer.close()
    sys.exit(f"ERROR: {error}")
  bar.close()
  checkpointer.close()
  writer.close()


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
